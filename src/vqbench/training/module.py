"""TokenizerModule: the LightningModule that trains and evaluates a Tokenizer.

Loss = reconstruction + sum_k weight_k * quantizer_loss_k, with the quantizer's unweighted terms named as in its
``QuantizerOutput.losses`` and the weights from the config (``quantizer.commitment_weight`` etc.).
Validation and test update the same metric objects: PSNR, SSIM (per image on [0, 1]), codebook usage, perplexity.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from vqbench.metrics import CodebookUsage, DistinctTokens, MeanPerImage, psnr, ssim
from vqbench.models.tokenizer import Tokenizer

RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def to_unit_range(images: Tensor) -> Tensor:
    """[-1, 1] model space -> [0, 1] metric space, clamped as the evaluation protocol prescribes."""
    return images.clamp(-1, 1).add(1).div(2)


class TokenizerModule(L.LightningModule):
    def __init__(
        self,
        tokenizer: Tokenizer,
        loss_weights: dict[str, float],
        reconstruction_loss: str = "mse",
        lr: float = 4e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        config_yaml: str | None = None,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.loss_weights = dict(loss_weights)
        self.reconstruction_loss = RECONSTRUCTION_LOSSES[reconstruction_loss]
        self.lr = lr
        self.betas = tuple(betas)
        self.weight_decay = weight_decay
        self.config_yaml = config_yaml
        self.metrics = torch.nn.ModuleDict({stage: self._make_metrics() for stage in ("val", "test")})

    def _make_metrics(self) -> torch.nn.ModuleDict:
        metrics = {"psnr": MeanPerImage(psnr), "ssim": MeanPerImage(ssim)}
        size = self.tokenizer.quantizer.codebook_size
        if size is not None:
            metrics["codebook"] = CodebookUsage(size)
        else:
            metrics["distinct_tokens"] = DistinctTokens()
        return torch.nn.ModuleDict(metrics)

    def forward(self, images: Tensor):
        return self.tokenizer(images)

    def training_step(self, images: Tensor, batch_idx: int) -> Tensor:
        reconstruction, quantized = self.tokenizer(images)
        terms = {"reconstruction": self.reconstruction_loss(reconstruction, images)}
        total = terms["reconstruction"]
        for name, value in quantized.losses.items():
            terms[name] = value
            total = total + self.loss_weights.get(name, 0.0) * value
        terms["total"] = total
        self.log_dict({f"train/loss/{k}": v.detach() for k, v in terms.items()}, prog_bar=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        return total

    def _evaluation_step(self, stage: str, images: Tensor) -> Tensor:
        reconstruction, quantized = self.tokenizer(images)
        metrics = self.metrics[stage]
        preds, target = to_unit_range(reconstruction), to_unit_range(images)
        metrics["psnr"].update(preds, target)
        metrics["ssim"].update(preds, target)
        if "codebook" in metrics:
            metrics["codebook"].update(quantized.indices)
        if "distinct_tokens" in metrics:
            metrics["distinct_tokens"].update(quantized.indices)
        return reconstruction

    def validation_step(self, images: Tensor, batch_idx: int) -> Tensor:
        return self._evaluation_step("val", images)

    def test_step(self, images: Tensor, batch_idx: int) -> Tensor:
        return self._evaluation_step("test", images)

    def _log_epoch_metrics(self, stage: str) -> None:
        values = {}
        for name, metric in self.metrics[stage].items():
            result = metric.compute()
            if isinstance(result, dict):
                values.update(result)
            else:
                values[name] = result
        self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()}, prog_bar=stage == "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics["val"].values():
            metric.reset()

    def on_test_epoch_start(self) -> None:
        for metric in self.metrics["test"].values():
            metric.reset()

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.tokenizer.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The resolved config travels as YAML text (plain data), so ``torch.load(weights_only=True)`` can read it.
        checkpoint["vqbench_config"] = self.config_yaml
