"""SimVQ: a frozen random codebook seen through one trainable linear map.

Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer". The stored
codes C ~ N(0, 1/d) (std d^-1/2) never change; the codebook in use is W(C) = C W^T + b, so every gradient step on W
moves *all* codes at once and none can die:

    k_i = argmin_k ||z_i - W(C)_k||^2,   q_i = W(C)_{k_i},   codes = z + sg(q - z)
    L_codebook = MSE(sg(z), q)   (trains W),   L_commitment = MSE(z, sg(q))   (weight 0.25)

``rotation_trick``: the gradient estimator of ``rotation.rotate_onto`` instead of z + sg(q - z) (as in ``vq.py``).
k-means initialisation is not offered: the frozen codebook is random by design and W starts at nn.Linear's init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.distances import nearest_code
from vqbench.quantizers.rotation import rotate_onto


class SimVQ(Quantizer):
    loss_names = ("codebook", "commitment")

    def __init__(self, codebook_size: int, dim: int, rotation_trick: bool = False):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        self.codebook_size = codebook_size
        self.rotation_trick = rotation_trick
        self.identity_gradient = not rotation_trick
        self.register_buffer("frozen_codebook", torch.randn(codebook_size, dim) * dim**-0.5)
        self.codebook_map = nn.Linear(dim, dim)

    def effective_codebook(self) -> Tensor:
        return self.codebook_map(self.frozen_codebook)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        codebook = self.effective_codebook()
        indices = nearest_code(z.detach(), codebook.detach())
        q = codebook[indices]
        losses = {"codebook": F.mse_loss(q, z.detach()), "commitment": F.mse_loss(z, q.detach())}
        codes = rotate_onto(z, q) if self.rotation_trick else straight_through(z, q)
        return codes, indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        return self.effective_codebook()[indices]
