"""The metrics of the validation that ended a training, so that the run does not validate a second time.

A training validates every ``trainer.val_check_interval`` steps; when its last step is one of them, ``trainer.fit``
has already validated the final weights. ``FinalValidation`` keeps what the latest validation logged and at which
step; ``cli.train`` reuses it when that step is the last one and validates only otherwise.
"""

from __future__ import annotations

import lightning as L


class FinalValidation(L.Callback):
    """Records ``val/*`` of every validation run during ``fit`` and the ``global_step`` it followed."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.step = trainer.global_step
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def metrics_at(self, step: int) -> dict[str, float] | None:
        """The validation metrics of the weights after ``step`` steps, if a validation ran there."""
        return dict(self.metrics) if self.step == step and self.metrics else None
