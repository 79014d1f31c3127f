"""Turns a composed config into objects: quantizer (+ its loss weights), tokenizer, training module, data module.

This is the only place that knows how config keys map to constructor arguments, and it is where bad values are
caught and reported with the fix, before any training starts.
"""

from __future__ import annotations

import copy
import itertools
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from vqbench.argument_types import check_argument_types
from vqbench.checks import is_int, require_bool, require_folder
from vqbench.data.settings import check_data_settings, pixel_statistic
from vqbench.errors import ConfigError, DataError
from vqbench.losses import PerceptualLoss
from vqbench.metrics.settings import check_metrics_settings, rfid_settings
from vqbench.models.discriminator import PatchDiscriminator
from vqbench.models.tokenizer import Tokenizer
from vqbench.quantizer_settings import WEIGHT_SUFFIX, check_quantizer_settings, loss_weights, quantizer_class
from vqbench.quantizers.base import Quantizer
from vqbench.stored_config import storable_config
from vqbench.training.loss_settings import check_loss_settings
from vqbench.training.module import (
    AdversarialSettings,
    CodebookHealthSettings,
    OptimizerSettings,
    TokenizerModule,
)
from vqbench.training.optimizer_settings import check_optimizer_settings
from vqbench.training.performance import check_performance_settings, speed_up
from vqbench.training.token_count import TokenCount
from vqbench.training.trainer_settings import check_trainer_settings

log = logging.getLogger("vqbench")


def _instantiate(node: Any, what: str, **kwargs) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        # RuntimeError: torch refusing a size (e.g. a negative channel count) while the module is built
        if isinstance(cause, (ValueError, TypeError, RuntimeError)):
            raise ConfigError(f"{what}: {cause}") from None
        raise


def check_config(cfg: DictConfig) -> None:
    """Checks every setting a run depends on before anything is built; each group's checks live beside the settings
    they check. Raises ConfigError naming the key and the valid range."""
    check_quantizer_settings(cfg)
    for node in ("encoder", "decoder"):
        check_argument_types(cfg.model.get(node), f"model.{node}")
    check_loss_settings(cfg.loss)
    check_optimizer_settings(cfg.optimizer, cfg.get("ema_decay"))
    check_data_settings(cfg.data)
    check_trainer_settings(cfg.get("trainer") or {})
    check_metrics_settings(cfg.get("metrics") or {})
    check_performance_settings(cfg.get("performance") or {})
    every = OmegaConf.select(cfg, "checkpoint.every_n_steps")
    if every is not None and not (is_int(every) and every >= 1):
        raise ConfigError(
            f"checkpoint.every_n_steps must be a positive number of steps (e.g. 1000) or null, got {every!r}"
        )
    if not (is_int(cfg.seed) and cfg.seed >= 0):
        raise ConfigError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    for key in ("evaluate_after_training", "skip_finished"):
        require_bool(key, cfg.get(key, False))
    require_folder("logger.save_dir", OmegaConf.select(cfg, "logger.save_dir"), "the run directory")


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
        pixel_mean=pixel_statistic(cfg.data, "pixel_mean"),
        pixel_std=pixel_statistic(cfg.data, "pixel_std"),
    )
    if for_training:
        performance = cfg.performance
        speed_up(
            module,
            channels_last=bool(performance.channels_last),
            compile=bool(performance.compile),
        )
    return module


def build_perceptual_loss(cfg: DictConfig) -> PerceptualLoss:
    """The LPIPS(VGG16) loss of ``loss.perceptual``, fed from the model's pixel space (``data.pixel_*``)."""
    settings = cfg.loss.perceptual
    return PerceptualLoss(
        pretrained=bool(settings.pretrained),
        pixel_mean=pixel_statistic(cfg.data, "pixel_mean"),
        pixel_std=pixel_statistic(cfg.data, "pixel_std"),
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
    rfid = rfid_settings(cfg.metrics)
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
