"""Checks of the ``trainer.*`` settings (conf/trainer/default.yaml), named by their key before lightning.Trainer sees
them (Lightning's own messages for a string or a negative count do not name the key, or compare str with int)."""

from __future__ import annotations

import re
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException

from vqbench.checks import is_int, is_number, require_count
from vqbench.errors import ConfigError

#: Lightning's time-based val_check_interval ("DD:HH:MM:SS").
DURATION = re.compile(r"^\d+(:\d+){0,3}$")


def check_trainer_settings(trainer: Any) -> None:
    """``trainer`` is the config's trainer node; keys it lacks are Lightning's defaults and not checked."""
    steps = trainer.get("max_steps", -1)
    if not (is_int(steps) and (steps == -1 or steps >= 1)):
        raise ConfigError(
            f"trainer.max_steps must be a whole number of optimizer steps >= 1 (e.g. 10000), or -1 to stop by "
            f"trainer.max_epochs; got {steps!r}"
        )
    require_count("trainer.max_epochs", trainer.get("max_epochs"), -1, " (-1: no limit)", allow_none=True)
    if trainer.get("max_epochs") is not None and trainer.max_epochs == 0:
        raise ConfigError("trainer.max_epochs must be >= 1, or -1 / null for no limit; got 0")
    require_count("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), 1, " (steps)")
    require_count("trainer.num_sanity_val_steps", trainer.get("num_sanity_val_steps", 0), -1, " (-1: all)")
    require_count("trainer.check_val_every_n_epoch", trainer.get("check_val_every_n_epoch"), 1, "", True)
    require_count("trainer.num_nodes", trainer.get("num_nodes", 1), 1)
    if trainer.get("gradient_clip_val") is not None:
        raise ConfigError(
            "trainer.gradient_clip_val does not apply (training uses manual optimization); set optimizer.grad_clip="
            f"{trainer.gradient_clip_val} instead"
        )
    interval = trainer.get("val_check_interval")
    if not (
        interval is None
        or (is_int(interval) and interval >= 1)
        or (isinstance(interval, float) and 0 < interval <= 1)
        or (isinstance(interval, str) and DURATION.match(interval))
    ):
        raise ConfigError(
            "trainer.val_check_interval must be a number of training steps >= 1 (e.g. 1000), a fraction of an epoch "
            f"in (0, 1] (e.g. 1.0), or a duration DD:HH:MM:SS; got {interval!r}"
        )
    limit = trainer.get("limit_val_batches", 1.0)
    if not ((is_int(limit) and limit >= 0) or (is_number(limit) and isinstance(limit, float) and 0 <= limit <= 1)):
        raise ConfigError(
            "trainer.limit_val_batches must be a number of batches >= 0 (e.g. 8) or a fraction in [0, 1] "
            f"(e.g. 1.0); got {limit!r}"
        )


def lightning_trainer(**kwargs) -> L.Trainer:
    """lightning.Trainer, with its complaints about trainer.* values turned into a one-line ConfigError."""
    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise ConfigError(f"trainer: {error}") from None
