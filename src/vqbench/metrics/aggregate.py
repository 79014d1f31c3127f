"""torchmetrics objects with sum-reduced state, so multi-process evaluation counts every image and token once."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from vqbench.metrics.codebook_health import level_histograms
from vqbench.quantizers.distances import perplexity_from_counts


class MeanPerImage(Metric):
    """Mean over images of a per-image score ``fn(preds, target) -> B`` (PSNR, SSIM, ...). ``network``: a module
    ``fn`` runs (a perceptual network), registered so that it follows the metric to the evaluation device."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], network: nn.Module | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn
        self.network = network
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        values = self.fn(preds, target)
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class CodebookUsage(Metric):
    """Histogram of token ids; reports usage (used codes / K), perplexity and the effective codebook size.
    Usage and perplexity count the ids element-wise, whatever the shape of the indices (every stage of an RVQ).

    The effective codebook size is the number of distinct tokens seen. A token is the id at one position of
    B x H x W indices, or the R-vector of ids at one position of B x H x W x R indices (an RVQ's stages), so two
    tokens that share a stage-0 id but differ at stage 1 count twice.

    perplexity = exp(-sum_k p_k log p_k) with p the normalised histogram: K for perfectly uniform use, 1 when a
    single code takes every token. The histogram is summed over every batch (and process) first, so perplexity does
    not depend on the batch size. Also reported: ``used_codes`` / ``unused_codes`` over every token, and with
    ``levels`` > 1 (a residual VQ's stages) usage and perplexity of each level's own histogram (``/level_r``).

    ``window=None`` counts every token seen. ``window=W`` computes usage and perplexity over a FIFO queue of the
    last W tokens (W = 65,536 in the CelebA table of xyfJASON/visual-tokenizer-pytorch's README) while the effective
    size still counts every token. Under N processes each keeps its last W / N tokens: with the strided sampler of
    evaluation (image i on rank i mod N), the union is the last W tokens of the split whenever the image count divides
    evenly.
    """

    full_state_update = False

    def __init__(self, codebook_size: int, window: int | None = None, levels: int = 1, **kwargs):
        super().__init__(**kwargs)
        if window is not None and window < 1:
            raise ValueError(f"usage window must be a positive number of tokens, got {window}")
        self.codebook_size = codebook_size
        self.window = window
        self.levels = levels
        self.add_state("counts", default=torch.zeros(codebook_size, dtype=torch.long), dist_reduce_fx="sum")
        if levels > 1:  # one histogram per level (stage) of a residual quantizer
            self.add_state(
                "level_counts", default=torch.zeros(levels, codebook_size, dtype=torch.long), dist_reduce_fx="sum"
            )
        # distinct R-vectors of multi-stage indices (empty for B x H x W indices, whose histogram says it all)
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        if window is not None:
            # -1 marks an empty slot; the queue is kept right-aligned (newest tokens last)
            self.add_state("recent", default=torch.full((window,), -1, dtype=torch.long), dist_reduce_fx="cat")

    def _capacity(self) -> int:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return max(1, self.window // world)

    def update(self, indices: Tensor) -> None:
        flat = indices.flatten()
        self.counts += torch.bincount(flat, minlength=self.codebook_size)
        if self.levels > 1:
            offsets = torch.arange(self.levels, device=indices.device) * self.codebook_size
            stacked = (indices.reshape(-1, self.levels) + offsets).flatten()
            self.level_counts += torch.bincount(stacked, minlength=self.levels * self.codebook_size).view_as(
                self.level_counts
            )
        if indices.dim() == 4:
            self.tokens.append(torch.unique(indices.reshape(-1, indices.shape[-1]), dim=0))
        if self.window is not None:
            capacity = self._capacity()
            queue = torch.cat([self.recent[self.window - capacity :], flat])[-capacity:]
            self.recent = torch.cat([self.recent.new_full((self.window - capacity,), -1), queue])

    def compute(self) -> dict[str, Tensor]:
        counts = self.counts
        if self.window is not None:
            recent = self.recent.flatten()
            counts = torch.bincount(recent[recent >= 0], minlength=self.codebook_size)
        used = (counts > 0).sum()
        values = {
            "codebook_usage": used.double() / self.codebook_size,
            "perplexity": perplexity_from_counts(counts),
            "effective_codebook_size": self._distinct_tokens(),
            # over every token of the split, also when a window gives the two above
            "used_codes": (self.counts > 0).sum().double(),
            "unused_codes": (self.counts == 0).sum().double(),
        }
        if self.window is not None:
            values["codebook_usage_all_tokens"] = values["used_codes"] / self.codebook_size
            values["perplexity_all_tokens"] = perplexity_from_counts(self.counts)
        if self.levels > 1:
            values |= level_histograms(self.level_counts)
        return values

    def _distinct_tokens(self) -> Tensor:
        # a list of per-batch rows, or after a multi-process sync one tensor (empty when no rank saw R-vectors)
        tokens = self.tokens if isinstance(self.tokens, Tensor) else torch.cat(self.tokens) if self.tokens else None
        if tokens is None or tokens.numel() == 0:
            return (self.counts > 0).sum().double()
        return torch.tensor(float(torch.unique(tokens, dim=0).shape[0]), dtype=torch.float64)


#: Distinct token vectors a DistinctTokens keeps (0.5 GB of 64-d int64 vectors); beyond it, it stops counting.
MAX_DISTINCT_TOKENS = 1_000_000


class DistinctTokens(Metric):
    """Effective codebook size: the number of distinct token vectors seen (LL-VQ's measure, the only size measure
    of a lattice, whose set of tokens is unbounded). Tokens are the last dimension of ``indices`` (the integer
    lattice vector k, or the R stage indices of a residual quantizer). State is the set of distinct rows so far,
    concatenated across processes and de-duplicated again in ``compute``.

    Past ``limit`` distinct vectors the metric stops counting and ``compute`` returns no size: the dense lattice
    gives almost every vector its own token, and holding billions of them is not feasible (LL-VQ-VAE's
    ``evaluate_checkpoint.py`` does not count the dense lattice either). Evaluation only: ``update`` reads sizes on
    the host, as ``torch.unique`` does anyway.
    """

    full_state_update = False

    def __init__(self, limit: int = MAX_DISTINCT_TOKENS, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        self.add_state("overflows", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, indices: Tensor) -> None:
        if self.overflows.item():
            return
        self.tokens.append(torch.unique(indices.reshape(-1, indices.shape[-1]), dim=0))
        if sum(t.shape[0] for t in self.tokens) > self.limit:
            merged = torch.unique(torch.cat(self.tokens), dim=0)
            if merged.shape[0] > self.limit:
                merged = merged.new_empty((0, merged.shape[1]))  # frees the memory; stays concatenable across ranks
                self.overflows += 1
            self.tokens = [merged]

    def compute(self) -> dict[str, Tensor]:
        if self.overflows.item():
            return {}
        tokens = self.tokens if isinstance(self.tokens, Tensor) else torch.cat(self.tokens)
        return {"effective_codebook_size": torch.tensor(float(torch.unique(tokens, dim=0).shape[0]))}
