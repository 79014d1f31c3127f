"""vqbench: train, evaluate and benchmark visual tokenizers (image autoencoders with a discrete bottleneck).

``from vqbench import load_tokenizer`` loads a checkpoint as an image <-> token-id function (``vqbench.api``). It is
imported on first use, so ``import vqbench`` and ``from vqbench.quantizers import FSQ`` load neither Lightning nor
Hydra.
"""

__version__ = "0.1.0"

__all__ = ["ImageTokenizer", "load_tokenizer"]


def __getattr__(name: str):
    if name in __all__:
        from vqbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'vqbench' has no attribute {name!r}")
