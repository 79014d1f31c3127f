"""Vector quantization whose codebook follows exponential moving averages of its assigned vectors.

van den Oord et al. 2017, appendix A.1; Razavi et al. 2019 (VQ-VAE-2). With decay gamma, per-code counts N_k and
sums S_k (buffers, not parameters: the codebook gets no gradient), for a batch with n_k vectors assigned to code k:

    N_k <- gamma N_k + (1 - gamma) n_k
    S_k <- gamma S_k + (1 - gamma) sum_{i: k_i = k} z_i
    e_k  = S_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j     (Laplace smoothing, eps = 1e-5)

The only loss is the commitment term MSE(z, sg(q)). Under DDP the batch counts n and sums are all-reduced across
ranks *before* the update, so every rank keeps the same codebook and it equals the single-process result on the
concatenated batch. Optional dead-code restart replaces codes whose N_k falls below ``dead_code_threshold`` with
random vectors of the current batch (taken from rank 0 and broadcast, so ranks stay identical).

By default the counts start at one and the sums at the initial codes (an unused code stays where it was
initialised), and q is read from the codebook after this batch's update. Doraemonzzz/vector-quantize
(``quantizers/vq.py``, the ImageNet-128 tables) starts the counts at zero (``initial_count=0``: an unused code's
sum decays while its smoothed count stays near eps, so it grows far from the data and stays unused) and reads q
before the update (``lookup_before_update=True``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.distances import nearest_code
from vqbench.quantizers.vq import VectorQuantizer


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EMAVectorQuantizer(Quantizer):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        dead_code_threshold: float = 0.0,
        l2_norm: bool = False,
        initial_count: float = 1.0,
        lookup_before_update: bool = False,
    ):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"quantizer.decay must be in [0, 1), got {decay}")
        if l2_norm:
            raise ValueError("quantizer=ema does not support codebook.l2_norm=true; use quantizer=vq for l2 codes")
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.dead_code_threshold = dead_code_threshold
        self.lookup_before_update = lookup_before_update
        initial = VectorQuantizer.initial_codebook(codebook_size, dim)
        self.register_buffer("codebook", initial.clone())
        # The sums start at the initial codes: with counts starting at one, an unused code stays where it was.
        self.register_buffer("ema_counts", torch.full((codebook_size,), float(initial_count)))
        self.register_buffer("ema_sums", initial.clone())

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        indices = nearest_code(z.detach(), self.codebook)
        q = self.codebook[indices] if self.lookup_before_update else None  # indexing copies: safe from the update
        if self.training:
            self.update_codebook(z.detach(), indices)
        if q is None:
            q = self.codebook[indices]
        return straight_through(z, q), indices, {"commitment": F.mse_loss(z, q)}

    @torch.no_grad()
    def update_codebook(self, z: Tensor, indices: Tensor) -> None:
        counts = torch.zeros_like(self.ema_counts).index_add_(0, indices, torch.ones_like(indices, dtype=z.dtype))
        sums = torch.zeros_like(self.ema_sums).index_add_(0, indices, z)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_counts.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sums.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_counts.sum()
        smoothed = (self.ema_counts + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.codebook.copy_(self.ema_sums / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0:
            self.restart_dead_codes(z)

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor) -> None:
        dead = (self.ema_counts < self.dead_code_threshold).unsqueeze(1)
        candidates = z[torch.randint(z.shape[0], (self.codebook_size,), device=z.device)]
        if _distributed():
            dist.broadcast(candidates, src=0)
        self.codebook.copy_(torch.where(dead, candidates, self.codebook))
        self.ema_sums.copy_(torch.where(dead, candidates, self.ema_sums))
        self.ema_counts.copy_(torch.where(dead.squeeze(1), torch.ones_like(self.ema_counts), self.ema_counts))

    def lookup(self, indices: Tensor) -> Tensor:
        return self.codebook[indices]
