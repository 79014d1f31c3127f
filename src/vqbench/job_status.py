"""A Hydra job's identity and the status files it leaves in its folder.

What Hydra says about the running job (its output folder, its overrides, the group options it composed, the sweep it
belongs to), and the files that tell a reader and ``skip_finished`` how it ended: ``metrics.json`` is written last and
only by a job that finished (vqbench.results), ``failed.json`` by one that failed, ``interrupted.json`` by one that was
signalled (training/interrupts.py). The folder's lock is vqbench.folder_lock.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from vqbench.errors import OutputError
from vqbench.results import FAILED_FILE, METRICS_FILE, read_metrics, write_failure, write_metrics
from vqbench.training.hparams import compared_overrides, run_name, swept_keys

log = logging.getLogger("vqbench")

#: Exit status of a user error (bad config value, data, checkpoint, output folder), and of any other failure.
USER_ERROR_STATUS, FAILURE_STATUS = 2, 1


def is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


def job_choices() -> dict[str, str]:
    """The config group options this job composed (data, quantizer, experiment, ...), for reports to match rows."""
    choices = HydraConfig.get().runtime.choices
    return {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def compared_job_overrides() -> list[str]:
    """The overrides this job is compared by: the swept ones in a multirun, else all (training/hparams.py)."""
    swept = swept_keys(Path(HydraConfig.get().sweep.dir)) if is_multirun() else None
    return compared_overrides(task_overrides(), swept)


def sweep_run(compared: list[str]) -> tuple[Path, str] | None:
    """(sweep folder, run name) of a multirun job, for its TensorBoard run; None for a single run."""
    if not is_multirun():
        return None
    sweep, out = Path(HydraConfig.get().sweep.dir).resolve(), output_dir().resolve()
    # A job folder outside its sweep folder (a custom hydra.sweep.subdir) keeps its curves in its own folder.
    return (sweep if out.is_relative_to(sweep) else out), run_name(compared)


def finished_results(cfg: DictConfig, out: Path) -> dict | None:
    """The metrics of the job this directory already finished (with ``skip_finished=true``), or None to run it.

    A directory holding finished results is never written over: those of another job (other overrides), or any with
    ``skip_finished=false``, are refused.
    """
    path = out / METRICS_FILE
    if not path.is_file():
        return None
    try:
        record = read_metrics(path)
    except (OSError, ValueError) as error:
        raise OutputError(f"{path} cannot be read ({error}); move it away or choose another output folder") from None
    if not cfg.get("skip_finished", False):
        raise OutputError(
            f"{out} already holds the finished results of a run ({METRICS_FILE}); they are kept. Choose another "
            "output folder (hydra.run.dir=... / hydra.sweep.dir=...), or pass skip_finished=true to skip it"
        )
    if record.get("overrides") != task_overrides():
        raise OutputError(
            f"{out} holds the finished results of another job (overrides {record.get('overrides')}); they are kept. "
            "Give this sweep its own directory with hydra.sweep.dir=..."
        )
    return record


def check_writable(out: Path, key: str = "hydra.run.dir") -> None:
    """The output folder must take files before any work is done (its checkpoints and metrics.json)."""
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(
            f"cannot write into the output folder {out} ({error.strerror or error}); choose a writable one with "
            f"{key}=..."
        ) from None


def write_results(out: Path, record: dict) -> None:
    try:
        write_metrics(out, record)
    except OSError as error:
        raise OutputError(
            f"cannot write {out / METRICS_FILE} ({error.strerror or error}); the checkpoint {out}/checkpoints/"
            "last.ckpt is complete. Free disk space and evaluate it with +eval=true ckpt=..."
        ) from None


def record_failure(out: Path, kind: str, step: int | None, message: str, status: int) -> None:
    """Writes failed.json (rank 0 only): what failed, the error, the exit status, the step, the overrides."""
    if rank_zero_only.rank != 0:
        return
    record = {"kind": kind, "error": message, "exit_status": status, "step": step, "overrides": task_overrides()}
    try:
        write_failure(out, record)
    except OSError as error:
        log.warning("could not write %s into %s: %s", FAILED_FILE, out, error)
