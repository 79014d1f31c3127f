"""Dead-code restart: codes whose usage count falls below a threshold move onto random vectors of the batch.

Dhariwal et al. 2020, "Jukebox: A Generative Model for Music", arXiv 2005.00341, sec. 3.3 ("random restarts"); the
``threshold_ema_dead_code`` of lucidrains/vector-quantize-pytorch (``vector_quantize_pytorch.py``, ``expire_codes_``).
With usage counts N_k (an exponential moving average of how many vectors each code got per batch):

    dead_k = N_k < threshold,   e_k <- x_{r_k} for dead k,   N_k <- reset_count for dead k

where r_k is a uniformly random row of the batch. Under torch.distributed the candidates x_r are drawn on rank 0 and
broadcast, and N comes from all-reduced batch counts, so every rank replaces the same codes by the same vectors.
``ema.EMAVectorQuantizer`` (its codebook sums follow too) and ``vq.VectorQuantizer`` both use it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def batch_candidates(z: Tensor, num_codes: int) -> Tensor:
    """num_codes random rows of z (N x d), the same on every rank (rank 0's draw, broadcast)."""
    candidates = z[torch.randint(z.shape[0], (num_codes,), device=z.device)]
    if _distributed():
        dist.broadcast(candidates, src=0)
    return candidates


@torch.no_grad()
def restart_dead_codes(
    z: Tensor, codebook: Tensor, counts: Tensor, threshold: float, reset_count: float, sums: Tensor | None = None
) -> Tensor:
    """Replaces, in place, the codes with counts < threshold by batch rows (``sums`` too, for EMA codebooks) and sets
    their counts to ``reset_count``. Returns the K-long mask of the restarted codes."""
    dead = counts < threshold
    candidates = batch_candidates(z, codebook.shape[0])
    codebook.copy_(torch.where(dead.unsqueeze(1), candidates, codebook))
    if sums is not None:
        sums.copy_(torch.where(dead.unsqueeze(1), candidates * reset_count, sums))
    counts.copy_(torch.where(dead, torch.full_like(counts, reset_count), counts))
    return dead


__all__ = ["batch_candidates", "restart_dead_codes"]
