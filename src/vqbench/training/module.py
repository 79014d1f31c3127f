"""TokenizerModule: the LightningModule that trains and evaluates a Tokenizer, with or without a discriminator.

Generator objective:

    L = w_rec · L_rec + w_p · LPIPS + Σ_k w_k · L_quantizer,k  [+ w_adv · λ · L_G   once step ≥ start_step]

with λ the adaptive weight (taming) or 1 (LlamaGen). The discriminator minimises the hinge or non-saturating loss
(+ optional LeCam term) on the reconstruction of the same forward pass. Optimisation is manual (Lightning's
documented GAN pattern): per batch one generator step and, from ``discriminator_start_step`` on, one discriminator
step. By default the discriminator scores the reconstruction of the generator's forward pass (computed before the
generator's update; visual-tokenizer-pytorch at 351d29d); ``recompute_reconstruction`` makes it score a reconstruction
recomputed after that update, as the same repository's ``train_vqgan.py`` did at 07352b4 (``run_step_d``). Only the
generator step is counted, so ``global_step`` counts batches and ``trainer.max_steps`` means batches,
as in the taming and LlamaGen recipes. The two gates are separate: the generator's adversarial term starts at
``start_step``; the discriminator trains from ``discriminator_start_step`` (taming: the same step;
xyfJASON/visual-tokenizer-pytorch ``train_vqgan.py``: every step from step 0, so that the generator meets a trained
discriminator).

Validation and test update the same kinds of metric: PSNR, SSIM, L1 (per image on [0, 1]), codebook usage,
perplexity, effective codebook size. Evaluation adds its own (LPIPS, rFID, and with ``metrics.loss_terms`` the
training objective's terms ``loss/*``) with ``add_test_metrics``.

Images live in the model's space, (x - pixel_mean) / pixel_std with x in [0, 1] ([-1, 1] by default); metrics see
them mapped back to [0, 1] and clamped (``to_unit_range``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torchmetrics import Metric

from vqbench.errors import ConfigError
from vqbench.losses import adaptive_weight, discriminator_loss, generator_loss, last_layer_weight, lecam_regularizer
from vqbench.metrics import CodebookUsage, DistinctTokens, MeanPerImage, l1, psnr, ssim
from vqbench.metrics.codebook_health import RecentCodeUsage
from vqbench.models.tokenizer import Tokenizer
from vqbench.quantizers.ema import EMAVectorQuantizer
from vqbench.stored_config import CHECKPOINT_FORMAT
from vqbench.training.ema import WeightEMA
from vqbench.training.nonfinite import all_finite

RECONSTRUCTION_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodebookHealthSettings:
    """``metrics.health_steps`` (N: the window of the training-time usage and dead codes) and the collapse warning:
    logged at a validation when usage over the last N steps is below ``usage_warning_fraction`` (0: never) at step
    ``usage_warning_after`` or later."""

    steps: int = 1000
    warning_fraction: float = 0.1
    warning_after: int = 1000


def to_unit_range(images: Tensor, mean: Tensor | float = 0.5, std: Tensor | float = 0.5) -> Tensor:
    """Model space -> [0, 1] metric space (x * std + mean; [-1, 1] -> [0, 1] by default), clamped as the evaluation
    protocol prescribes."""
    return (images * std + mean).clamp(0, 1)


def per_image_loss(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The reconstruction loss of ``kind`` per image (B values) rather than over the batch."""
    return lambda preds, target: RECONSTRUCTION_LOSSES[kind](preds, target, reduction="none").flatten(1).mean(1)


@dataclass(frozen=True)
class AdversarialSettings:
    """The GAN part of a recipe (``loss.adversarial.*``)."""

    loss: str = "hinge"  # or non_saturating
    weight: float = 0.8
    adaptive: bool = True
    start_step: int = 0  # the generator's adversarial term from this step on
    discriminator_start_step: int = 0  # discriminator updates from this step on
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999
    # the discriminator step scores a reconstruction recomputed after the generator's update (visual-tokenizer-pytorch
    # 07352b4 train_vqgan.py run_step_d) instead of the one the generator step made before it
    recompute_reconstruction: bool = False


@dataclass(frozen=True)
class OptimizerSettings:
    """Adam or AdamW for the generator (and the discriminator), gradient clipping, and the learning-rate schedule.

    ``weight_decay`` is Adam's L2 term added to the gradient with ``name=adam`` (torch.optim.Adam) and the decoupled
    decay w <- w - lr * wd * w of Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv 1711.05101, with
    ``name=adamw`` (torch.optim.AdamW); either way it applies to every parameter of both networks (visual-tokenizer-
    pytorch 07352b4 ``train_vqgan.py`` hands ``model.parameters()`` and ``disc.parameters()`` to AdamW whole).
    """

    name: str = "adam"  # or adamw
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    # see lr_factor; exponential: lr * gamma^epoch (torch's ExponentialLR, stepped after every training epoch)
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    schedule_steps: int | None = None  # the schedule's length T; None: trainer.max_steps
    gamma: float = 1.0
    fused: bool = False  # one fused Adam kernel per step (performance.fused_adam); False: PyTorch's default


SCHEDULES = ("constant", "linear", "annealing_linear", "exponential")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def lr_factor(step: int, total_steps: int, settings: OptimizerSettings) -> float:
    """The learning-rate multiplier for the optimizer step after ``step`` completed ones, T = ``schedule_steps``
    or ``total_steps``:

    - ``constant``: 1.
    - ``linear``: (step + 1) / W during the warmup W = floor(warmup_fraction * T), then (T - step) / (T - W).
    - ``annealing_linear``: Megatron-LM / CogView's AnnealingLR with decay_style linear, kept by FSQ-pytorch and
      Doraemonzzz/vector-quantize (``scheduler.py``): step / W for step <= W = warmup_fraction * T (so the first
      step has lr 0), then (T - (step - W)) / T, which reaches 0 only at T + W (floored at 0).
    """
    total_steps = settings.schedule_steps or total_steps
    if settings.schedule == "constant" or total_steps <= 0:
        return 1.0
    if settings.schedule == "annealing_linear":
        warmup = settings.warmup_fraction * total_steps
        if warmup > 0 and step <= warmup:
            return step / warmup
        return max(0.0, (total_steps - (step - warmup)) / total_steps)
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
        ssim_window: str = "uniform",
        health: CodebookHealthSettings | None = None,
        pixel_mean: float | list[float] = 0.5,
        pixel_std: float | list[float] = 0.5,
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
        self.ssim_window = ssim_window
        self.health = health or CodebookHealthSettings()
        size = tokenizer.quantizer.codebook_size
        # which codes the last health.steps training steps chose (on the device; read at validation only)
        self.recent_usage = RecentCodeUsage(size, levels=self.levels) if size is not None else None
        self.register_buffer("pixel_mean", _per_channel(pixel_mean), persistent=False)
        self.register_buffer("pixel_std", _per_channel(pixel_std), persistent=False)
        self.metrics = nn.ModuleDict({stage: self._make_metrics() for stage in ("val", "test")})
        # LeCam's EMAs of the mean real and fake logits
        self.register_buffer("lecam_real", torch.zeros(()))
        self.register_buffer("lecam_fake", torch.zeros(()))

    def _make_metrics(self) -> nn.ModuleDict:
        ssim_fn = partial(ssim, window=self.ssim_window)
        metrics = {"psnr": MeanPerImage(psnr), "ssim": MeanPerImage(ssim_fn), "l1": MeanPerImage(l1)}
        size = self.tokenizer.quantizer.codebook_size
        if size is not None:
            metrics["codebook"] = CodebookUsage(size, window=self.usage_window, levels=self.levels)
        else:
            metrics["distinct_tokens"] = DistinctTokens()
        return nn.ModuleDict(metrics)

    @property
    def levels(self) -> int:
        """The quantizer's levels of indices: a residual VQ's stages, 1 otherwise."""
        return int(getattr(self.tokenizer.quantizer, "num_stages", 1))

    def to_unit_range(self, images: Tensor) -> Tensor:
        """This module's pixel space -> [0, 1], clamped (``to_unit_range`` with its data's mean and std)."""
        return to_unit_range(images, self.pixel_mean, self.pixel_std)

    def add_test_metrics(self, metrics: dict[str, Metric]) -> None:
        """Evaluation-only metrics (LPIPS, rFID): each is updated with (reconstruction, original) in [0, 1], except
        those named ``loss/*``, which see them in the model's space, unclamped, as the training objective does."""
        for name, metric in metrics.items():
            self.metrics["test"][name] = metric

    def forward(self, images: Tensor):
        return self.tokenizer(images)

    # --- training ------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # A GAN step makes two backward passes over disjoint parameters: the generator's (discriminator frozen) and
        # the discriminator's (tokenizer untouched). DDP's reducer spans every trainable parameter of this module
        # and, unless told to look for unused ones, waits in each backward for gradients the other network never
        # gets ("parameters that were not used"). The strategy has not wrapped the module yet at this point, so
        # the flag still reaches DistributedDataParallel. Its price: each backward also all-reduces the other
        # network's (zero) gradient buckets, and walks the autograd graph once.
        strategy = self.trainer.strategy
        if self.discriminator is not None and isinstance(strategy, DDPStrategy):
            strategy._ddp_kwargs["find_unused_parameters"] = True

    def adversarial_active(self, step: int) -> bool:
        """Whether the generator loss has its adversarial term at ``step``."""
        return self.discriminator is not None and step >= self.adversarial.start_step

    def discriminator_active(self, step: int) -> bool:
        """Whether the discriminator is updated at ``step``."""
        return self.discriminator is not None and step >= self.adversarial.discriminator_start_step

    def generator_loss(self, images: Tensor, step: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(total generator loss, reconstruction, named terms for logging)."""
        reconstruction, quantized = self.tokenizer(images)
        self.step_indices = quantized.indices  # for the codebook-health tracking of training_step
        terms = {"reconstruction": self.reconstruction_loss(reconstruction, images)}
        nll = self.reconstruction_weight * terms["reconstruction"]
        if self.perceptual is not None and self.perceptual_weight > 0:
            terms["perceptual"] = self.perceptual(reconstruction, images)
            nll = nll + self.perceptual_weight * terms["perceptual"]
        total = nll
        for name, value in quantized.losses.items():
            if name not in self.loss_weights:  # an unweighted term would silently not train anything
                raise ConfigError(
                    f"the quantizer returns a '{name}' loss but its config has no quantizer.{name}_weight; "
                    f"add quantizer.{name}_weight=VALUE (0 turns the term off)"
                )
            terms[name] = value
            total = total + self.loss_weights[name] * value
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
        # Fake before real, as visual-tokenizer-pytorch's losses/adversarial.py: the order of BatchNorm's running
        # statistics updates (the logits themselves use batch statistics and do not depend on it).
        logits_fake = self.discriminator(reconstruction.detach())
        logits_real = self.discriminator(images)
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

    def _clip(self, optimizer) -> Tensor | None:
        """Clips the gradients' total norm to ``optimizer.grad_clip``; returns that norm (before clipping) on the
        device, for the non-finite check, or None without clipping (or under fp16's loss scaling, whose inf
        gradients are expected: the scaler skips those steps)."""
        clip = self.optimizer_settings.grad_clip
        if not clip:
            return None
        plugin = self.trainer.precision_plugin
        if getattr(plugin, "scaler", None) is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            return None
        # What Lightning's clip_gradients does (Precision.clip_grad_by_norm), keeping the norm it computes
        return torch.nn.utils.clip_grad_norm_(plugin.main_params(optimizer), clip)

    def training_step(self, images: Tensor, batch_idx: int) -> dict[str, Tensor]:
        """One generator (and discriminator) update. Returns the loss and whether the losses and the clipped
        gradient norms were finite, as device tensors (NonFiniteGuard reads them without a sync per step)."""
        optimizers = self.optimizers()
        g_opt, d_opt = (optimizers[0], optimizers[1]) if isinstance(optimizers, list) else (optimizers, None)
        step = self.global_step

        if d_opt is not None:
            self.toggle_optimizer(g_opt)  # no gradients into the discriminator during the generator step
        total, reconstruction, terms = self.generator_loss(images, step)
        if self.recent_usage is not None:
            self.recent_usage.update(self.step_indices.detach(), step)
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        g_norm = self._clip(g_opt)
        g_opt.step()
        if d_opt is not None:
            self.untoggle_optimizer(g_opt)
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.optimizer_settings.schedule != "exponential":  # per-step schedules
            scheduler.step()
        if self.ema is not None:
            self.ema.update(self.tokenizer)
        log = {f"train/loss/{k}": v.detach() for k, v in terms.items() if k != "adaptive_weight"}
        if "adaptive_weight" in terms:
            log["train/adaptive_weight"] = terms["adaptive_weight"]

        losses, norms = [total.detach()], [g_norm]
        if self.discriminator_active(step):
            self.toggle_optimizer(d_opt)
            if self.adversarial.recompute_reconstruction:  # the generator after its update (07352b4 run_step_d)
                with torch.no_grad():
                    reconstruction, _ = self.tokenizer(images)
            d_loss, d_terms = self.discriminator_step_loss(images, reconstruction)
            d_opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            norms.append(self._clip(d_opt))
            losses.append(d_loss.detach())
            # Stepped through the strategy rather than LightningOptimizer.step, which would count a second step
            # per batch: global_step must count batches (one G and one D update each).
            self.trainer.strategy.optimizer_step(d_opt.optimizer, closure=_no_closure)
            self.untoggle_optimizer(d_opt)
            log.update({f"train/disc/{k}": v.detach() for k, v in d_terms.items()})
        # TensorBoard's x-axis: the number of steps done (this one included), as validation, the image grid and the
        # checkpoints count them; Lightning's default would be this step's 0-based index, one less.
        log["step"] = float(step + 1)
        self.log_dict(log, prog_bar=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False)
        finite = {"loss_finite": all_finite(losses), "grad_finite": all_finite(norms, total.device)}
        return {"loss": total.detach(), **finite}

    def configure_optimizers(self):
        s = self.optimizer_settings
        # fused=False would also switch off PyTorch's default foreach kernels, so "not fused" is passed as None
        fused = True if s.fused else None
        adam = {"lr": s.lr, "betas": tuple(s.betas), "weight_decay": s.weight_decay, "fused": fused}
        optimizer_class = OPTIMIZERS[s.name]
        g_opt = optimizer_class(self.tokenizer.parameters(), **adam)
        optimizers = [g_opt]
        if self.discriminator is not None:
            optimizers.append(optimizer_class(self.discriminator.parameters(), **adam))
        if s.schedule == "constant":
            return optimizers
        if s.schedule == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(g_opt, gamma=s.gamma)
            return optimizers, [{"scheduler": scheduler, "interval": "epoch"}]
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        if s.schedule_steps is None and not 0 < total < float("inf"):
            raise ConfigError(
                f"optimizer.schedule={s.schedule} decays over the whole training, which has no end here; "
                "set trainer.max_steps (or trainer.max_epochs, or optimizer.schedule_steps)"
            )
        total = int(total) if total < float("inf") else 0
        scheduler = torch.optim.lr_scheduler.LambdaLR(g_opt, lambda step: lr_factor(step, total, s))
        return optimizers, [scheduler]

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.optimizer_settings.schedule == "exponential":
            scheduler.step()

    # --- evaluation ----------------------------------------------------------------------------------------------

    def _evaluation_step(self, stage: str, images: Tensor) -> Tensor:
        reconstruction, quantized = self.tokenizer(images)
        metrics = self.metrics[stage]
        preds, target = self.to_unit_range(reconstruction.float()), self.to_unit_range(images.float())
        for name, metric in metrics.items():
            if name in ("codebook", "distinct_tokens"):
                metric.update(quantized.indices)
            elif name.startswith("loss/"):  # as the training objective sees them: model space, unclamped
                metric.update(reconstruction.float(), images.float())
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
        if stage == "val":  # at the step the validated weights reached (see training_step)
            self.log("step", float(self.global_step))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")
        self._log_codebook_health()

    def _log_codebook_health(self) -> None:
        """Usage over the last ``health.steps`` training steps and the dead codes (``train/*``), and the collapse
        warning. Reads the device state once per validation, on every process (a max-reduction)."""
        if self.recent_usage is None or self.recent_usage.first_step is None or self.trainer.sanity_checking:
            return
        step = self.global_step
        values = self.recent_usage.summary(step, self.health.steps)
        self.log_dict({f"train/{k}": v.float() for k, v in values.items()})
        usage = float(values["codebook_usage_recent"])
        health = self.health
        if health.warning_fraction > 0 and step >= health.warning_after and usage < health.warning_fraction:
            window = min(self.health.steps, step - self.recent_usage.first_step)
            log.warning(
                "codebook collapse? at step %d only %.2f%% of the %d codes were chosen in the last %d training steps "
                "(%d dead codes), below metrics.usage_warning_fraction=%g",
                step,
                100 * usage,
                self.levels * self.tokenizer.quantizer.codebook_size,
                window,
                int(values["dead_codes"]),
                self.health.warning_fraction,
            )

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
        checkpoint["vqbench_format"] = CHECKPOINT_FORMAT  # vqbench.checkpoint reads and upgrades every format
        # The frozen LPIPS network is pretrained data, not training state: 58 MB less per checkpoint.
        for key in [k for k in checkpoint["state_dict"] if k.startswith("perceptual.")]:
            del checkpoint["state_dict"][key]
        # quantizer.distributed_update=rank_local_sums keeps one codebook per rank; the checkpoint (written by rank 0)
        # holds the one the original's checkpoint held (quantizers/ema.py, saved_state). Every rank runs this hook.
        for prefix, submodule in self.named_modules():
            if isinstance(submodule, EMAVectorQuantizer):
                for name, tensor in submodule.saved_state().items():
                    checkpoint["state_dict"][f"{prefix}.{name}"] = tensor
        # The codebook-health window (the last step each code was chosen) is training state too: a resumed run reports
        # the recent usage the uninterrupted one would. Synchronised first (a collective: every rank runs this hook).
        if self.recent_usage is not None:
            with self.recent_usage.sync_context():
                last_step = self.recent_usage.last_step.clone()
            checkpoint[HEALTH_KEY] = {"last_step": last_step, "first_step": self.recent_usage.first_step}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming: put the (unsaved) frozen LPIPS weights back so that the strict state-dict load succeeds.
        checkpoint["state_dict"].update({k: v for k, v in self.state_dict().items() if k.startswith("perceptual.")})
        health = checkpoint.get(HEALTH_KEY)  # absent in checkpoints written before it was saved: the window restarts
        if health is not None and self.recent_usage is not None:
            self.recent_usage.last_step.copy_(health["last_step"])
            self.recent_usage.first_step = health["first_step"]


#: The checkpoint entry holding the codebook-health window (metrics/codebook_health.py, RecentCodeUsage).
HEALTH_KEY = "vqbench_codebook_health"


def _no_closure() -> None:
    return None


def _per_channel(value: float | list[float]) -> Tensor:
    """A pixel mean or std that broadcasts over B x C x H x W: 1 x C x 1 x 1, or 0-dim for a number."""
    values = torch.as_tensor(value, dtype=torch.float32)
    return values.view(1, -1, 1, 1) if values.dim() else values
