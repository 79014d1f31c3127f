"""Architectures (nn.Modules only: no Lightning, no Hydra)."""

from vqbench.models.discriminator import PatchDiscriminator
from vqbench.models.fsq_cnn import FSQCNNDecoder, FSQCNNEncoder
from vqbench.models.lattice_cnn import LatticeCNNDecoder, LatticeCNNEncoder
from vqbench.models.simple_cnn import SimpleCNNDecoder, SimpleCNNEncoder
from vqbench.models.tokenizer import Tokenizer
from vqbench.models.vqgan import VQGANDecoder, VQGANEncoder

__all__ = [
    "FSQCNNDecoder",
    "FSQCNNEncoder",
    "LatticeCNNDecoder",
    "LatticeCNNEncoder",
    "PatchDiscriminator",
    "SimpleCNNDecoder",
    "SimpleCNNEncoder",
    "Tokenizer",
    "VQGANDecoder",
    "VQGANEncoder",
]
