"""Checks of the ``optimizer.*`` settings (conf/optimizer/) and ``ema_decay``, named by their key here rather than by
torch's ValueError in the middle of fit."""

from __future__ import annotations

from typing import Any

from vqbench.checks import is_number
from vqbench.errors import ConfigError
from vqbench.training.module import OPTIMIZERS, SCHEDULES


def check_optimizer_settings(optimizer: Any, ema_decay: Any = None) -> None:
    """``optimizer`` is the config's optimizer node; ``ema_decay`` the weight EMA's decay (null: none)."""
    name = optimizer.get("name", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    lr = optimizer.lr
    if not (is_number(lr) and lr > 0):
        raise ConfigError(f"optimizer.lr must be a positive number (e.g. 4e-4), got {lr!r}")
    betas = optimizer.betas
    if len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1) (e.g. [0.9, 0.999]), got {list(betas)!r}")
    if not (is_number(optimizer.weight_decay) and optimizer.weight_decay >= 0):
        raise ConfigError(f"optimizer.weight_decay must be a number >= 0, got {optimizer.weight_decay!r}")
    clip = optimizer.grad_clip
    if clip is not None and not (is_number(clip) and clip > 0):
        raise ConfigError(f"optimizer.grad_clip must be a positive gradient norm (e.g. 1.0) or null, got {clip!r}")
    warmup = optimizer.get("warmup_fraction", 0.0)
    if not (is_number(warmup) and 0 <= warmup < 1):
        raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1) (e.g. 0.01), got {warmup!r}")
    if optimizer.get("schedule", "constant") not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule must be one of {', '.join(SCHEDULES)}; got {optimizer.schedule!r}")
    schedule_steps = optimizer.get("schedule_steps")
    if schedule_steps is not None and (not isinstance(schedule_steps, int) or schedule_steps < 1):
        raise ConfigError(
            f"optimizer.schedule_steps must be a positive number of steps or null (trainer.max_steps), "
            f"got {schedule_steps!r}"
        )
    gamma = optimizer.get("gamma", 1.0)
    if not is_number(gamma) or gamma < 0:
        raise ConfigError(f"optimizer.gamma (the per-epoch lr factor) must be a number >= 0, got {gamma!r}")
    if ema_decay is not None and not (is_number(ema_decay) and 0 < ema_decay < 1):
        raise ConfigError(f"ema_decay must be in (0, 1) (e.g. 0.9999) or null, got {ema_decay!r}")
