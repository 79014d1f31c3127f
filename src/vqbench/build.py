"""Turns a composed config into objects: quantizer (+ its loss weights), tokenizer, training module, data module.

This is the only place that knows how config keys map to constructor arguments, and it is where bad values are
caught and reported with the fix, before any training starts.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vqbench.argument_types import check_argument_types
from vqbench.checks import require_folder
from vqbench.data.settings import check_data_settings
from vqbench.errors import ConfigError, DataError
from vqbench.losses import PerceptualLoss
from vqbench.metrics import SSIM_WINDOWS
from vqbench.metrics.settings import check_metrics_settings
from vqbench.models.discriminator import INITS, PatchDiscriminator
from vqbench.models.tokenizer import Tokenizer
from vqbench.quantizers.base import Quantizer
from vqbench.quantizers.fsq import format_levels, levels_for_codebook_size, levels_problem
from vqbench.stored_config import storable_config
from vqbench.training.module import (
    OPTIMIZERS,
    SCHEDULES,
    AdversarialSettings,
    CodebookHealthSettings,
    OptimizerSettings,
    TokenizerModule,
)
from vqbench.training.performance import SWITCHES, speed_up
from vqbench.training.token_count import TokenCount
from vqbench.training.trainer_settings import check_trainer_settings

log = logging.getLogger("vqbench")

WEIGHT_SUFFIX = "_weight"


def _instantiate(node: Any, what: str, **kwargs) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        # RuntimeError: torch refusing a size (e.g. a negative channel count) while the module is built
        if isinstance(cause, (ValueError, TypeError, RuntimeError)):
            raise ConfigError(f"{what}: {cause}") from None
        raise


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Checks the values that every run depends on; raises ConfigError naming the key and the valid range."""
    for key in ("codebook.size", "codebook.dim", "data.batch_size", "data.resolution", "data.channels"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if not isinstance(cfg.codebook.l2_norm, bool):
        raise ConfigError(f"codebook.l2_norm must be true or false, got {cfg.codebook.l2_norm!r}")
    quantizer = quantizer_class(cfg.quantizer)
    codebook_init = OmegaConf.select(cfg, "codebook.init", default="uniform")
    if codebook_init not in quantizer.codebook_inits:
        takes = f"{quantizer.__name__} takes codebook.init={' or '.join(quantizer.codebook_inits)}"
        if quantizer.codebook_inits == ("uniform",):
            raise ConfigError(
                f"codebook.init={codebook_init} needs a quantizer with a learned codebook (quantizer=vq or ema); "
                f"{takes}"
            )
        raise ConfigError(f"codebook.init={codebook_init} is not a codebook initialisation: {takes}")
    loss_weights(cfg.quantizer, quantizer)
    if cfg.loss.reconstruction not in ("mse", "l1"):
        raise ConfigError(f"loss.reconstruction must be one of mse, l1; got {cfg.loss.reconstruction!r}")
    adversarial = cfg.loss.get("adversarial")
    if adversarial is not None and adversarial.loss not in ("hinge", "non_saturating"):
        raise ConfigError(f"loss.adversarial.loss must be hinge or non_saturating, got {adversarial.loss!r}")
    for key in ("start_step", "discriminator_start_step"):
        value = adversarial.get(key, 0) if adversarial is not None else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"loss.adversarial.{key} must be a step number >= 0, got {value!r}")
    discriminator = cfg.loss.get("discriminator")
    if discriminator is not None and discriminator.get("init", "taming") not in INITS:
        raise ConfigError(f"loss.discriminator.init must be one of {', '.join(INITS)}; got {discriminator.init!r}")
    if cfg.optimizer.get("schedule", "constant") not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule must be one of {', '.join(SCHEDULES)}; got {cfg.optimizer.schedule!r}")
    schedule_steps = cfg.optimizer.get("schedule_steps")
    if schedule_steps is not None and (not isinstance(schedule_steps, int) or schedule_steps < 1):
        raise ConfigError(
            f"optimizer.schedule_steps must be a positive number of steps or null (trainer.max_steps), "
            f"got {schedule_steps!r}"
        )
    gamma = cfg.optimizer.get("gamma", 1.0)
    if not _is_number(gamma) or gamma < 0:
        raise ConfigError(f"optimizer.gamma (the per-epoch lr factor) must be a number >= 0, got {gamma!r}")
    _check_pixel_space(cfg)
    if OmegaConf.select(cfg, "trainer.gradient_clip_val") is not None:
        raise ConfigError(
            "trainer.gradient_clip_val does not apply (training uses manual optimization); set optimizer.grad_clip="
            f"{cfg.trainer.gradient_clip_val} instead"
        )
    window = cfg.metrics.get("usage_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConfigError(
            f"metrics.usage_window must be a positive number of tokens (e.g. 65536) or null, got {window!r}"
        )
    if cfg.metrics.get("ssim_window", "uniform") not in SSIM_WINDOWS:
        raise ConfigError(
            f"metrics.ssim_window must be one of {', '.join(SSIM_WINDOWS)}, got {cfg.metrics.ssim_window!r}"
        )
    rfid_settings(cfg)  # a ConfigError for an unknown protocol, before any work
    _check_codebook_health(cfg.metrics)
    splits = cfg.metrics.get("effective_size_splits")
    if splits is not None and (
        not OmegaConf.is_list(splits) or not splits or any(split not in ("train", "val", "test") for split in splits)
    ):
        raise ConfigError(
            f"metrics.effective_size_splits must be a list of train, val, test (e.g. [train, val]), got {splits!r}"
        )
    ema_decay = cfg.get("ema_decay")
    if ema_decay is not None and not (_is_number(ema_decay) and 0 < ema_decay < 1):
        raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.9999) or null, got {ema_decay!r}")
    _check_optimizer(cfg.optimizer)
    if adversarial is not None:
        _check_adversarial(adversarial)
    for switch in SWITCHES:
        value = OmegaConf.select(cfg, f"performance.{switch}", default=False)
        if not isinstance(value, bool):
            raise ConfigError(
                f"performance.{switch} must be true or false, got {value!r}; performance=gpu turns every speed "
                "switch on, performance=plain (the default) turns them off"
            )
    every = OmegaConf.select(cfg, "checkpoint.every_n_steps")
    if every is not None and not _is_positive_int(every):
        raise ConfigError(
            f"checkpoint.every_n_steps must be a positive number of steps (e.g. 1000) or null, got {every!r}"
        )
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    # loss weights are not constructor arguments; FSQ levels are checked, with a valid fix, by reconcile_codebook_size
    weights = tuple(key for key in cfg.quantizer if key.endswith(WEIGHT_SUFFIX))
    check_argument_types(cfg.quantizer, "quantizer", skip=(*weights, "levels"))
    for node in ("encoder", "decoder"):
        check_argument_types(cfg.model.get(node), f"model.{node}")
    for key in ("evaluate_after_training", "skip_finished"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key} must be true or false, got {cfg.get(key)!r}")
    _check_loss_weights(cfg.loss)
    require_folder("logger.save_dir", OmegaConf.select(cfg, "logger.save_dir"), "the run directory")
    check_data_settings(cfg.data)
    check_trainer_settings(cfg.get("trainer") or {})
    check_metrics_settings(cfg.get("metrics") or {})


def _check_loss_weights(loss: DictConfig, prefix: str = "loss") -> None:
    """Every ``*weight`` of the loss node is a number (a string fails in float() while the module is built)."""
    for key, value in loss.items():
        if isinstance(value, DictConfig):
            _check_loss_weights(value, f"{prefix}.{key}")
        elif str(key).endswith("weight") and not _is_number(value):
            raise ConfigError(f"{prefix}.{key} must be a number, got {value!r}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_optimizer(optimizer: DictConfig) -> None:
    """Adam's arguments and the schedule, named here rather than by torch's ValueError in the middle of fit."""
    name = optimizer.get("name", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    lr = optimizer.lr
    if not (_is_number(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr must be a positive number (e.g. 4e-4), got {lr!r}")
    betas = optimizer.betas
    if len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1) (e.g. [0.9, 0.999]), got {list(betas)!r}")
    if not (_is_number(optimizer.weight_decay) and optimizer.weight_decay >= 0):
        raise ConfigError(f"optimizer.weight_decay must be a number >= 0, got {optimizer.weight_decay!r}")
    clip = optimizer.grad_clip
    if clip is not None and not (_is_number(clip) and clip > 0):
        raise ConfigError(f"optimizer.grad_clip must be a positive gradient norm (e.g. 1.0) or null, got {clip!r}")
    warmup = optimizer.get("warmup_fraction", 0.0)
    if not (_is_number(warmup) and 0 <= warmup < 1):
        raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1) (e.g. 0.01), got {warmup!r}")


def _check_adversarial(adversarial: DictConfig) -> None:
    start = adversarial.get("start_step", 0)
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise ConfigError(f"loss.adversarial.start_step must be a step number >= 0, got {start!r}")
    for key in ("weight", "lecam_weight"):
        value = adversarial.get(key, 0.0)
        if not (_is_number(value) and value >= 0):
            raise ConfigError(f"loss.adversarial.{key} must be a number >= 0, got {value!r}")
    recompute = adversarial.get("recompute_reconstruction", False)
    if not isinstance(recompute, bool):
        raise ConfigError(f"loss.adversarial.recompute_reconstruction must be true or false, got {recompute!r}")
    decay = adversarial.get("lecam_decay", 0.999)
    if not (_is_number(decay) and 0 <= decay < 1):
        raise ConfigError(f"loss.adversarial.lecam_decay must be in [0, 1) (e.g. 0.999), got {decay!r}")


def _check_pixel_space(cfg: DictConfig) -> None:
    channels = cfg.data.channels
    for key in ("pixel_mean", "pixel_std"):
        value = pixel_statistic(cfg, key)
        values = value if isinstance(value, list) else [value]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numbers or len(values) not in (1, channels) or (key == "pixel_std" and min(values) <= 0):
            raise ConfigError(
                f"data.{key} must be a{' positive' if key == 'pixel_std' else ''} number or a list of "
                f"data.channels={channels} of them, got {value!r}"
            )
    input_range = OmegaConf.select(cfg, "loss.perceptual.input_range")
    if input_range is not None:
        values = list(input_range) if OmegaConf.is_list(input_range) else None
        if values is None or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(
                f"loss.perceptual.input_range must be [low, high], e.g. [-1, 1] (LPIPS's own) or [0, 1]; "
                f"got {input_range!r}"
            )


def _override_keys(overrides: Collection[str]) -> set[str]:
    return {override.lstrip("+~").split("=", 1)[0] for override in overrides}


def reconcile_codebook_size(cfg: DictConfig, overrides: Collection[str] = ()) -> None:
    """Makes ``codebook.size`` the true size of a scalar quantizer's codebook (FSQ, SFSQ: classes that declare
    ``codebook_from_levels``), in place.

    Their codebook is the product of ``quantizer.levels``, so the levels are the source of truth: given levels
    set ``codebook.size``; without levels, ``codebook.size`` picks the FSQ paper's levels (table 1), whose product
    may differ (1024 -> [8,5,5,5], 1000 codes). Either way the config then records the levels and the real size.
    ``codebook.size`` and ``quantizer.levels`` both given on the command line (``overrides``) must agree.
    """
    if not quantizer_class(cfg.quantizer).codebook_from_levels:
        return
    levels = cfg.quantizer.levels
    given = _override_keys(overrides)
    if levels is None:
        try:
            levels = levels_for_codebook_size(cfg.codebook.size)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    problem = levels_problem(OmegaConf.to_object(levels) if OmegaConf.is_config(levels) else levels)
    if problem is not None:
        reason, fixed = problem
        size = f" codebook.size={math.prod(fixed)}" if "codebook.size" in given else ""
        raise ConfigError(f"quantizer.levels={levels}: {reason}; e.g. quantizer.levels={format_levels(fixed)}{size}")
    size = math.prod(levels)
    if size == cfg.codebook.size:
        cfg.quantizer.levels = list(levels)
        return
    if {"codebook.size", "quantizer.levels"} <= given:
        raise ConfigError(
            f"quantizer.levels={format_levels(levels)} give {size} codes but codebook.size={cfg.codebook.size}; "
            f"set codebook.size={size} (the levels define the codebook), or drop codebook.size={cfg.codebook.size}"
        )
    log.info(
        "quantizer.levels=%s give %d codes: codebook.size=%d (not %d)", list(levels), size, size, cfg.codebook.size
    )
    cfg.codebook.size = size
    cfg.quantizer.levels = list(levels)


def quantizer_class(quantizer_cfg: DictConfig) -> type[Quantizer]:
    """The Quantizer subclass that ``quantizer._target_`` names, whose declarations (``loss_names``,
    ``optional_losses``, ``codebook_from_levels``, ``codebook_inits``; see ``vqbench.quantizers.base``) say how its
    config is read."""
    target = quantizer_cfg.get("_target_")
    try:
        cls = get_class(str(target))
    except (ImportError, ValueError) as error:
        raise ConfigError(f"quantizer._target_={target} cannot be imported: {str(error).splitlines()[0]}") from None
    if not issubclass(cls, Quantizer):
        raise ConfigError(
            f"quantizer._target_={target} is not a vqbench.quantizers.Quantizer subclass (docs/extending.md)"
        )
    return cls


def loss_weights(quantizer_cfg: DictConfig, quantizer: type[Quantizer]) -> dict[str, float]:
    """{loss name: weight} from ``quantizer.<name>_weight``, for exactly the class's ``loss_names``: a missing weight,
    a weight that is not a number, or a ``*_weight`` key that weighs no loss of the class (and is no constructor
    argument) is a ConfigError naming the key and the class's losses."""
    settings = OmegaConf.to_container(quantizer_cfg, resolve=True)
    names = ", ".join(quantizer.loss_names)
    losses = (
        f"{quantizer.__name__} returns the losses {names}, each weighted by quantizer.<name>_weight"
        if names
        else f"{quantizer.__name__} returns no losses (its loss_names)"
    )
    arguments = inspect.signature(quantizer.__init__).parameters
    for key in settings:
        unknown = key.removesuffix(WEIGHT_SUFFIX) not in quantizer.loss_names and key not in arguments
        if key.endswith(WEIGHT_SUFFIX) and unknown:
            raise ConfigError(f"quantizer.{key} weighs no loss: {losses}; remove the key or fix its name")
    weights = {}
    for name in quantizer.loss_names:
        key = f"{name}{WEIGHT_SUFFIX}"
        if key not in settings:
            raise ConfigError(f"quantizer.{key} is missing: {losses}; add quantizer.{key}=VALUE (0 turns it off)")
        value = settings[key]
        # Negative weights are legitimate (the dense lattice's gamma = -1), so only the type is checked.
        if not _is_number(value):
            raise ConfigError(f"quantizer.{key} must be a number, got {value!r}")
        weights[name] = float(value)
    return weights


def build_quantizer(quantizer_cfg: DictConfig) -> tuple[Quantizer, dict[str, float]]:
    """The quantizer and the weights of its named losses.

    The class that ``quantizer._target_`` names declares its losses (``loss_names``): ``quantizer.<name>_weight``
    weighs the term ``name`` and is not a constructor argument. Its costly terms (``optional_losses``) are switched
    off in the constructor when all their weights are zero, so they are not computed.
    """
    quantizer = quantizer_class(quantizer_cfg)
    weights = loss_weights(quantizer_cfg, quantizer)
    kwargs = OmegaConf.to_container(quantizer_cfg, resolve=True)
    for name in weights:
        del kwargs[f"{name}{WEIGHT_SUFFIX}"]
    for switch, names in quantizer.optional_losses.items():
        kwargs[switch] = any(weights[name] != 0 for name in names)
    return _instantiate(kwargs, "quantizer"), weights


def build_tokenizer(cfg: DictConfig) -> tuple[Tokenizer, dict[str, float]]:
    quantizer, weights = build_quantizer(cfg.quantizer)
    encoder = _instantiate(cfg.model.encoder, "model.encoder")
    decoder = _instantiate(cfg.model.decoder, "model.decoder")
    try:
        tokenizer = Tokenizer(
            encoder,
            quantizer,
            decoder,
            pre_quant_conv=bool(cfg.model.get("pre_quant_conv", True)),
            post_quant_conv=bool(cfg.model.get("post_quant_conv", True)),
        )
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None
    return tokenizer, weights


def build_training_module(cfg: DictConfig, for_training: bool = True) -> TokenizerModule:
    """The LightningModule of a config. ``for_training=False`` (evaluation) skips the perceptual network and the
    discriminator, which evaluation does not use (and whose weights may be absent offline), and the
    ``performance.channels_last`` / ``performance.compile`` speed-ups: evaluation runs the plain fp32 path."""
    tokenizer, weights = build_tokenizer(cfg)
    loss = cfg.loss
    perceptual_weight = float(OmegaConf.select(loss, "perceptual.weight", default=0.0) or 0.0)
    perceptual = None
    if for_training and perceptual_weight > 0:
        perceptual = build_perceptual_loss(cfg)
    discriminator, adversarial = None, None
    if for_training and loss.get("adversarial") is not None:
        adversarial = AdversarialSettings(**OmegaConf.to_container(loss.adversarial, resolve=True))
        discriminator = PatchDiscriminator(in_channels=cfg.data.channels, **loss.discriminator)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    optimizer["betas"] = tuple(optimizer["betas"])
    optimizer["fused"] = bool(OmegaConf.select(cfg, "performance.fused_adam", default=False)) and for_training
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
        # References stay, so that an evaluation's data.root=... reaches every key that interpolates it.
        config_yaml=storable_config(cfg),
        usage_window=cfg.metrics.get("usage_window"),
        health=CodebookHealthSettings(
            steps=cfg.metrics.get("health_steps", 1000),
            warning_fraction=cfg.metrics.get("usage_warning_fraction", 0.1),
            warning_after=cfg.metrics.get("usage_warning_after", 1000),
        ),
        ssim_window=cfg.metrics.get("ssim_window", "uniform"),
        pixel_mean=pixel_statistic(cfg, "pixel_mean"),
        pixel_std=pixel_statistic(cfg, "pixel_std"),
    )
    if for_training:
        performance = cfg.performance
        speed_up(
            module,
            channels_last=bool(performance.channels_last),
            compile=bool(performance.compile),
        )
    return module


def pixel_statistic(cfg: DictConfig, key: str) -> float | list[float]:
    """``data.pixel_mean`` / ``data.pixel_std`` (0.5, i.e. [-1, 1] model space, where a data config has none)."""
    value = cfg.data.get(key, 0.5)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def build_perceptual_loss(cfg: DictConfig) -> PerceptualLoss:
    """The LPIPS(VGG16) loss of ``loss.perceptual``, fed from the model's pixel space (``data.pixel_*``)."""
    settings = cfg.loss.perceptual
    return PerceptualLoss(
        pretrained=bool(settings.pretrained),
        pixel_mean=pixel_statistic(cfg, "pixel_mean"),
        pixel_std=pixel_statistic(cfg, "pixel_std"),
        input_range=tuple(settings.get("input_range", (-1.0, 1.0))),
    )


def effective_size_splits(cfg: DictConfig) -> list[str]:
    """The splits whose tokens the effective codebook size counts (``metrics.effective_size_splits``)."""
    return list(cfg.metrics.get("effective_size_splits") or ["test"])


def build_token_count(cfg: DictConfig, tokenizer: Tokenizer, datamodule) -> TokenCount:
    """The pass that counts the effective codebook size over ``metrics.effective_size_splits``, flipping images at
    random when the data flips them (``data.flip``), as LL-VQ-VAE's loaders do in every split."""
    return TokenCount(tokenizer, datamodule, effective_size_splits(cfg), flip=bool(cfg.data.get("flip", False)))


#: AlexNet's stride-4 stem and two max-pools leave no pixels for its later layers below 31x31.
LPIPS_MIN_SIZE = 32


def rfid_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """``metrics.rfid`` as {protocol, cache, cache_dir}, or None when rFID is off (``metrics.rfid=false``).
    ``metrics.rfid=true`` means the default protocol."""
    from vqbench.metrics.rfid_protocols import DEFAULT_PROTOCOL, PROTOCOLS

    node = cfg.metrics.get("rfid", True)
    if node is False or node is None:
        return None
    settings = {"protocol": DEFAULT_PROTOCOL, "cache": True, "cache_dir": None}
    if OmegaConf.is_dict(node):
        settings |= OmegaConf.to_container(node, resolve=True)
    elif node is not True:
        raise ConfigError(f"metrics.rfid must be false or hold protocol/cache/cache_dir keys, got {node!r}")
    if settings["protocol"] not in PROTOCOLS:
        raise ConfigError(
            f"metrics.rfid.protocol={settings['protocol']} is not an rFID protocol; choose one of "
            f"{', '.join(PROTOCOLS)} (docs/protocol.md describes each)"
        )
    return settings


def _check_codebook_health(settings: DictConfig) -> None:
    steps = settings.get("health_steps", 1000)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"metrics.health_steps must be a positive number of training steps, got {steps!r}")
    fraction = settings.get("usage_warning_fraction", 0.1)
    if not _is_number(fraction) or not 0 <= fraction <= 1:
        raise ConfigError(f"metrics.usage_warning_fraction must be in [0, 1] (0: never warn), got {fraction!r}")
    after = settings.get("usage_warning_after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise ConfigError(f"metrics.usage_warning_after must be a number of training steps >= 0, got {after!r}")


def build_evaluation_metrics(
    cfg: DictConfig, image_size: tuple[int, int], dataset_fingerprint: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """LPIPS and rFID, as ``metrics.lpips`` / ``metrics.rfid`` ask, the training objective's terms with
    ``metrics.loss_terms``, and why any of them is unavailable.

    rFID follows ``metrics.rfid.protocol``; with ``metrics.rfid.cache`` and a ``dataset_fingerprint`` its reference
    statistics come from the cache when an entry verifies (``vqbench.metrics.fid_reference``), and the metric's
    ``reference_cache`` says where to store them otherwise.

    Missing pretrained weights offline are not fatal here: the evaluation reports every other metric and names
    the missing file (docs/protocol.md); nothing is ever filled in with a placeholder number.
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
    rfid = rfid_settings(cfg)
    if rfid is not None:
        from vqbench.metrics.fid_reference import cache_path, load_reference

        try:
            metric = ReconstructionFID(rfid["protocol"], settings.get("inception_weights"))
        except MissingWeightsError as error:
            unavailable["rfid"] = str(error)
        else:
            if rfid["cache"] and dataset_fingerprint is not None:
                # keyed by the weights too: statistics of other weights (a test's random ones) are never reused
                metric.reference_cache = cache_path(
                    rfid["cache_dir"], rfid["protocol"], dataset_fingerprint, metric.weights_digest()
                )
                metric.reference = load_reference(metric.reference_cache)
            metrics["rfid"] = metric
    if settings.get("loss_terms", False):
        metrics |= loss_term_metrics(cfg, unavailable)
    for name, reason in unavailable.items():
        log.warning("%s not computed: %s", name, reason)
    return metrics, unavailable


def loss_term_metrics(cfg: DictConfig, unavailable: dict[str, str]) -> dict[str, Any]:
    """The training objective's reconstruction and perceptual terms, per image then the mean over the split
    (``loss/reconstruction``, ``loss/perceptual``): the l1_loss and precep_loss columns of the ImageNet-128 tables.
    The perceptual term uses the training's LPIPS(VGG16); its weights missing offline, it is listed in
    ``unavailable`` like LPIPS and rFID."""
    from vqbench.metrics import MeanPerImage
    from vqbench.training.module import per_image_loss
    from vqbench.weights import MissingWeightsError

    metrics = {"loss/reconstruction": MeanPerImage(per_image_loss(cfg.loss.reconstruction))}
    if float(OmegaConf.select(cfg.loss, "perceptual.weight", default=0.0) or 0.0) > 0:
        try:
            perceptual = build_perceptual_loss(cfg)
        except MissingWeightsError as error:
            unavailable["loss/perceptual"] = str(error)
        else:
            metrics["loss/perceptual"] = MeanPerImage(perceptual.distance, network=perceptual)
    return metrics


def _meta_trace(network: nn.Module, *inputs: Tensor) -> Tensor:
    """``network(*inputs)`` run on a copy of ``network`` on the meta device: shapes only, no memory and no arithmetic.

    The copy's parameters and buffers are meta tensors from the start (deepcopy's memo maps each original to its
    stand-in, shared ones included), so no weight is copied and the original is never touched.
    """
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    with torch.no_grad():
        return copy.deepcopy(network, memo)(*inputs)


def _round_trip(tokenizer: Tokenizer, images: Tensor) -> tuple[Tensor, Tensor]:
    """(tokens, reconstruction) shapes of the tokenizer; the quantizer keeps its input's shape by contract."""
    tokens = _meta_trace(tokenizer.pre_quant, _meta_trace(tokenizer.encoder, images))
    return tokens, _meta_trace(tokenizer.decoder, _meta_trace(tokenizer.post_quant, tokens))


def _downsampling(tokenizer: Tokenizer, channels: int) -> int | None:
    """The encoder's downsampling factor, measured by tracing a large image (None if that fails)."""
    probe = 1024
    try:
        tokens = _meta_trace(tokenizer.encoder, torch.empty(2, channels, probe, probe, device="meta"))
    except (RuntimeError, ValueError):
        return None
    return probe // tokens.shape[-1] if tokens.shape[-1] else None


def check_shapes(cfg: DictConfig, module: TokenizerModule, datamodule) -> None:
    """Checks, before the first step, that the model fits the data, asking the networks themselves rather than a
    table: the first training image must be data.channels x data.resolution x data.resolution, the tokenizer must
    map it to tokens and back to the same shape, and the discriminator and perceptual network must accept it.
    The networks are traced on the meta device (shapes only), so this costs nothing even for a 1024-pixel VQGAN."""
    dataset = datamodule.dataset("train")
    first = next((dataset[i] for i in range(len(dataset)) if dataset[i] is not None), None)
    if first is None:
        raise DataError("no image of the train split could be read; check data.root (the log names each file)")
    channels, resolution = cfg.data.channels, cfg.data.resolution
    if first.shape[0] != channels:
        raise ConfigError(
            f"data.channels={channels}, but the train images have {first.shape[0]} channels "
            f"({'x'.join(map(str, first.shape))}); set data.channels={first.shape[0]}"
        )
    if tuple(first.shape[1:]) != (resolution, resolution):
        raise ConfigError(
            f"data.resolution={resolution}, but the train images are {first.shape[1]}x{first.shape[2]}; "
            "check the data.make_dataset settings"
        )
    images = torch.empty(2, *first.shape, device="meta")
    tokenizer = module.tokenizer
    names = f"{type(tokenizer.encoder).__name__}/{type(tokenizer.decoder).__name__}"
    try:
        tokens, reconstruction = _round_trip(tokenizer, images)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"the model ({names}) cannot take {channels}x{resolution}x{resolution} images (data.channels, "
            f"data.resolution): {error}"
        ) from None
    if reconstruction.shape != images.shape:
        factor = _downsampling(tokenizer, channels)
        advice = "change data.resolution"
        if factor:
            lower, upper = max(factor, resolution // factor * factor), (resolution // factor + 1) * factor
            advice = f"use a multiple of its downsampling factor {factor}, e.g. data.resolution={upper} (or {lower})"
        raise ConfigError(
            f"data.resolution={resolution} does not fit the model ({names}): it encodes {resolution}x{resolution} "
            f"images into {tokens.shape[-2]}x{tokens.shape[-1]} tokens and decodes those into "
            f"{reconstruction.shape[-2]}x{reconstruction.shape[-1]} images; {advice}"
        )
    for name, network, inputs in (
        ("discriminator", module.discriminator, (images,)),
        ("perceptual network (LPIPS)", module.perceptual, (images, images)),
    ):
        if network is None:
            continue
        try:
            _meta_trace(network, *inputs)
        except (RuntimeError, ValueError) as error:
            raise ConfigError(
                f"data.resolution={resolution} is too small for the {name} ({type(network).__name__}): {error}; "
                "use a larger data.resolution"
            ) from None


def build_datamodule(cfg: DictConfig):
    """The data module; the run's ``seed`` keys its training order, crops and flips."""
    return _instantiate(cfg.data, "data", seed=cfg.seed)


#: Lightning loggers that need a package vqbench does not install by default, and the extra that installs it.
LOGGER_EXTRAS = {"WandbLogger": "wandb", "MLFlowLogger": "mlflow"}


def build_logger(cfg: DictConfig, run_dir: Path, sweep_run: tuple[Path, str] | None = None):
    """The Lightning logger of ``logger=NAME`` (conf/logger/); ``save_dir: null`` means the run directory. A logger
    whose package is missing is a ConfigError that names the extra to install.

    ``sweep_run``: (sweep folder, run name) of a multirun job. TensorBoard then writes into
    ``SWEEP/tensorboard/RUN_NAME/`` (with ``save_dir: null``), so that ``tensorboard --logdir SWEEP/tensorboard``
    names each job's curves by what it sweeps (``quantizer=vq,codebook.dim=4``), not by its job number."""
    settings = OmegaConf.to_container(cfg.logger, resolve=True)
    tensorboard = str(settings.get("_target_", "")).endswith("TensorBoardLogger")
    if sweep_run is not None and tensorboard and settings.get("save_dir", "") is None:
        settings["save_dir"], settings["version"] = str(sweep_run[0]), sweep_run[1]
    if settings.get("save_dir", "") is None:
        settings["save_dir"] = str(run_dir)
    name = str(settings.get("_target_", "")).rsplit(".", 1)[-1]
    try:
        return instantiate(settings)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ModuleNotFoundError) and name in LOGGER_EXTRAS:
            extra = LOGGER_EXTRAS[name]
            raise ConfigError(
                f"logger: {name} needs the {extra} package, which is not installed; pip install -e '.[{extra}]'"
            ) from None
        if isinstance(cause, (ValueError, TypeError)):
            raise ConfigError(f"logger: {cause}") from None
        raise
