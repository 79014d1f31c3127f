"""Checks of the ``loss.*`` settings (conf/loss/): the reconstruction loss, the perceptual loss's input range, the
adversarial terms and the discriminator, and every weight."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vqbench.checks import is_int, is_number
from vqbench.errors import ConfigError
from vqbench.models.discriminator import INITS


def check_loss_settings(loss: Any) -> None:
    """``loss`` is the config's loss node."""
    if loss.reconstruction not in ("mse", "l1"):
        raise ConfigError(f"loss.reconstruction must be one of mse, l1; got {loss.reconstruction!r}")
    adversarial = loss.get("adversarial")
    for key in ("start_step", "discriminator_start_step"):
        value = adversarial.get(key, 0) if adversarial is not None else 0
        if not (is_int(value) and value >= 0):
            raise ConfigError(f"loss.adversarial.{key} must be a step number >= 0, got {value!r}")
    if adversarial is not None:
        _check_adversarial(adversarial)
    discriminator = loss.get("discriminator")
    if discriminator is not None and discriminator.get("init", "taming") not in INITS:
        raise ConfigError(f"loss.discriminator.init must be one of {', '.join(INITS)}; got {discriminator.init!r}")
    input_range = OmegaConf.select(loss, "perceptual.input_range")
    if input_range is not None:
        values = list(input_range) if OmegaConf.is_list(input_range) else None
        if values is None or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
            raise ConfigError(
                f"loss.perceptual.input_range must be [low, high], e.g. [-1, 1] (LPIPS's own) or [0, 1]; "
                f"got {input_range!r}"
            )
    _check_weights(loss)


def _check_adversarial(adversarial: Any) -> None:
    if adversarial.loss not in ("hinge", "non_saturating"):
        raise ConfigError(f"loss.adversarial.loss must be hinge or non_saturating, got {adversarial.loss!r}")
    for key in ("weight", "lecam_weight"):
        value = adversarial.get(key, 0.0)
        if not (is_number(value) and value >= 0):
            raise ConfigError(f"loss.adversarial.{key} must be a number >= 0, got {value!r}")
    recompute = adversarial.get("recompute_reconstruction", False)
    if not isinstance(recompute, bool):
        raise ConfigError(f"loss.adversarial.recompute_reconstruction must be true or false, got {recompute!r}")
    decay = adversarial.get("lecam_decay", 0.999)
    if not (is_number(decay) and 0 <= decay < 1):
        raise ConfigError(f"loss.adversarial.lecam_decay must be in [0, 1) (e.g. 0.999), got {decay!r}")


def _check_weights(loss: Any, prefix: str = "loss") -> None:
    """Every ``*weight`` of the loss node is a number (a string fails in float() while the module is built)."""
    for key, value in loss.items():
        if isinstance(value, DictConfig):
            _check_weights(value, f"{prefix}.{key}")
        elif str(key).endswith("weight") and not is_number(value):
            raise ConfigError(f"{prefix}.{key} must be a number, got {value!r}")
