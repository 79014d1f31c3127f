"""The records a job leaves in its run directory: metrics.json when it finished, failed.json when it failed.

Both are written atomically (a temporary file in the same folder, then a rename), so a crash never leaves half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import vqbench
from vqbench.permissions import as_created

METRICS_FILE = "metrics.json"
#: {"kind", "error", "exit_status", "step", "overrides", "vqbench_version", "written_at"}
FAILED_FILE = "failed.json"
#: {"kind", "signal", "exit_status", "step", "checkpoint", "resume_command", "overrides", "vqbench_version",
#: "written_at"}: a signal ended the training after saving its checkpoint (training/interrupts.py)
INTERRUPTED_FILE = "interrupted.json"


def _write_record(path: Path, record: dict[str, Any]) -> Path:
    """Writes ``record`` (plus version and time) as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        **record,
        "vqbench_version": vqbench.__version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        as_created(fd)  # mkstemp's 0o600 would ignore the umask
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_metrics(directory: Path, record: dict[str, Any]) -> Path:
    """The finished job's record; its presence means the job finished."""
    return _write_record(directory / METRICS_FILE, record)


def write_failure(directory: Path, record: dict[str, Any]) -> Path:
    """The failed job's record (error, exit status, step, overrides)."""
    return _write_record(directory / FAILED_FILE, record)


def write_interruption(directory: Path, record: dict[str, Any]) -> Path:
    """The interrupted job's record (signal, step, checkpoint, the command that resumes it)."""
    return _write_record(directory / INTERRUPTED_FILE, record)


def remove_failure(directory: Path) -> None:
    """Forgets a previous failure or interruption of the job in ``directory`` (it is being retried); never touches
    its results."""
    for name in (FAILED_FILE, INTERRUPTED_FILE):
        with contextlib.suppress(OSError):  # an unwritable folder: the run reports that itself
            (directory / name).unlink(missing_ok=True)


def _failure_files(directory: Path) -> dict[Path, tuple[int, int]]:
    if not directory.is_dir():
        return {}
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.rglob(FAILED_FILE)}


def snapshot_failures(directory: Path) -> dict[Path, tuple[int, int]]:
    """The failed.json files under ``directory`` now (identity and modification time), to tell later new ones."""
    return _failure_files(directory)


def new_failures(directory: Path, before: dict[Path, tuple[int, int]]) -> list[tuple[Path, dict[str, Any]]]:
    """(job directory, record) of every failed.json under ``directory`` written since ``before`` was taken."""
    failures = []
    for path, identity in sorted(_failure_files(directory).items()):
        if before.get(path) != identity:
            try:
                failures.append((path.parent, read_metrics(path)))
            except (OSError, ValueError) as error:
                failures.append((path.parent, {"error": f"unreadable {FAILED_FILE}: {error}"}))
    return failures


def read_metrics(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def format_table(metrics: dict[str, float], title: str) -> str:
    width = max(len(k) for k in metrics) if metrics else 0
    lines = [title, "-" * max(len(title), width + 14)]
    lines += [f"{k:<{width}}  {v:>12.6f}" for k, v in metrics.items()]
    return "\n".join(lines)


def plain_floats(metrics: dict) -> dict[str, float]:
    """Lightning's logged values (tensors) as plain floats, for metrics.json."""
    return {k: float(v) for k, v in metrics.items()}


def print_unavailable(unavailable: dict[str, str]) -> None:
    """One console line per metric that was not computed, with the reason."""
    for name, reason in unavailable.items():
        print(f"{name}: not computed. {reason}")
