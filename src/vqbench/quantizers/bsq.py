"""Binary spherical quantization (BSQ): the sign of a unit vector, scaled back onto the unit sphere.

Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical Quantization", arXiv 2406.07548, sec. 3.2-3.3;
zhaoyue-zephyrus/bsq-vit ``transcoder/models/quantizer/bsq.py`` (``BinarySphericalQuantizer``, commit 37d212d) with
``l2_norm=True`` and ``post_q_l2_norm=True``, as all its configs. ``codebook.dim`` vectors are projected to ``bits``
channels (L = bits; identities when codebook.dim = bits, the original's own Linear layers play that part) and

    u = z / ||z||,   q = sign(u) / sqrt(L)  (sign(0) = -1),   codes = (u + sg(sign(u) - u)) / sqrt(L)
    index = sum_j [u_j > 0] 2^(L-1-j)                                          (first channel = most significant bit)
    commitment         = mean_i ||sg(q_i) - u_i||^2         (a sum over the channels; beta = 0 in its configs)
    per_sample_entropy = mean_i H(p_i) / T                  weight gamma0 = 1, times its loss's 0.1
    codebook_entropy   = -sum_g H(mean_i p_i^g) / T         weight gamma = 1, times its loss's 0.1
    p_i^g(c) = softmax_c(2 (1/T) <u_i^g, c / sqrt(L)>) over the 2^G codes c of group g of G channels,  T = 1 / inv_T

The straight-through gradient is scaled by 1 / sqrt(L) too, as in the original. The entropies are the original's
"group" form (``cb_entropy_compute='group'``): the per-sample entropy factorises over the channels
(``lfq_entropy.per_sample_entropy``, exact; the original's ``log(p + 1e-8)`` differs from it by at most 1e-8 per
channel and code), the codebook entropy is the sum of each group's entropy (``group_size`` = G; ``null`` = all L
channels, the exact entropy of the code distribution), each through ``lfq_entropy.code_distribution`` and
``codebook_entropy(epsilon=1e-8)``, the original's log(p + 1e-8). ``persample_entropy_compute``: ``group`` or
``analytical`` as in the original, where ``analytical`` (its 256-px configs) computes the per-sample entropy from
per-channel probabilities (the same value) *and* then averages those per-channel probabilities for the codebook
entropy, which is therefore the sum of the L single-channel entropies whatever ``group_size`` says (b18g2 = b18g18).
Not carried over: the original's hard (count-based) entropy (``soft_entropy=False``), and its loss's codebook-weight
ramp (3x over the first 2000 steps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vqbench.quantizers.base import Quantizer
from vqbench.quantizers.fsq import projection
from vqbench.quantizers.lfq import bits_for_codebook_size
from vqbench.quantizers.lfq_entropy import code_distribution, codebook_entropy, per_sample_entropy

#: eps inside log(p + eps) of the original's ``get_entropy``
BSQ_ENTROPY_EPSILON = 1e-8


class BinarySphericalQuantizer(Quantizer):
    loss_names = ("commitment", "per_sample_entropy", "codebook_entropy")
    optional_losses = {"compute_entropy": ("per_sample_entropy", "codebook_entropy")}

    def __init__(
        self,
        dim: int,
        bits: int | None = None,
        codebook_size: int | None = None,
        group_size: int | None = None,
        persample_entropy_compute: str = "group",
        compute_entropy: bool = True,
        inv_temperature: float = 1.0,
        codebook_entropy_epsilon: float = BSQ_ENTROPY_EPSILON,
    ):
        super().__init__(dim)
        self.bits = int(bits) if bits else bits_for_codebook_size(codebook_size)
        if codebook_size is not None and bits and 2**self.bits != codebook_size:
            raise ValueError(f"quantizer.bits={bits} gives 2^{bits} codes but codebook.size={codebook_size}")
        self.group_size = int(group_size) if group_size else self.bits
        if self.bits % self.group_size != 0:
            raise ValueError(f"quantizer.group_size={group_size} must divide the {self.bits} bits")
        if persample_entropy_compute not in ("group", "analytical"):
            raise ValueError(
                f"quantizer.persample_entropy_compute must be group or analytical, got {persample_entropy_compute!r}"
            )
        if inv_temperature <= 0:
            raise ValueError(f"quantizer.inv_temperature must be > 0, got {inv_temperature}")
        self.codebook_size = 2**self.bits
        self.persample_entropy_compute = persample_entropy_compute
        self.compute_entropy = compute_entropy
        self.inv_temperature = inv_temperature
        self.codebook_entropy_epsilon = codebook_entropy_epsilon
        self.register_buffer("_powers", 2 ** torch.arange(self.bits - 1, -1, -1), persistent=False)
        self.project_in = projection(dim, self.bits)
        self.project_out = projection(self.bits, dim)

    @property
    def scale(self) -> float:
        """1 / sqrt(L): the codes lie on the unit sphere."""
        return 1.0 / math.sqrt(self.bits)

    @property
    def entropy_logit_scale(self) -> float:
        """s in p(c | u) = softmax_c(s <u, c>) over c in {-1, +1}^G: 2 inv_T / sqrt(L)."""
        return 2.0 * self.inv_temperature * self.scale

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        u = F.normalize(self.project_in(z), dim=1)
        positive = u > 0
        signs = torch.where(positive, 1.0, -1.0)
        q = (u + (signs - u).detach()) * self.scale
        indices = (positive.long() * self._powers).sum(1)
        losses = {"commitment": (q.detach() - u).pow(2).sum(1).mean()}
        if self.compute_entropy and self.training:
            s = self.entropy_logit_scale
            group_size = 1 if self.persample_entropy_compute == "analytical" else self.group_size
            entropy = sum(
                codebook_entropy(code_distribution(group, s), self.codebook_entropy_epsilon)
                for group in u.split(group_size, dim=1)
            )
            losses["per_sample_entropy"] = per_sample_entropy(u, s) / self.inv_temperature
            losses["codebook_entropy"] = -entropy / self.inv_temperature
        return self.project_out(q), indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        bits = (indices.unsqueeze(1) // self._powers) % 2
        return self.project_out((bits.float() * 2 - 1) * self.scale)


__all__ = ["BSQ_ENTROPY_EPSILON", "BinarySphericalQuantizer"]
