"""Quantizers: nn.Modules with one shared contract (see ``base.py``). No Lightning, no Hydra."""

from vqbench.quantizers.base import Quantizer, QuantizerOutput
from vqbench.quantizers.ema import EMAVectorQuantizer
from vqbench.quantizers.fsq import FSQ, SimpleFSQ
from vqbench.quantizers.vq import VectorQuantizer

__all__ = ["FSQ", "EMAVectorQuantizer", "Quantizer", "QuantizerOutput", "SimpleFSQ", "VectorQuantizer"]
