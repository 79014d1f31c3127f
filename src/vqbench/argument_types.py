"""The type of each constructor argument a config node gives (``model.encoder.*``, ``quantizer.*``), checked against
the class's own annotations before anything is built, so that ``quantizer.dead_code_threshold=abc`` is one line naming
the key instead of a TypeError at the first training step.

Only vqbench's own classes are looked at (a ``_target_`` under ``vqbench.``): their modules are imported, nothing is
called. Any other target is left to Hydra and to the checks of whoever builds it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from typing import Any

from omegaconf import DictConfig, ListConfig

from vqbench.checks import is_int, is_number
from vqbench.errors import ConfigError

#: Integer arguments that count something (channels, widths, sizes): a value below 1 builds nothing.
SIZE_NAMES = ("channels", "dim", "size", "layers", "depth", "bits", "blocks")
#: Keys of a node that are Hydra's, not constructor arguments.
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def _vqbench_class(target: Any) -> Any:
    if not isinstance(target, str) or not target.startswith("vqbench.") or "." not in target:
        return None
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _hints(target: Any) -> dict[str, Any]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not evaluate: nothing to check against
        return {}


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` has the annotated type; None when the annotation is not one of the plain kinds checked."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, argument) for argument in arguments]
        return None if None in results and not any(results) else any(r for r in results if r is not None)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple, ListConfig)):
            return False
        inner = arguments[0] if arguments else None
        checks = [_matches(item, inner) for item in value] if inner in (int, float) else []
        return all(c is not False for c in checks)
    return None


def _describe(hint: Any) -> str:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [_describe(a) for a in arguments if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in arguments else "")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, typing.Sequence) and arguments and arguments[0] in names:
        return f"a list of {names[arguments[0]].split(' ', 1)[1]}s"
    return "a list" if origin in (list, tuple) else str(hint)


def check_argument_types(node: Any, key: str, skip: tuple[str, ...] = ()) -> None:
    """Raises ConfigError for the first argument of ``node`` (config key ``key``) whose value does not have the type
    its vqbench class annotates. ``skip``: keys that are not constructor arguments (e.g. ``*_weight``)."""
    if not isinstance(node, DictConfig):
        return
    target = _vqbench_class(node.get("_target_"))
    if target is None:
        return
    hints = _hints(target)
    for name in node:
        if name in HYDRA_KEYS or name in skip or name not in hints:
            continue
        value = node[name]
        if _matches(value, hints[name]) is False:
            raise ConfigError(f"{_source(node, key, name)} must be {_describe(hints[name])}, got {value!r}")
        if name.endswith(SIZE_NAMES) and is_int(value) and value < 1:
            raise ConfigError(f"{_source(node, key, name)} must be a positive integer, got {value}")


def _source(node: DictConfig, key: str, name: str) -> str:
    """The key the user sets: ``model.latent_channels`` for an argument written ``${model.latent_channels}``."""
    raw = node._get_node(name)._value()
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else f"{key}.{name}"
