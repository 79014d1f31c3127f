"""TokenizerModule: the LightningModule that trains and evaluates a Tokenizer, with or without a discriminator.

Generator objective (SPEC §4):

    L = w_rec · L_rec + w_p · LPIPS + Σ_k w_k · L_quantizer,k  [+ w_adv · λ · L_G   once step ≥ start_step]

with λ the adaptive weight (taming) or 1 (LlamaGen). The discriminator minimises the hinge or non-saturating loss
(+ optional LeCam term). Optimisation is manual (Lightning's documented GAN pattern): per batch one generator step
and, once the adversarial part has started, one discriminator step. Only the generator step is counted, so
``global_step`` counts batches and ``trainer.max_steps`` means batches, as in the taming and LlamaGen recipes.
Before ``start_step`` neither the discriminator update nor the generator's adversarial term runs.

Validation and test update the same kinds of metric: PSNR, SSIM, L1 (per image on [0, 1]), codebook usage,
perplexity, effective codebook size. Evaluation adds its own (LPIPS, rFID) with ``add_test_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from vqbench.losses import adaptive_weight, discriminator_loss, generator_loss, last_layer_weight, lecam_regularizer
from vqbench.metrics import CodebookUsage, DistinctTokens, MeanPerImage, l1, psnr, ssim
from vqbench.models.tokenizer import Tokenizer
from vqbench.training.ema import WeightEMA

RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def to_unit_range(images: Tensor) -> Tensor:
    """[-1, 1] model space -> [0, 1] metric space, clamped as the evaluation protocol prescribes."""
    return images.clamp(-1, 1).add(1).div(2)


@dataclass(frozen=True)
class AdversarialSettings:
    """The GAN part of a recipe (``loss.adversarial.*``)."""

    loss: str = "hinge"  # or non_saturating
    weight: float = 0.8
    adaptive: bool = True
    start_step: int = 0
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam for the generator (and the discriminator), gradient clipping, and the learning-rate schedule."""

    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    schedule: str = "constant"  # or linear: linear warmup over warmup_fraction of max_steps, then linear decay to 0
    warmup_fraction: float = 0.0
    fused: bool = False  # one fused Adam kernel per step; False keeps PyTorch's default (foreach on CUDA)


def lr_factor(step: int, total_steps: int, settings: OptimizerSettings) -> float:
    """The learning-rate multiplier at ``step`` (constant, or linear warmup then linear decay to 0)."""
    if settings.schedule == "constant" or total_steps <= 0:
        return 1.0
    warmup = int(settings.warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


class TokenizerModule(L.LightningModule):
    def __init__(
        self,
        tokenizer: Tokenizer,
        loss_weights: dict[str, float],
        reconstruction_loss: str = "mse",
        reconstruction_weight: float = 1.0,
        perceptual: nn.Module | None = None,
        perceptual_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        adversarial: AdversarialSettings | None = None,
        optimizer: OptimizerSettings | None = None,
        ema_decay: float | None = None,
        config_yaml: str | None = None,
        usage_window: int | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.tokenizer = tokenizer
        self.loss_weights = dict(loss_weights)
        self.reconstruction_loss = RECONSTRUCTION_LOSSES[reconstruction_loss]
        self.reconstruction_weight = reconstruction_weight
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight
        self.discriminator = discriminator
        self.adversarial = adversarial or AdversarialSettings()
        self.optimizer_settings = optimizer or OptimizerSettings()
        self.ema = WeightEMA(tokenizer, ema_decay) if ema_decay else None
        self.config_yaml = config_yaml
        self.usage_window = usage_window
        self.metrics = nn.ModuleDict({stage: self._make_metrics() for stage in ("val", "test")})
        # LeCam's EMAs of the mean real and fake logits
        self.register_buffer("lecam_real", torch.zeros(()))
        self.register_buffer("lecam_fake", torch.zeros(()))

    def _make_metrics(self) -> nn.ModuleDict:
        metrics = {"psnr": MeanPerImage(psnr), "ssim": MeanPerImage(ssim), "l1": MeanPerImage(l1)}
        size = self.tokenizer.quantizer.codebook_size
        if size is not None:
            metrics["codebook"] = CodebookUsage(size, window=self.usage_window)
        else:
            metrics["distinct_tokens"] = DistinctTokens()
        return nn.ModuleDict(metrics)

    def add_test_metrics(self, metrics: dict[str, Metric]) -> None:
        """Evaluation-only metrics (LPIPS, rFID): each is updated with (reconstruction, original) in [0, 1]."""
        for name, metric in metrics.items():
            self.metrics["test"][name] = metric

    def forward(self, images: Tensor):
        return self.tokenizer(images)

    # --- training ------------------------------------------------------------------------------------------------

    def adversarial_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.adversarial.start_step

    def generator_loss(self, images: Tensor, step: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(total generator loss, reconstruction, named terms for logging)."""
        reconstruction, quantized = self.tokenizer(images)
        terms = {"reconstruction": self.reconstruction_loss(reconstruction, images)}
        nll = self.reconstruction_weight * terms["reconstruction"]
        if self.perceptual is not None and self.perceptual_weight > 0:
            terms["perceptual"] = self.perceptual(reconstruction, images)
            nll = nll + self.perceptual_weight * terms["perceptual"]
        total = nll
        for name, value in quantized.losses.items():
            terms[name] = value
            total = total + self.loss_weights.get(name, 0.0) * value
        if self.adversarial_active(step):
            g_loss = generator_loss(self.adversarial.loss, self.discriminator(reconstruction))
            if self.adversarial.adaptive:
                weight = adaptive_weight(nll, g_loss, last_layer_weight(self.tokenizer.decoder))
            else:
                weight = torch.ones((), device=images.device)
            terms["generator_adversarial"] = g_loss
            terms["adaptive_weight"] = weight
            total = total + self.adversarial.weight * weight * g_loss
        terms["total"] = total
        return total, reconstruction, terms

    def discriminator_step_loss(self, images: Tensor, reconstruction: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits_real = self.discriminator(images)
        logits_fake = self.discriminator(reconstruction.detach())
        loss = discriminator_loss(self.adversarial.loss, logits_real, logits_fake)
        terms = {"logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}
        if self.adversarial.lecam_weight > 0:
            decay = self.adversarial.lecam_decay
            with torch.no_grad():
                self.lecam_real.lerp_(terms["logits_real"].float(), 1 - decay)
                self.lecam_fake.lerp_(terms["logits_fake"].float(), 1 - decay)
            terms["lecam"] = lecam_regularizer(logits_real, logits_fake, self.lecam_real, self.lecam_fake)
            loss = loss + self.adversarial.lecam_weight * terms["lecam"]
        terms["loss"] = loss
        return loss, terms

    def _clip(self, optimizer) -> None:
        if self.optimizer_settings.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.optimizer_settings.grad_clip, gradient_clip_algorithm="norm"
            )

    def training_step(self, images: Tensor, batch_idx: int) -> Tensor:
        optimizers = self.optimizers()
        g_opt, d_opt = (optimizers[0], optimizers[1]) if isinstance(optimizers, list) else (optimizers, None)
        step = self.global_step
        adversarial = self.adversarial_active(step)

        if d_opt is not None:
            self.toggle_optimizer(g_opt)  # no gradients into the discriminator during the generator step
        total, reconstruction, terms = self.generator_loss(images, step)
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        self._clip(g_opt)
        g_opt.step()
        if d_opt is not None:
            self.untoggle_optimizer(g_opt)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        if self.ema is not None:
            self.ema.update(self.tokenizer)
        log = {f"train/loss/{k}": v.detach() for k, v in terms.items() if k != "adaptive_weight"}
        if "adaptive_weight" in terms:
            log["train/adaptive_weight"] = terms["adaptive_weight"]

        if adversarial:
            self.toggle_optimizer(d_opt)
            d_loss, d_terms = self.discriminator_step_loss(images, reconstruction)
            d_opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(d_opt)
            # Stepped through the strategy rather than LightningOptimizer.step, which would count a second step
            # per batch: global_step must count batches (one G and one D update each).
            self.trainer.strategy.optimizer_step(d_opt.optimizer, closure=_no_closure)
            self.untoggle_optimizer(d_opt)
            log.update({f"train/disc/{k}": v.detach() for k, v in d_terms.items()})
        self.log_dict(log, prog_bar=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        return total.detach()

    def configure_optimizers(self):
        s = self.optimizer_settings
        # fused=False would also switch off PyTorch's default foreach kernels, so "not fused" is passed as None
        adam = {"lr": s.lr, "betas": tuple(s.betas), "weight_decay": s.weight_decay, "fused": s.fused or None}
        g_opt = torch.optim.Adam(self.tokenizer.parameters(), **adam)
        optimizers = [g_opt]
        if self.discriminator is not None:
            optimizers.append(torch.optim.Adam(self.discriminator.parameters(), **adam))
        if s.schedule == "constant":
            return optimizers
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(g_opt, lambda step: lr_factor(step, total, s))
        return optimizers, [scheduler]

    # --- evaluation ----------------------------------------------------------------------------------------------

    def _evaluation_step(self, stage: str, images: Tensor) -> Tensor:
        reconstruction, quantized = self.tokenizer(images)
        metrics = self.metrics[stage]
        preds, target = to_unit_range(reconstruction.float()), to_unit_range(images.float())
        for name, metric in metrics.items():
            if name in ("codebook", "distinct_tokens"):
                metric.update(quantized.indices)
            else:
                metric.update(preds, target)
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

    # --- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The resolved config travels as YAML text (plain data), so ``torch.load(weights_only=True)`` can read it.
        checkpoint["vqbench_config"] = self.config_yaml
        # The frozen LPIPS network is pretrained data, not training state: 58 MB less per checkpoint.
        for key in [k for k in checkpoint["state_dict"] if k.startswith("perceptual.")]:
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming: put the (unsaved) frozen LPIPS weights back so that the strict state-dict load succeeds.
        checkpoint["state_dict"].update({k: v for k, v in self.state_dict().items() if k.startswith("perceptual.")})


def _no_closure() -> None:
    return None
