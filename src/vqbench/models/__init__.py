"""Architectures (nn.Modules only: no Lightning, no Hydra)."""

from vqbench.models.simple_cnn import SimpleCNNDecoder, SimpleCNNEncoder
from vqbench.models.tokenizer import Tokenizer

__all__ = ["SimpleCNNDecoder", "SimpleCNNEncoder", "Tokenizer"]
