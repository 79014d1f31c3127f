"""Small checks of one config value each, raising a ConfigError that names the key, the value and what is expected.

The per-group checks (``vqbench.data.settings``, ``vqbench.training.trainer_settings``, ``vqbench.metrics.settings``)
are built from these, beside the settings they check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqbench.errors import ConfigError


def is_int(value: Any) -> bool:
    """A whole number as Hydra parses it (``4``), not a bool, a float (``4.0``) or a string (``"four"``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_count(key: str, value: Any, minimum: int = 0, what: str = "", allow_none: bool = False) -> None:
    """``value`` must be an integer >= ``minimum`` (or null with ``allow_none``); ``what`` describes it."""
    if (value is None and allow_none) or (is_int(value) and value >= minimum):
        return
    null = " or null" if allow_none else ""
    raise ConfigError(f"{key} must be an integer >= {minimum}{what}{null}, got {value!r}")


def require_positive_int(key: str, value: Any) -> None:
    if not (is_int(value) and value >= 1):
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def require_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def require_folder(key: str, value: Any, default: str) -> None:
    """``value`` names a folder (that need not exist yet), or is null (``default`` says what null means)."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a folder path or null ({default}), got {value!r}")
    path = Path(value).expanduser()
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"{key}={value}: {blocker} is a file, not a folder; give a folder path (or null: {default})")
