"""The metrics.json file every training and evaluation writes into its run directory."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import vqbench

METRICS_FILE = "metrics.json"


def write_metrics(directory: Path, record: dict[str, Any]) -> Path:
    """Writes ``record`` (plus version and time) atomically: a crash never leaves a half-written metrics.json."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        **record,
        "vqbench_version": vqbench.__version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = directory / METRICS_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".metrics-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_metrics(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def format_table(metrics: dict[str, float], title: str) -> str:
    width = max(len(k) for k in metrics) if metrics else 0
    lines = [title, "-" * max(len(title), width + 14)]
    lines += [f"{k:<{width}}  {v:>12.6f}" for k, v in metrics.items()]
    return "\n".join(lines)
