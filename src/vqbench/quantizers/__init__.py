"""Quantizers: nn.Modules with one shared contract (see ``base.py``). No Lightning, no Hydra."""

from vqbench.quantizers.base import Quantizer, QuantizerOutput
from vqbench.quantizers.bsq import BinarySphericalQuantizer
from vqbench.quantizers.ema import EMAVectorQuantizer
from vqbench.quantizers.fsq import FSQ, SimpleFSQ
from vqbench.quantizers.gumbel import GumbelQuantizer
from vqbench.quantizers.ibq import IndexBackpropagationQuantizer
from vqbench.quantizers.lattice import DenseLatticeQuantizer, LatticeQuantizer
from vqbench.quantizers.lfq import LookupFreeQuantizer
from vqbench.quantizers.residual import ResidualVectorQuantizer
from vqbench.quantizers.simvq import SimVQ
from vqbench.quantizers.vq import VectorQuantizer

__all__ = [
    "BinarySphericalQuantizer",
    "IndexBackpropagationQuantizer",
    "FSQ",
    "DenseLatticeQuantizer",
    "EMAVectorQuantizer",
    "GumbelQuantizer",
    "LatticeQuantizer",
    "LookupFreeQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVectorQuantizer",
    "SimVQ",
    "SimpleFSQ",
    "VectorQuantizer",
]
