"""What ``run.py`` does with a composed config: train (vqbench.train, the default) or evaluate (vqbench.evaluate,
``+eval=true ckpt=PATH``), holding the run folder (vqbench.folder_lock) and leaving a status file however it ends.

Failures: in a single run, a user error ends the process with one ``error:`` line and status 2. In a multirun, a job
that fails writes ``failed.json`` into its folder and returns, so that the other jobs still run;
``sweep_callbacks.FailedJobsSummary`` lists the failed jobs when the sweep ends and sets the exit status. Every failing
job, in either mode, leaves its ``failed.json`` (the error, the step, the overrides) for ``vqbench.report``. A signal
ends a training with a checkpoint and ``interrupted.json`` (training/interrupts.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from vqbench.console import tidy_console
from vqbench.errors import OutputError, VqbenchError
from vqbench.evaluate import evaluate
from vqbench.folder_lock import holding, refuse_training_folder
from vqbench.job_status import (
    FAILURE_STATUS,
    USER_ERROR_STATUS,
    is_multirun,
    output_dir,
    record_failure,
    task_overrides,
)
from vqbench.results import remove_failure
from vqbench.train import Progress, train
from vqbench.training.interrupts import TrainingInterrupted, report_interruption, resume_command

log = logging.getLogger("vqbench")


def run(cfg: DictConfig) -> dict[str, float] | None:
    """Entry point behind run.py (see the module docstring for what happens on failure). The job holds its folder
    (vqbench.jobs) while it runs; an evaluation never runs in a training's folder."""
    out = output_dir()
    multirun = is_multirun()
    tidy_console()  # each log line once (Hydra's handlers), no advertisements
    evaluation = bool(cfg.get("eval", False))
    with contextlib.ExitStack() as stack:
        try:
            if evaluation:
                refuse_training_folder(out)
            stack.enter_context(holding(out, "eval" if evaluation else "train"))
        except OutputError as error:  # another run's folder, or none that takes files: nothing is written there
            print(f"error: {error}" if not multirun else f"error: job {out} not run: {error}", file=sys.stderr)
            if multirun:
                return None
            raise SystemExit(USER_ERROR_STATUS) from None
        return _run_job(cfg, out, multirun)


def _run_job(cfg: DictConfig, out: Path, multirun: bool) -> dict[str, float] | None:
    remove_failure(out)  # a retried job starts without its previous failure or interruption
    progress = Progress()
    kind = "eval" if cfg.get("eval", False) else "train"
    try:
        if kind == "eval":
            return evaluate(cfg)
        with progress.signals:
            try:
                return train(cfg, progress)
            except SIGTERMException:  # Lightning's SystemExit after SIGTERM, in a trainer without SaveOnSignal
                progress.signals.raise_if_received(progress.step or 0)
                raise
    except TrainingInterrupted as interruption:
        checkpoint = out / "checkpoints" / "last.ckpt"
        needs_ckpt = cfg.get("ckpt") is not None or not cfg.get("skip_finished", False)
        command = resume_command(checkpoint, out, single_run=not multirun, needs_ckpt=needs_ckpt)
        if rank_zero_only.rank == 0:
            report_interruption(out, interruption, command, task_overrides())
        raise SystemExit(interruption.exit_status) from None
    except VqbenchError as error:
        message, status = str(error), USER_ERROR_STATUS
        progress.failed_step = getattr(error, "step", None)
    except torch.OutOfMemoryError as error:
        first_line = str(error).strip().splitlines()[0]
        message, status = (
            f"out of memory at step {progress.step}: {first_line}. Lower data.batch_size, or try "
            "trainer.precision=bf16-mixed",
            FAILURE_STATUS,
        )
    except Exception as error:
        if not multirun:
            record_failure(out, kind, progress.step, f"{type(error).__name__}: {error}", FAILURE_STATUS)
            raise  # a bug: its traceback is what a report needs
        log.error("job failed:\n%s", traceback.format_exc())
        message, status = f"{type(error).__name__}: {error}", FAILURE_STATUS
    log.error("%s", message)
    record_failure(out, kind, progress.step, message, status)
    if not multirun:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(status) from None
    print(f"error: job {out} failed: {message}", file=sys.stderr)
    return None
