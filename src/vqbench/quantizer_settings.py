"""The ``quantizer.*`` and ``codebook.*`` settings: which Quantizer class a config names, the weights of its losses,
and the checks of both, read from the class's declarations (``vqbench.quantizers.base``), never from key names.

Kept out of ``vqbench/quantizers/`` because it resolves ``quantizer._target_`` with Hydra's ``get_class``; the
quantizers themselves import no Hydra.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Collection

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vqbench.argument_types import check_argument_types
from vqbench.checks import is_number, require_bool, require_positive_int
from vqbench.errors import ConfigError
from vqbench.quantizers.base import Quantizer
from vqbench.quantizers.fsq import format_levels, levels_for_codebook_size, levels_problem

log = logging.getLogger("vqbench")

#: ``quantizer.<name>_weight`` weighs the loss ``name`` that the quantizer returns.
WEIGHT_SUFFIX = "_weight"


def check_quantizer_settings(cfg: DictConfig) -> None:
    """``codebook.*`` and ``quantizer.*``: sizes, the codebook initialisation the class takes, one weight per loss it
    returns, and the types of its constructor arguments. FSQ levels are checked, with a valid fix, by
    ``reconcile_codebook_size``."""
    for key in ("codebook.size", "codebook.dim"):
        require_positive_int(key, OmegaConf.select(cfg, key))
    require_bool("codebook.l2_norm", cfg.codebook.l2_norm)
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
    # loss weights are not constructor arguments
    weights = tuple(key for key in cfg.quantizer if key.endswith(WEIGHT_SUFFIX))
    check_argument_types(cfg.quantizer, "quantizer", skip=(*weights, "levels"))


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
        if not is_number(value):
            raise ConfigError(f"quantizer.{key} must be a number, got {value!r}")
        weights[name] = float(value)
    return weights


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
