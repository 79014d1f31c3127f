"""The metrics of the validation that ended a training, so that the run does not validate a second time.

A training validates every ``trainer.val_check_interval`` steps; when its last step is one of them, ``trainer.fit``
has already validated the final weights. ``FinalValidation`` keeps what the latest validation logged and at which
step; ``vqbench.train.train`` reuses it when that step is the last one and validates only otherwise.
"""

from __future__ import annotations

import lightning as L

#: What a validation reports: its ``val/*`` metrics and the codebook health of the training so far, which the
#: training module logs at each validation (``train/codebook_usage_recent``, ``train/dead_codes``, per level).
REPORTED = ("val/", "train/codebook_usage_recent", "train/dead_codes")


class FinalValidation(L.Callback):
    """Records what every validation run during ``fit`` reports (``REPORTED``) and the ``global_step`` it followed."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.step = trainer.global_step
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(REPORTED)}

    def metrics_at(self, step: int) -> dict[str, float] | None:
        """The validation metrics of the weights after ``step`` steps, if a validation ran there."""
        return dict(self.metrics) if self.step == step and self.metrics else None
