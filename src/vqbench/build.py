"""Turns a composed config into objects: quantizer (+ its loss weights), tokenizer, training module, data module.

This is the only place that knows how config keys map to constructor arguments, and it is where bad values are
caught and reported with the fix, before any training starts.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vqbench.errors import ConfigError
from vqbench.losses import PerceptualLoss
from vqbench.models.discriminator import PatchDiscriminator
from vqbench.models.tokenizer import Tokenizer
from vqbench.quantizers.base import Quantizer
from vqbench.training.module import AdversarialSettings, OptimizerSettings, TokenizerModule
from vqbench.training.performance import speed_up

log = logging.getLogger("vqbench")

WEIGHT_SUFFIX = "_weight"


def _instantiate(node: Any, what: str, **kwargs) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"{what}: {cause}") from None
        raise


def check_config(cfg: DictConfig) -> None:
    """Checks the values that every run depends on; raises ConfigError naming the key and the valid range."""
    for key in ("codebook.size", "codebook.dim", "data.batch_size", "data.resolution", "data.channels"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if not isinstance(cfg.codebook.l2_norm, bool):
        raise ConfigError(f"codebook.l2_norm must be true or false, got {cfg.codebook.l2_norm!r}")
    for key, value in cfg.quantizer.items():
        # Negative weights are legitimate (the dense lattice's gamma = -1), so only the type is checked.
        if key.endswith(WEIGHT_SUFFIX) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"quantizer.{key} must be a number, got {value!r}")
    if cfg.loss.reconstruction not in ("mse", "l1"):
        raise ConfigError(f"loss.reconstruction must be one of mse, l1; got {cfg.loss.reconstruction!r}")
    adversarial = cfg.loss.get("adversarial")
    if adversarial is not None and adversarial.loss not in ("hinge", "non_saturating"):
        raise ConfigError(f"loss.adversarial.loss must be hinge or non_saturating, got {adversarial.loss!r}")
    if cfg.optimizer.get("schedule", "constant") not in ("constant", "linear"):
        raise ConfigError(f"optimizer.schedule must be constant or linear, got {cfg.optimizer.schedule!r}")
    if OmegaConf.select(cfg, "trainer.gradient_clip_val") is not None:
        raise ConfigError(
            "trainer.gradient_clip_val does not apply (training uses manual optimization); set optimizer.grad_clip="
            f"{cfg.trainer.gradient_clip_val} instead"
        )
    for key in ("performance.compile", "performance.channels_last", "performance.tf32", "optimizer.fused"):
        if not isinstance(OmegaConf.select(cfg, key), bool):
            raise ConfigError(f"{key} must be true or false, got {OmegaConf.select(cfg, key)!r}")
    window = cfg.metrics.get("usage_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConfigError(
            f"metrics.usage_window must be a positive number of tokens (e.g. 65536) or null, got {window!r}"
        )
    ema_decay = cfg.get("ema_decay")
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.9999) or null, got {ema_decay!r}")


def build_quantizer(quantizer_cfg: DictConfig) -> tuple[Quantizer, dict[str, float]]:
    """The quantizer and the weights of its named losses.

    Keys ending in ``_weight`` are loss weights (``commitment_weight`` weighs the ``commitment`` term); they are not
    constructor arguments. Entropy terms are costly, so when all of a quantizer's entropy weights are zero it is
    built with ``compute_entropy=False`` and does not compute them.
    """
    kwargs = OmegaConf.to_container(quantizer_cfg, resolve=True)
    weights = {k[: -len(WEIGHT_SUFFIX)]: float(kwargs.pop(k)) for k in list(kwargs) if k.endswith(WEIGHT_SUFFIX)}
    entropy_weights = [w for name, w in weights.items() if name.endswith("entropy")]
    if entropy_weights:
        kwargs["compute_entropy"] = any(w != 0 for w in entropy_weights)
    return _instantiate(kwargs, "quantizer"), weights


def build_tokenizer(cfg: DictConfig) -> tuple[Tokenizer, dict[str, float]]:
    quantizer, weights = build_quantizer(cfg.quantizer)
    encoder = _instantiate(cfg.model.encoder, "model.encoder")
    decoder = _instantiate(cfg.model.decoder, "model.decoder")
    return Tokenizer(encoder, quantizer, decoder), weights


def build_training_module(cfg: DictConfig, for_training: bool = True) -> TokenizerModule:
    """The LightningModule of a config. ``for_training=False`` (evaluation) skips the perceptual network and the
    discriminator, which evaluation does not use (and whose weights may be absent offline), and the
    ``performance.channels_last`` / ``performance.compile`` speed-ups: evaluation runs the plain fp32 path."""
    tokenizer, weights = build_tokenizer(cfg)
    loss = cfg.loss
    perceptual_weight = float(OmegaConf.select(loss, "perceptual.weight", default=0.0) or 0.0)
    perceptual = None
    if for_training and perceptual_weight > 0:
        perceptual = PerceptualLoss(pretrained=bool(loss.perceptual.pretrained))
    discriminator, adversarial = None, None
    if for_training and loss.get("adversarial") is not None:
        adversarial = AdversarialSettings(**OmegaConf.to_container(loss.adversarial, resolve=True))
        discriminator = PatchDiscriminator(in_channels=cfg.data.channels, **loss.discriminator)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    optimizer["betas"] = tuple(optimizer["betas"])
    module = TokenizerModule(
        tokenizer,
        loss_weights=weights,
        reconstruction_loss=loss.reconstruction,
        reconstruction_weight=float(loss.get("reconstruction_weight", 1.0)),
        perceptual=perceptual,
        perceptual_weight=perceptual_weight,
        discriminator=discriminator,
        adversarial=adversarial,
        optimizer=OptimizerSettings(**optimizer),
        ema_decay=cfg.get("ema_decay") if for_training else None,
        # Unresolved, so that an evaluation's data.root=... reaches every key that interpolates it.
        config_yaml=OmegaConf.to_yaml(cfg, resolve=False),
        usage_window=cfg.metrics.get("usage_window"),
    )
    if for_training:
        speed_up(module, channels_last=cfg.performance.channels_last, compile=cfg.performance.compile)
    return module


#: AlexNet's stride-4 stem and two max-pools leave no pixels for its later layers below 31x31.
LPIPS_MIN_SIZE = 32


def build_evaluation_metrics(cfg: DictConfig, image_size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, str]]:
    """LPIPS and rFID, as ``metrics.lpips`` / ``metrics.rfid`` ask, and why any of them is unavailable.

    Missing pretrained weights offline are not fatal here: the evaluation reports every other metric and names
    the missing file (SPEC §6); nothing is ever filled in with a placeholder number.
    """
    from vqbench.metrics.fid import ReconstructionFID
    from vqbench.metrics.lpips_metric import LPIPS
    from vqbench.weights import MissingWeightsError

    metrics, unavailable = {}, {}
    settings = cfg.metrics
    if settings.get("lpips", True) and min(image_size) < LPIPS_MIN_SIZE:
        unavailable["lpips"] = (
            f"the test images are {image_size[0]}x{image_size[1]}; LPIPS's AlexNet needs at least "
            f"{LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} (set metrics.lpips=false to silence this)"
        )
    elif settings.get("lpips", True):
        pretrained = bool(settings.get("lpips_pretrained", True))
        if not pretrained:
            log.warning(
                "metrics.lpips_pretrained=false: LPIPS uses a RANDOMLY INITIALISED AlexNet; its value is meaningless "
                "(smoke tests only)"
            )
        try:
            metrics["lpips"] = LPIPS(pretrained=pretrained)
        except MissingWeightsError as error:
            unavailable["lpips"] = str(error)
    if settings.get("rfid", True):
        try:
            metrics["rfid"] = ReconstructionFID(settings.get("inception_weights"))
        except MissingWeightsError as error:
            unavailable["rfid"] = str(error)
    for name, reason in unavailable.items():
        log.warning("%s not computed: %s", name, reason)
    return metrics, unavailable


def build_datamodule(cfg: DictConfig):
    return _instantiate(cfg.data, "data")
