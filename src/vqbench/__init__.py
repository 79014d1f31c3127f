"""vqbench: train, evaluate and benchmark visual tokenizers (image autoencoders with a discrete bottleneck)."""

__version__ = "0.1.0"
