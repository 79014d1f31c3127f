"""Checks of the ``metrics.*`` settings (conf/config.yaml), before a training or an evaluation starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vqbench.checks import require_bool, require_count, require_folder
from vqbench.errors import ConfigError

#: Switches of conf/config.yaml's metrics node.
#: metrics.rfid is a node (protocol, cache, cache_dir) or a switch; build.rfid_settings checks it.
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


def reconstructions_folder(metrics: Any, out: Path) -> Path:
    """Where ``metrics.save_reconstructions=true`` writes: ``metrics.reconstructions_dir``, or out/reconstructions."""
    folder = metrics.get("reconstructions_dir")
    return Path(folder).expanduser() if folder else Path(out) / "reconstructions"
