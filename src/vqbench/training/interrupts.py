"""SIGTERM, SIGUSR1 and SIGINT end a training at the next step boundary, with a checkpoint and a status file.

SLURM sends SIGTERM at the time limit, on pre-emption and on ``scancel``, SIGUSR1 ahead of the limit with
``#SBATCH --signal=USR1@SECONDS``; Ctrl-C sends SIGINT. The handler only records the signal. The training then:

1. finishes the step it is in (a running validation is abandoned at its next batch);
2. writes ``checkpoints/last.ckpt`` of that step, atomically (AtomicCheckpointIO), after the non-finite check; a
   validation that was abandoned is not in it (the checkpoint is the state from before the validation started,
   as after any validation, so the resumed run continues with the next training step);
3. writes ``interrupted.json`` (the signal, the step, the time, the command that resumes the run) and no
   ``metrics.json``, so that the job never looks finished;
4. under SLURM, for SIGUSR1 only, requeues its job (``scontrol requeue $SLURM_JOB_ID``; not under submitit, which
   requeues its jobs itself);
5. exits with status 128 + the signal's number (143 SIGTERM, 138 SIGUSR1, 130 SIGINT).

Further signals while it does so are ignored (``srun`` and the batch shell both forward SIGTERM), so they cannot cut
the checkpoint short. Lightning's own handlers (its SLURM auto-requeue and SIGTERM notifier) are not used: its SLURM
requeue handler is installed only where no SIGUSR1 handler exists, and its SIGTERM notifier is replaced by these at
the start of the training and of each validation (SaveOnSignal).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.util  # noqa: F401  (registers its exit handler first: ours below runs before it)
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.seed import pl_worker_init_function

from vqbench.results import INTERRUPTED_FILE, write_interruption
from vqbench.training.checkpoints import LastCheckpoint

log = logging.getLogger("vqbench")

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class TrainingInterrupted(Exception):
    """A signal ended the training at a step boundary; its checkpoint is written."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        self.exit_status = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} at step {step}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class SignalFlag:
    """Context manager: while inside, SIGNALS only record the first signal received (``received``)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalFlag:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def take_back(self) -> None:
        """Installs the handlers again over Lightning's: ``trainer.fit`` / ``validate`` wrap an existing SIGTERM
        handler in their own, which makes the loops raise SystemExit (status 0) at an epoch's end or after a
        validation batch, before a checkpoint. Lightning restores the handlers it found (these) when it ends."""
        if self._previous:
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            message = f"received {name}: saving a checkpoint at the end of this step, then exiting\n"
        else:
            message = f"received {name} again: ignored, the checkpoint is being written\n"
        os.write(2, message.encode())  # not print(): a handler may run in the middle of another write to stderr

    def raise_if_received(self, step: int) -> None:
        if self.received is not None:
            raise TrainingInterrupted(self.received, step)


class SaveOnSignal(L.Callback):
    """Ends the fit after a signal (see the module docstring). Must come after LastCheckpoint in the callbacks."""

    def __init__(self, flag: SignalFlag, last: LastCheckpoint):
        self.flag = flag
        self.last = last
        self.snapshot: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.flag.take_back()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.flag.received is not None:
            self.last._save(trainer)
            self.flag.raise_if_received(trainer.global_step)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        # The state a signal during this validation saves: references to the tensors (a validation changes none),
        # copies of the loops' counters from before the validation.
        self.flag.take_back()
        self.snapshot = None
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.snapshot = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            log.info("validating after step %d", trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._abandon_validation(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._abandon_validation(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        self.snapshot = None  # LastCheckpoint.on_validation_end has written this step's checkpoint
        if self.flag.received is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.last._save(trainer)
            self.flag.raise_if_received(trainer.global_step)

    def _abandon_validation(self, trainer: L.Trainer) -> None:
        if self.flag.received is None:
            return
        if self.snapshot is not None:  # a validation inside the fit; after the fit, last.ckpt is the final step's
            log.warning("validation after step %d abandoned", trainer.global_step)
            self.last._save(trainer, snapshot=self.snapshot)
        self.flag.raise_if_received(trainer.global_step)


def worker_ignores_stop_signals(worker_id: int) -> None:
    """A DataLoader's ``worker_init_fn``: its workers ignore SIGNALS, which SLURM sends to every process of the job
    (and Ctrl-C to the whole process group); the main process stops them when it ends. A worker killed by one
    would make the main process fail at once (torch raises when a worker dies) instead of saving. Then Lightning's
    worker seeding, which Lightning adds only to loaders without a ``worker_init_fn``."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)


def _kill_daemonic_children() -> None:
    """At interpreter exit, multiprocessing terminates its daemonic children (a DataLoader's workers) with SIGTERM and
    waits for them; workers that ignore SIGTERM (``worker_ignores_stop_signals``) would make it wait forever, e.g. for
    a loader whose iterator was never closed. atexit runs handlers last-registered first, so this one, registered
    after multiprocessing's, kills them before it waits."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


atexit.register(_kill_daemonic_children)


def resume_command(checkpoint: Path, out: Path, single_run: bool, needs_ckpt: bool) -> str:
    """The command that continues the interrupted run: the same command, which resumes from its own checkpoint;
    in a single run, pinned to this run's folder (a default ``hydra.run.dir`` holds the start time) and, where the
    same command would not resume (``skip_finished=false``, or ``ckpt=`` of another run), with ``ckpt=`` of it."""
    argv = list(sys.argv)
    if single_run:
        if needs_ckpt:
            argv = [a for a in argv if not a.lstrip("+~").startswith("ckpt=")] + [f"ckpt={checkpoint}"]
        if not any(a.lstrip("+~").startswith("hydra.run.dir=") for a in argv):
            argv.append(f"hydra.run.dir={out}")
    return shlex.join(["python", *argv])


def requeue_under_slurm(interruption: TrainingInterrupted) -> str | None:
    """After SIGUSR1 under SLURM (outside submitit): ``scontrol requeue $SLURM_JOB_ID``. Returns what happened."""
    job = os.environ.get("SLURM_JOB_ID")
    if interruption.signum != signal.SIGUSR1 or not job or os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol requeue {job} failed: {error}"
    if result.returncode != 0:
        return f"scontrol requeue {job} failed: {(result.stderr or result.stdout).strip()}"
    return f"requeued SLURM job {job}"


def report_interruption(out: Path, interruption: TrainingInterrupted, command: str, overrides: list[str]) -> None:
    """interrupted.json, one line on stderr, and (SIGUSR1 under SLURM) the requeue."""
    checkpoint = out / "checkpoints" / "last.ckpt"
    record = {
        "kind": "train",
        "signal": interruption.signal_name,
        "exit_status": interruption.exit_status,
        "step": interruption.step,
        "checkpoint": str(checkpoint),
        "resume_command": command,
        "overrides": overrides,
    }
    requeued = requeue_under_slurm(interruption)
    if requeued:
        record["slurm"] = requeued
    write_interruption(out, record)
    log.warning("interrupted by %s at step %s; %s written", interruption.signal_name, interruption.step, checkpoint)
    print(
        f"interrupted by {interruption.signal_name} at step {interruption.step}: {checkpoint} and "
        f"{out / INTERRUPTED_FILE} written" + (f"; {requeued}" if requeued else "") + f". Resume with: {command}",
        file=sys.stderr,
    )
