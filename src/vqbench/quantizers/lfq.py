"""Lookup-free quantization (LFQ).

Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation" (MAGVIT-v2), sec. 3.1.
Each of ``bits`` channels is quantized to its sign; the codebook {-1, +1}^bits is implicit, K = 2^bits:

    q = sign(z) (0 -> +1),   codes = z + sg(q - z),   index = sum_i [q_i > 0] 2^i
    L_commitment = MSE(z, sg(q))                                      (weight 0.25)
    L_per_sample_entropy = mean_i H(p_i),  L_codebook_entropy = -H(mean_i p_i)   (weights 0.1 each)
    with p_i = softmax(-||z_i - c||^2 / tau) over the 2^bits implicit codes, tau = 0.01, and
    ``codebook_entropy_epsilon`` inside the log of the codebook entropy (``distances.entropy_terms``).

The entropy terms walk over the rows in chunks (``distances.entropy_terms``), so bits = 14..18 never needs an
N x 2^bits matrix at once. ``codebook.dim`` vectors are projected to ``bits`` channels and back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.distances import entropy_terms
from vqbench.quantizers.fsq import projection


def bits_for_codebook_size(codebook_size: int) -> int:
    bits = int(round(math.log2(codebook_size))) if codebook_size > 1 else 0
    if bits < 1 or 2**bits != codebook_size:
        raise ValueError(f"LFQ needs codebook.size to be a power of two (2^bits), got {codebook_size}")
    return bits


class LookupFreeQuantizer(Quantizer):
    def __init__(
        self,
        dim: int,
        bits: int | None = None,
        codebook_size: int | None = None,
        compute_entropy: bool = True,
        entropy_temperature: float = 0.01,
        codebook_entropy_epsilon: float = 0.0,
    ):
        super().__init__(dim)
        self.bits = int(bits) if bits else bits_for_codebook_size(codebook_size)
        if codebook_size is not None and bits and 2**self.bits != codebook_size:
            raise ValueError(f"quantizer.bits={bits} gives 2^{bits} codes but codebook.size={codebook_size}")
        self.codebook_size = 2**self.bits
        self.compute_entropy = compute_entropy
        self.entropy_temperature = entropy_temperature
        self.codebook_entropy_epsilon = codebook_entropy_epsilon
        self.register_buffer("_powers", 2 ** torch.arange(self.bits), persistent=False)
        self.project_in = projection(dim, self.bits)
        self.project_out = projection(self.bits, dim)

    def implicit_codebook(self, device: torch.device) -> Tensor:
        """All 2^bits codes as a 2^bits x bits matrix of +-1, row k being the code of index k."""
        bits = (torch.arange(self.codebook_size, device=device).unsqueeze(1) // self._powers.to(device)) % 2
        return bits.float() * 2 - 1

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        z = self.project_in(z)
        positive = z >= 0
        q = torch.where(positive, 1.0, -1.0)
        indices = (positive.long() * self._powers).sum(1)
        losses = {"commitment": F.mse_loss(z, q)}
        if self.compute_entropy and self.training:
            per_sample, codebook_term = entropy_terms(
                z,
                self.implicit_codebook(z.device),
                self.entropy_temperature,
                codebook_entropy_epsilon=self.codebook_entropy_epsilon,
            )
            losses["per_sample_entropy"] = per_sample
            losses["codebook_entropy"] = codebook_term
        return self.project_out(straight_through(z, q)), indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        bits = (indices.unsqueeze(1) // self._powers) % 2
        return self.project_out(bits.float() * 2 - 1)
