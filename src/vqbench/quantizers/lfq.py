"""Lookup-free quantization (LFQ).

Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation" (MAGVIT-v2), sec. 3.1.
Each of ``bits`` channels is quantized to its sign; the codebook {-1, +1}^bits is implicit, K = 2^bits:

    q = sign(z) (0 -> +1),   codes = z + sg(q - z),   index = sum_i [q_i > 0] 2^i
    L_commitment = MSE(z, sg(q))                                      (weight 0.25)
    L_per_sample_entropy = mean_i H(p_i),  L_codebook_entropy = -H(mean_i p_i)   (weights 0.1 each)
    with p_i = softmax(-||z_i - c||^2 / tau) = softmax(s <z_i, c>) over the 2^bits implicit codes, tau = 0.01,
    logit scale s = 2 / tau (``entropy_logit_scale``), and ``codebook_entropy_epsilon`` inside the log of the codebook
    entropy (``lfq_entropy.codebook_entropy``).

An original that writes the logits as k <z, c> / T has the same p_i with entropy_temperature = 2 T / k.
The entropy terms are computed exactly through the factorisation of p_i over the bits (``lfq_entropy``): O(N bits)
for the per-sample term and one (2^(bits/2) x N) @ (N x 2^(bits/2)) product for the code distribution, so
bits = 14..18 never needs an N x 2^bits matrix. ``codebook.dim`` vectors are projected to ``bits`` channels and back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.fsq import projection
from vqbench.quantizers.lfq_entropy import lfq_entropy_terms, logit_scale_for_temperature, sign_codes


def bits_for_codebook_size(codebook_size: int) -> int:
    bits = int(round(math.log2(codebook_size))) if codebook_size > 1 else 0
    if bits < 1 or 2**bits != codebook_size:
        raise ValueError(f"LFQ needs codebook.size to be a power of two (2^bits), got {codebook_size}")
    return bits


class LookupFreeQuantizer(Quantizer):
    loss_names = ("commitment", "per_sample_entropy", "codebook_entropy")
    optional_losses = {"compute_entropy": ("per_sample_entropy", "codebook_entropy")}

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
        self.identity_gradient = self.bits == dim  # no projections: codes = z + sg(sign(z) - z)

    @property
    def entropy_logit_scale(self) -> float:
        """s in p(c | z) = softmax_c(s <z, c>): 2 / entropy_temperature, i.e. softmax_c(-||z - c||^2 / tau)."""
        return logit_scale_for_temperature(self.entropy_temperature)

    def implicit_codebook(self, device: torch.device) -> Tensor:
        """All 2^bits codes as a 2^bits x bits matrix of +-1, row k being the code of index k."""
        return sign_codes(self.bits, device)

    @property
    def bits_per_position(self) -> float:
        """The sign bits of a token (Yu et al. 2023, arXiv:2310.05737: K = 2^bits)."""
        return float(self.bits)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        z = self.project_in(z)
        positive = z >= 0
        q = torch.where(positive, 1.0, -1.0)
        indices = (positive.long() * self._powers).sum(1)
        losses = {"commitment": F.mse_loss(z, q)}
        if self.compute_entropy and self.training:
            per_sample, codebook_term = lfq_entropy_terms(
                z, self.entropy_logit_scale, codebook_entropy_epsilon=self.codebook_entropy_epsilon
            )
            losses["per_sample_entropy"] = per_sample
            losses["codebook_entropy"] = codebook_term
        return self.project_out(straight_through(z, q)), indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        bits = (indices.unsqueeze(1) // self._powers) % 2
        return self.project_out(bits.float() * 2 - 1)
