"""A progress bar in training steps: trainings are set in steps (``trainer.max_steps``), so the bar counts steps
over the whole run, with the step rate and the time left, instead of restarting at every epoch."""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with one training bar from ``global_step`` to ``max_steps`` (the run's total when it is
    set in epochs: ``estimated_stepping_batches``). tqdm prints steps done/total, elapsed<left and steps/s."""

    def _total_steps(self, trainer: L.Trainer) -> int | None:
        if trainer.max_steps > 0:
            return trainer.max_steps
        total = trainer.estimated_stepping_batches
        return int(total) if total != float("inf") else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar = Tqdm(
            desc="Training (steps)",
            total=self._total_steps(trainer),
            initial=trainer.global_step,  # a resumed run: the rate and time left count this process's steps
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        pass  # the bar spans every epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total or 0):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: a run name, not a number to watch
        return metrics
