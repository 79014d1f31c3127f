"""Checks of the ``metrics.*`` settings (conf/config.yaml), before a training or an evaluation starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vqbench.checks import is_int, is_number, require_bool, require_count, require_folder
from vqbench.errors import ConfigError
from vqbench.metrics.reconstruction import SSIM_WINDOWS

#: Switches of conf/config.yaml's metrics node.
#: metrics.rfid is a node (protocol, cache, cache_dir) or a switch; rfid_settings reads and checks it.
SWITCHES = ("use_ema", "lpips", "lpips_pretrained", "save_reconstructions", "loss_terms")
#: Where ``metrics.save_reconstructions=true`` writes when ``metrics.reconstructions_dir`` is null.
RECONSTRUCTIONS_DEFAULT = "reconstructions/ in the output folder"


def check_metrics_settings(metrics: Any) -> None:
    """``metrics`` is the config's metrics node; keys an older config lacks are not checked."""
    require_count("metrics.grid_images", metrics.get("grid_images", 8), 0, " (images in the reconstruction grid)")
    for key in SWITCHES:
        if key in metrics:
            require_bool(f"metrics.{key}", metrics[key])
    weights = metrics.get("inception_weights")
    # Not required to exist: a checkpoint's config may name a file of another machine (rFID is then reported as not
    # computed, naming the file).
    if weights is not None and (not isinstance(weights, str) or Path(weights).expanduser().is_dir()):
        raise ConfigError(
            "metrics.inception_weights must be the path of the file weights-inception-2015-12-05-6726825d.pth, or "
            f"null; got {weights!r}"
        )
    require_folder("metrics.reconstructions_dir", metrics.get("reconstructions_dir"), RECONSTRUCTIONS_DEFAULT)
    window = metrics.get("usage_window")
    if window is not None and not (is_int(window) and window >= 1):
        raise ConfigError(
            f"metrics.usage_window must be a positive number of tokens (e.g. 65536) or null, got {window!r}"
        )
    if metrics.get("ssim_window", "uniform") not in SSIM_WINDOWS:
        raise ConfigError(f"metrics.ssim_window must be one of {', '.join(SSIM_WINDOWS)}, got {metrics.ssim_window!r}")
    rfid_settings(metrics)  # a ConfigError for an unknown protocol, before any work
    _check_codebook_health(metrics)
    splits = metrics.get("effective_size_splits")
    if splits is not None and (
        not OmegaConf.is_list(splits) or not splits or any(split not in ("train", "val", "test") for split in splits)
    ):
        raise ConfigError(
            f"metrics.effective_size_splits must be a list of train, val, test (e.g. [train, val]), got {splits!r}"
        )


def rfid_settings(metrics: Any) -> dict[str, Any] | None:
    """``metrics.rfid`` as {protocol, cache, cache_dir}, or None when rFID is off (``metrics.rfid=false``).
    ``metrics.rfid=true`` means the default protocol."""
    from vqbench.metrics.rfid_protocols import DEFAULT_PROTOCOL, PROTOCOLS

    node = metrics.get("rfid", True)
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


def _check_codebook_health(metrics: Any) -> None:
    steps = metrics.get("health_steps", 1000)
    if not (is_int(steps) and steps >= 1):
        raise ConfigError(f"metrics.health_steps must be a positive number of training steps, got {steps!r}")
    fraction = metrics.get("usage_warning_fraction", 0.1)
    if not is_number(fraction) or not 0 <= fraction <= 1:
        raise ConfigError(f"metrics.usage_warning_fraction must be in [0, 1] (0: never warn), got {fraction!r}")
    after = metrics.get("usage_warning_after", 0)
    if not (is_int(after) and after >= 0):
        raise ConfigError(f"metrics.usage_warning_after must be a number of training steps >= 0, got {after!r}")


def reconstructions_folder(metrics: Any, out: Path) -> Path:
    """Where ``metrics.save_reconstructions=true`` writes: ``metrics.reconstructions_dir``, or out/reconstructions."""
    folder = metrics.get("reconstructions_dir")
    return Path(folder).expanduser() if folder else Path(out) / "reconstructions"
