"""The evaluation preprocessing of a data config, for images that do not come from the dataset's own files.

``vqbench.load_tokenizer(...).preprocess`` and ``python -m vqbench.tokenize`` run every image through the transform
that the checkpoint's data config applies to its evaluation split, so a tokenizer sees exactly what it was evaluated
on. Each dataset's module defines it beside its split factory (``data.make_dataset._target_``), as
``evaluation_transform(settings, resolution)``: found there, with no list to keep. tests/test_dataset_contract.py
checks every conf/data/*.yaml for it, and tests/test_api.py that each dataset's evaluation split uses the same one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from omegaconf import DictConfig
from PIL import Image

from vqbench.errors import ConfigError

#: The function every split factory's module defines: (data.make_dataset settings, data.resolution) -> PIL transform.
HOOK = "evaluation_transform"


def evaluation_transform(data: DictConfig) -> Callable[[Image.Image], Image.Image]:
    """The PIL transform that the data config ``data`` applies to the images of its evaluation split."""
    settings = data.make_dataset
    target = str(settings.get("_target_", ""))
    module_name = target.rpartition(".")[0]
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"data.make_dataset._target_={target} cannot be imported: {error}") from None
    hook = getattr(module, HOOK, None)
    if not callable(hook):
        raise ConfigError(
            f"data.make_dataset._target_={target}: its module {module_name} defines no {HOOK}(settings, resolution), "
            "the evaluation preprocessing (docs/extending.md)"
        )
    return hook(settings, int(data.resolution))
