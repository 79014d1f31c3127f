"""Residual vector quantization (RVQ).

Zeghidour et al. 2021 (SoundStream), Lee et al. 2022 (RQ-VAE). R stages each quantize what the previous ones left:

    r_0 = z,   k_s = argmin_k ||r_s - e^s_k||^2,   q_s = e^s_{k_s},   r_{s+1} = r_s - q_s
    codes = z + sg(sum_s q_s - z)
    L_codebook = sum_s MSE(sg(r_s), q_s),   L_commitment = sum_s MSE(r_s, sg(q_s))

Each stage's losses are on its own residual. Codebooks are separate per stage (R x K x d) or one shared K x d
(``shared_codebook=true``). Indices are B x H x W x R; ``codebook_size`` is K, the size of each stage's codebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.distances import nearest_code
from vqbench.quantizers.vq import VectorQuantizer


class ResidualVectorQuantizer(Quantizer):
    loss_names = ("codebook", "commitment")
    identity_gradient = True

    def __init__(self, codebook_size: int, dim: int, num_stages: int = 4, shared_codebook: bool = False):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if num_stages < 1:
            raise ValueError(f"quantizer.num_stages must be a positive integer, got {num_stages}")
        self.codebook_size = codebook_size
        self.num_stages = num_stages
        self.shared_codebook = shared_codebook
        count = 1 if shared_codebook else num_stages
        self.codebooks = nn.Parameter(
            torch.stack([VectorQuantizer.initial_codebook(codebook_size, dim) for _ in range(count)])
        )

    @property
    def ids_per_position(self) -> int:
        return self.num_stages

    @property
    def bits_per_position(self) -> float:
        """R stages x log2 K: one id of K codes per stage."""
        return self.num_stages * math.log2(self.codebook_size)

    def stage_codebook(self, stage: int) -> Tensor:
        return self.codebooks[0 if self.shared_codebook else stage]

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        residual = z
        total = torch.zeros_like(z)
        indices, codebook_loss, commitment_loss = [], z.new_zeros(()), z.new_zeros(())
        for stage in range(self.num_stages):
            codebook = self.stage_codebook(stage)
            stage_indices = nearest_code(residual.detach(), codebook.detach())
            q = codebook[stage_indices]
            codebook_loss = codebook_loss + F.mse_loss(q, residual.detach())
            commitment_loss = commitment_loss + F.mse_loss(residual, q.detach())
            total = total + q
            residual = residual - q.detach()
            indices.append(stage_indices)
        losses = {"codebook": codebook_loss, "commitment": commitment_loss}
        return straight_through(z, total), torch.stack(indices, dim=1), losses

    def lookup(self, indices: Tensor) -> Tensor:
        return sum(self.stage_codebook(s)[indices[:, s]] for s in range(self.num_stages))
