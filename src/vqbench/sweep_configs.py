"""The ``sweep`` config group: every YAML file under the repository's ``sweeps/`` folder.

``python run.py -m +sweep=NAME`` composes ``sweeps/NAME.yaml``; a subfolder is a nested group
(``sweeps/imagenet128_fsq_rows/ema.yaml`` is ``sweep/imagenet128_fsq_rows=ema``). The files stay in the top-level
``sweeps/`` folder, where a reader looks for the tables, and are registered in Hydra's ConfigStore when this module
is imported: ``run.py``, ``vqbench.compose`` and the tests import it before composing, so each sees the same group
(Hydra's multirun launchers hand the ConfigStore to their workers). This replaces a ``conf/sweep`` symlink, which zip
downloads and Windows checkouts do not keep.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)\s*$")


def _package(text: str) -> str | None:
    """The ``# @package`` directive of a config file's header (Hydra reads it from the comment lines on top)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = _PACKAGE_HEADER.match(line)
        if match:
            return match.group(1)
    return None


def register_sweeps(folder: Path = SWEEPS_DIR) -> list[str]:
    """Stores each ``folder/**/NAME.yaml`` as ``sweep[/SUBFOLDER]/NAME``; returns the registered names."""
    store = ConfigStore.instance()
    names = []
    for path in sorted(folder.rglob("*.yaml")):
        relative = path.relative_to(folder)
        group = "/".join(("sweep", *relative.parent.parts))
        text = path.read_text(encoding="utf-8")
        store.store(name=relative.stem, node=OmegaConf.create(text), group=group, package=_package(text))
        names.append(f"{group}/{relative.stem}")
    return names


register_sweeps()
