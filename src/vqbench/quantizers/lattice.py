"""Learnable-lattice vector quantization (LL-VQ), sparse and dense variants.

Khalil et al. 2023, "LL-VQ-VAE: Learnable Lattice Vector-Quantization for Efficient Representations". A diagonal
basis b in R^d replaces the codebook; the tokens are the integer vectors k, so the set of codes is unbounded
(``codebook_size`` is None; measure it with the effective codebook size, the number of distinct k over the data):

    k = round(z / b),   q = b * k,   codes = z + sg(q - z)
    L_codebook = MSE(q, sg(z))   (trains b),   L_commitment = MSE(sg(q), z)   (beta = 0.25)
    L_negative_basis_norm = -sum_i |b_i|        (weight gamma: +1 sparse lattice, -1 dense lattice)

Sparse: b ~ U(-B, B), B = 1 / (K^(1/d) - 1) (9.767 for K = 512, d = 64), and gamma = +1 pushes |b| up, i.e. a
coarse lattice with few distinct tokens. Dense: b ~ U(-1, 1) and gamma = -1 drives b to 0, which makes the bottleneck
effectively continuous; it is kept because the LL-VQ table reports it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, straight_through

#: |b_i| below this is treated as this (keeping its sign) so z / b stays finite.
MIN_BASIS = 1e-8


def sparse_init_bound(codebook_size: int, dim: int) -> float:
    """B = 1 / (K^(1/d) - 1): a lattice cell of that side over [-1, 1]^d holds about K points."""
    return 1.0 / (codebook_size ** (1.0 / dim) - 1.0)


class LatticeQuantizer(Quantizer):
    codebook_size = None
    loss_names = ("codebook", "commitment", "negative_basis_norm")
    identity_gradient = True

    def __init__(self, dim: int, codebook_size: int = 512, init_bound: float | None = None):
        super().__init__(dim)
        bound = sparse_init_bound(codebook_size, dim) if init_bound is None else float(init_bound)
        if not bound > 0:
            raise ValueError(f"quantizer.init_bound must be positive, got {bound}")
        self.init_bound = bound
        self.basis = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))

    def safe_basis(self) -> Tensor:
        b = self.basis
        sign = torch.where(b < 0, -1.0, 1.0)
        return torch.where(b.abs() < MIN_BASIS, sign * MIN_BASIS, b)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        basis = self.safe_basis()
        k = torch.round(z.detach() / basis.detach())
        q = basis * k
        losses = {
            "codebook": F.mse_loss(q, z.detach()),
            "commitment": F.mse_loss(q.detach(), z),
            "negative_basis_norm": -self.basis.abs().sum(),
        }
        return straight_through(z, q), k.long(), losses

    def lookup(self, indices: Tensor) -> Tensor:
        return self.safe_basis() * indices.float()


class DenseLatticeQuantizer(LatticeQuantizer):
    """LL-VQ's dense variant: init U(-1, 1); with weight gamma = -1 on the norm term the basis shrinks toward 0."""

    def __init__(self, dim: int, codebook_size: int = 512, init_bound: float = 1.0):
        super().__init__(dim, codebook_size=codebook_size, init_bound=init_bound)
