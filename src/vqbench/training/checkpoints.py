"""``checkpoints/last.ckpt``: written atomically, after every validation and every ``checkpoint.every_n_steps`` steps.

A pre-emptible node can be killed at any instant, including in the middle of writing a checkpoint. The file is
therefore written under a temporary name in the same folder, flushed to disk, and renamed over ``last.ckpt``
(``os.replace`` is atomic on POSIX file systems): a reader sees the previous checkpoint or the new one, never half of
one. (Lightning's own writer stages the file in the system temp folder and moves it, which is a copy, not an atomic
rename, when that folder is on another file system.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vqbench.errors import OutputError


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into ``.NAME.partial`` beside the target, fsync, then ``os.replace``.

    A failed write (disk full, quota, permissions) removes the partial file, keeps the previous checkpoint and
    raises OutputError naming the file. A partial file left by a killed process is overwritten by the next save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except (OSError, RuntimeError) as error:
            # torch's zip writer reports a failed write (ENOSPC, EFBIG, EDQUOT) as a RuntimeError raised while it
            # handles the OSError: find the OSError in the chain, or let the RuntimeError (not a write failure) be.
            cause = _os_error(error)
            if cause is None:
                raise
            with contextlib.suppress(OSError):
                partial.unlink()
            raise OutputError(
                f"cannot write the checkpoint {target} ({cause.strerror or cause}); the previous checkpoint is kept. "
                "Free disk space or choose a writable output folder (hydra.run.dir=... / hydra.sweep.dir=...)"
            ) from None


def _os_error(error: BaseException | None) -> OSError | None:
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


class LastCheckpoint(L.Callback):
    """Writes ``path`` after each validation of the fit, every ``every_n_steps`` training steps (None: only after
    validations) and after the last step, never twice for the same step. All are written from inside the training
    loop: a checkpoint written after ``fit`` returns would record the epoch as finished and lose the loader's
    position, so continuing it with a larger ``trainer.max_steps`` would not see the batches the longer run sees.
    Lightning saves the loops' progress, optimizers, schedulers, the
    module's parameters and buffers and the train loader's position with it, so any of these checkpoints resumes
    the run exactly. Every checkpoint the trainer writes also records ``job_overrides``, so that a re-run sweep
    recognises its own job's checkpoint."""

    def __init__(
        self,
        path: Path,
        every_n_steps: int | None,
        job_overrides: list[str],
        before_save: Callable[[L.Trainer], None] | None = None,
    ):
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.job_overrides = list(job_overrides)
        self.saved_step: int | None = None
        #: Called before every write; raises to keep the previous checkpoint (NonFiniteGuard.check_before_save)
        self.before_save = before_save

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["vqbench_overrides"] = self.job_overrides

    def _save(self, trainer: L.Trainer, snapshot: dict[str, Any] | None = None) -> None:
        """Writes this step's checkpoint, unless written already; ``snapshot``: a checkpoint dict taken earlier in
        the same step (SaveOnSignal's, from before an abandoned validation) instead of the trainer's state now."""
        if trainer.sanity_checking or self.saved_step == trainer.global_step:
            return
        if self.before_save is not None:
            self.before_save(trainer)
        if snapshot is None:
            trainer.save_checkpoint(self.path, weights_only=False)
        else:
            trainer.strategy.save_checkpoint(snapshot, self.path)
            trainer.strategy.barrier("LastCheckpoint._save")
        self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (self.every_n_steps and trainer.global_step % self.every_n_steps == 0) or _fit_ends_after(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)


def _fit_ends_after(trainer: L.Trainer) -> bool:
    """Whether the batch just trained is the fit's last (``trainer.max_steps`` or ``trainer.max_epochs`` reached)."""
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
