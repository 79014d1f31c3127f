"""What a checkpoint stores of its run's config, and the format number it is written in.

A stored config holds values and references between its own keys (``${data.channels}``) only: a value that calls a
resolver (``${oc.env:...}``, ``${hydra:...}``, any registered one) is stored as what it resolved to when the run
started, and refused when a checkpoint holding one is read (vqbench.checkpoint, docs/checkpoints.md). Kept apart from
vqbench.checkpoint, which rebuilds models, so that the writers (the training module, convert) do not import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: The format this version writes (``vqbench_format`` in every checkpoint).
CHECKPOINT_FORMAT = 6
#: ``${a.b}``, ``${.a}``, ``${a[0]}``: a reference to another key of the config (no resolver, no nesting).
REFERENCE = re.compile(r"\$\{\.*[A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*\}")


def storable_config(cfg: DictConfig) -> str:
    """The YAML a checkpoint stores for a live config: references to other keys (``${data.channels}``) stay, so that
    an evaluation's override reaches every key that follows it; a value that calls a resolver (``${oc.select:...}``,
    ``${hydra:...}``) is stored as what it resolves to now, since a stored resolver is refused when read back."""
    container = OmegaConf.to_container(cfg, resolve=False)
    stored = OmegaConf.create(container)
    for key, value in config_leaves(container):
        if calls_resolver(value):
            resolved = OmegaConf.select(cfg, key, throw_on_missing=True)
            if isinstance(resolved, (DictConfig, ListConfig)):
                resolved = OmegaConf.to_container(resolved, resolve=True)
            OmegaConf.update(stored, key, resolved, merge=False)
    return OmegaConf.to_yaml(stored, resolve=False)


def calls_resolver(value: Any) -> bool:
    """Whether a stored value is an interpolation other than a plain reference to another key."""
    return isinstance(value, str) and "${" in value and "${" in REFERENCE.sub("", value)


def config_leaves(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of every entry of nested dicts and lists; a dict or list is itself yielded too, so that
    a key such as ``_args_`` is seen with its list."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield path, value
            if isinstance(value, (dict, list)):
                yield from config_leaves(value, path + ".")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path = f"{prefix[:-1]}[{index}]"
            yield path, value
            if isinstance(value, (dict, list)):
                yield from config_leaves(value, path + ".")
