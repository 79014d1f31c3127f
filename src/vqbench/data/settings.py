"""Checks of the ``data.*`` settings every data config has (conf/data/), before anything is read."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vqbench.checks import is_number, require_bool, require_count, require_folder, require_positive_int
from vqbench.errors import ConfigError

#: data.make_dataset.* keys that count images (conf/data/sample.yaml).
LENGTH_KEYS = ("train_length", "val_length", "test_length")


def _resolved(data: Any, key: str) -> Any:
    """``data[key]``, or None where it interpolates something only a running job has (the llvq sweep's data.root reads
    ``hydra:runtime.choices``); that value is checked when the data is opened."""
    try:
        return data.get(key)
    except OmegaConfBaseException:
        return None


def check_data_settings(data: Any) -> None:
    """``data`` is the config's data node (a DictConfig); keys an older config lacks are not checked."""
    for key in ("batch_size", "resolution", "channels"):
        require_positive_int(f"data.{key}", data.get(key))
    require_count("data.num_workers", data.get("num_workers", 0), 0, " (loader processes; 0: load in the main one)")
    require_count("data.eval_batch_size", data.get("eval_batch_size"), 1, " (images per evaluation batch)", True)
    for key in ("flip", "cache", "skip_corrupt"):
        require_bool(f"data.{key}", data.get(key, False))
    root = _resolved(data, "root")
    if root is not None and (not isinstance(root, str) or not root):
        raise ConfigError(f"data.root must be a folder path, got {root!r}")
    require_folder("data.cache_dir", _resolved(data, "cache_dir"), "ROOT/.vqbench_cache")
    make_dataset = data.get("make_dataset") or {}
    for key in LENGTH_KEYS:
        if key in make_dataset:
            require_count(f"data.make_dataset.{key}", make_dataset[key], 1, " (images in the split)")
    if "center_crop" in make_dataset:
        require_bool("data.make_dataset.center_crop", make_dataset.center_crop)
    if "seed" in make_dataset:
        require_count("data.make_dataset.seed", make_dataset.seed, 0, " (the split's seed)")
    fraction = make_dataset.get("holdout_fraction", 0.5)
    if not (is_number(fraction) and 0 < fraction < 1):
        raise ConfigError(f"data.make_dataset.holdout_fraction must be in (0, 1), got {fraction!r}")
    for key in ("pixel_mean", "pixel_std"):
        value = pixel_statistic(data, key)
        values = value if isinstance(value, list) else [value]
        numbers = all(is_number(v) for v in values)
        if not numbers or len(values) not in (1, data.channels) or (key == "pixel_std" and min(values) <= 0):
            raise ConfigError(
                f"data.{key} must be a{' positive' if key == 'pixel_std' else ''} number or a list of "
                f"data.channels={data.channels} of them, got {value!r}"
            )


def pixel_statistic(data: Any, key: str) -> float | list[float]:
    """``data.pixel_mean`` / ``data.pixel_std`` (0.5, i.e. [-1, 1] model space, where a data config has none)."""
    value = data.get(key, 0.5)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
