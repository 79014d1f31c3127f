"""k-means initialisation of a codebook from the first training batches, identical on every DDP rank.

Lloyd's algorithm, as lucidrains/vector-quantize-pytorch's ``kmeans`` (``vector_quantize_pytorch.py``, behind
``kmeans_init=True``): initial centroids are K distinct samples (a random permutation; drawn with replacement when
there are fewer samples than codes), then ``iterations`` times

    a_i = argmin_k ||x_i - c_k||^2,   n_k = |{i: a_i = k}|,   c_k <- (1 / n_k) sum_{i: a_i = k} x_i   (kept if n_k = 0)

With ``cosine=True`` (l2-normalised codebooks) the samples are normalised and every new centroid too (spherical
k-means: the nearest centroid is then the most similar). Under torch.distributed the initial centroids are drawn on
rank 0 and broadcast, and n_k and the sums are all-reduced in every iteration, so every rank gets the same codebook:
the k-means of all ranks' samples together, as one process would compute it on the concatenated batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.distances import nearest_code

CODEBOOK_INITS = ("uniform", "kmeans")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def initial_centroids(samples: Tensor, num_codes: int) -> Tensor:
    """num_codes rows of samples: distinct ones (randperm) if there are enough, else drawn with replacement."""
    n = samples.shape[0]
    if n >= num_codes:
        picks = torch.randperm(n, device=samples.device)[:num_codes]
    else:
        picks = torch.randint(n, (num_codes,), device=samples.device)
    return samples[picks]


@torch.no_grad()
def kmeans(
    samples: Tensor, num_codes: int, iterations: int, cosine: bool = False, initial: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(centroids K x d, counts K of the last assignment) of samples (N x d, fp32); ``initial`` replaces the draw."""
    samples = F.normalize(samples, dim=1) if cosine else samples
    means = initial_centroids(samples, num_codes) if initial is None else initial.clone()
    if cosine:
        means = F.normalize(means, dim=1)
    if _distributed():
        dist.broadcast(means, src=0)
    counts = torch.zeros(num_codes, device=samples.device, dtype=samples.dtype)
    for _ in range(iterations):
        assignment = nearest_code(samples, means)
        counts = torch.zeros_like(counts).index_add_(0, assignment, torch.ones_like(samples[:, 0]))
        sums = torch.zeros_like(means).index_add_(0, assignment, samples)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        new_means = sums / counts.clamp_min(1).unsqueeze(1)
        if cosine:
            new_means = F.normalize(new_means, dim=1)
        means = torch.where((counts == 0).unsqueeze(1), means, new_means)
    return means, counts


class KMeansInit(nn.Module):
    """Collects the vectors of the first ``batches`` training batches, then returns their k-means once.

    ``done`` is a persistent buffer, so a checkpoint taken after the initialisation resumes without running it
    again. Whether it is done is also kept as a Python bool (read from the buffer when a state dict is loaded), so the
    training forward never reads a tensor on the host.
    """

    def __init__(self, num_codes: int, iterations: int = 10, batches: int = 1, cosine: bool = False):
        super().__init__()
        if iterations < 0 or batches < 1:
            raise ValueError(
                f"codebook.kmeans_iterations must be >= 0 and codebook.kmeans_batches >= 1, got {iterations} and "
                f"{batches}"
            )
        self.num_codes, self.iterations, self.batches, self.cosine = num_codes, iterations, batches, cosine
        self.register_buffer("done", torch.tensor(False))
        self.is_done = False
        self._samples: list[Tensor] = []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_done = bool(self.done)
        self._samples = []

    @torch.no_grad()
    def collect(self, z: Tensor) -> tuple[Tensor, Tensor] | None:
        """Adds a batch of rows; returns (centroids, counts) at the ``batches``-th call, None before and after."""
        if self.is_done:
            return None
        self._samples.append(z.detach().float())
        if len(self._samples) < self.batches:
            return None
        result = kmeans(torch.cat(self._samples), self.num_codes, self.iterations, cosine=self.cosine)
        self._samples = []
        self.done.fill_(True)
        self.is_done = True
        return result


__all__ = ["CODEBOOK_INITS", "KMeansInit", "initial_centroids", "kmeans"]
