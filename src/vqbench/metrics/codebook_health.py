"""Codebook health during training: which codes were chosen in the last N training steps, and the geometry of the
codebook (code norms, each code's distance to its nearest other code).

Collapse, the failure the published tables study, shows first as codes that stop being chosen. ``RecentCodeUsage``
keeps, per level (the R stages of a residual VQ; one level otherwise) and per code, the last training step that
chose it, on the device: one ``index_fill_`` per step, no host-device synchronisation. At a validation point

    usage over the last N steps = #{k : last_step[k] > s - N} / K,    dead codes = K - #{k : last_step[k] > s - N}

with s the current step. The state is max-reduced across processes, so a code chosen on any rank counts. The window
starts where the tracking started (the first step of this process: a resumed training counts from its resume step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from vqbench.quantizers.distances import perplexity_from_counts


class RecentCodeUsage(Metric):
    """Last training step at which each code of each level was chosen (-1: never, since tracking began)."""

    full_state_update = False

    def __init__(self, codebook_size: int, levels: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.levels = levels
        never = torch.full((levels, codebook_size), -1, dtype=torch.long)
        self.add_state("last_step", default=never, dist_reduce_fx="max")
        self.first_step: int | None = None

    def update(self, indices: Tensor, step: int) -> None:
        """indices: B x H x W (one level) or B x H x W x R (R levels); ``step``: the training step (a Python int)."""
        if self.first_step is None:
            self.first_step = step
        per_level = indices.reshape(-1, self.levels) if indices.dim() == 4 else indices.reshape(-1, 1)
        for level in range(self.levels):
            self.last_step[level].index_fill_(0, per_level[:, level], step)

    def compute(self) -> Tensor:
        return self.last_step

    def summary(self, step: int, window: int) -> dict[str, Tensor]:
        """Usage over the last ``window`` steps before ``step`` (inclusive of ``step - 1``) and the dead codes, in
        total and, with several levels, per level (``/level_r``). Synchronises across processes (call it on every
        rank at once)."""
        with self.sync_context():
            # chosen at one of the steps step - window .. step - 1 (-1: never chosen)
            recent = (self.last_step >= 0) & (self.last_step >= step - window)
        used = recent.sum(1)
        values = {
            "codebook_usage_recent": used.sum().double() / (self.levels * self.codebook_size),
            "dead_codes": (self.codebook_size - used).sum().double(),
        }
        if self.levels > 1:
            for level in range(self.levels):
                values[f"codebook_usage_recent/level_{level}"] = used[level].double() / self.codebook_size
                values[f"dead_codes/level_{level}"] = (self.codebook_size - used[level]).double()
        return values


def level_codebooks(quantizer: nn.Module) -> list[Tensor] | None:
    """The code vectors of each level (K x d each) as the quantizer's nearest-code search sees them, or None for a
    quantizer without a finite codebook (the lattice)."""
    size = getattr(quantizer, "codebook_size", None)
    if size is None:
        return None
    with torch.no_grad():
        if hasattr(quantizer, "stage_codebook"):  # residual VQ
            return [quantizer.stage_codebook(s).detach().float() for s in range(quantizer.num_stages)]
        if hasattr(quantizer, "effective_codebook"):  # VQ (l2-normalised if so configured), SimVQ
            return [quantizer.effective_codebook().detach().float()]
        if isinstance(getattr(quantizer, "codebook", None), Tensor):  # EMA VQ
            return [quantizer.codebook.detach().float()]
        if size <= 1 << 16:  # implicit codebooks (FSQ, LFQ): the code of every index
            device = next(iter(quantizer.buffers()), torch.zeros(())).device
            return [quantizer.lookup(torch.arange(size, device=device)).detach().float()]  # flat ids -> K x d
    return None


def nearest_code_distances(codebook: Tensor, chunk: int = 1024) -> Tensor:
    """For each code, the Euclidean distance to its nearest other code (K values), computed ``chunk`` rows at a time
    so that memory stays at chunk x K (K = 16384 and beyond)."""
    distances = []
    for start in range(0, codebook.shape[0], chunk):
        rows = torch.cdist(codebook[start : start + chunk], codebook)
        rows[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])] = float("inf")
        distances.append(rows.min(1).values)
    return torch.cat(distances)


def level_histograms(counts: Tensor) -> dict[str, Tensor]:
    """Usage and perplexity of each level of a levels x K histogram (``/level_r`` keys)."""
    values = {}
    for level, level_counts in enumerate(counts):
        values[f"codebook_usage/level_{level}"] = (level_counts > 0).sum().double() / level_counts.numel()
        values[f"perplexity/level_{level}"] = perplexity_from_counts(level_counts)
    return values
