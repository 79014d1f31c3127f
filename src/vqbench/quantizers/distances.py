"""Chunked nearest-code search and soft-assignment entropy.

A full N x K distance matrix is 16 GiB at N = 65,536 tokens and K = 65,536 codes. Everything here walks over the
rows in chunks so peak memory is O(chunk * K), where chunk * K <= ``max_elements``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

#: Upper bound on the elements of one chunk's distance matrix (2^25 fp32 = 128 MiB).
DEFAULT_MAX_ELEMENTS = 2**25


def chunk_rows(num_codes: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> int:
    return max(1, max_elements // max(1, num_codes))


def squared_distances(z: Tensor, codebook: Tensor, codebook_sq: Tensor | None = None) -> Tensor:
    """||z - e||^2 = (||z||^2 + ||e||^2) - 2 z.e for rows z (n x d) against codes (K x d), in this order of
    operations: the one of xyfJASON/visual-tokenizer-pytorch (``models/quantizer/quantizer.py``, the CelebA tables),
    taming-transformers and LlamaGen (``quantize.py``, ``vq_model.py``). The full distance, ||z||^2 included, rounds
    like theirs, so near-ties go the same way (dropping ||z||^2, which does not change the exact argmin, flipped up
    to 7 of 2,048 CelebA tokens per step)."""
    if codebook_sq is None:
        codebook_sq = codebook.pow(2).sum(1)
    return (z.pow(2).sum(1, keepdim=True) + codebook_sq) - 2 * torch.mm(z, codebook.t())


@torch.no_grad()
def nearest_code(z: Tensor, codebook: Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Index of the nearest code (``squared_distances``) for every row of z, in chunks of rows (peak memory a few
    chunk x K matrices)."""
    codebook_sq = codebook.pow(2).sum(1)
    step = chunk_rows(codebook.shape[0], max_elements)
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], step):
        out[start : start + step] = squared_distances(z[start : start + step], codebook, codebook_sq).argmin(1)
    return out


def _entropy_sums(z: Tensor, codebook: Tensor, temperature: float, logit_shift: float) -> tuple[Tensor, Tensor]:
    """For one chunk: sum over rows of H(p_i) and sum over rows of p_i, with p_i = softmax(-dist_i / tau).

    The operations are xyfJASON/visual-tokenizer-pytorch's (``entropy_loss`` in ``models/quantizer/quantizer.py``),
    so that its CelebA entropy row rounds alike: p = softmax(a), log p = log_softmax(a + shift) with its shift equal
    to the codebook-entropy epsilon (no change to the exact value, only to the rounding), row sums of p log p first.
    """
    logits = -squared_distances(z, codebook) / temperature
    p = torch.softmax(logits, dim=1)
    log_p = torch.log_softmax(logits + logit_shift if logit_shift else logits, dim=1)
    return -(p * log_p).sum(1).sum(), p.sum(0)


def entropy_terms(
    z: Tensor,
    codebook: Tensor,
    temperature: float = 0.01,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    codebook_entropy_epsilon: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The two parts of the entropy regulariser, with p_i = softmax(-||z_i - e||^2 / tau) and p = mean_i p_i:

        per_sample = mean_i H(p_i)                          (minimise: confident assignments)
        codebook   = sum_k p_k log(p_k + eps)  = -H(p)      (minimise: spread tokens over the whole codebook)

    Yu et al. 2023, "Language Model Beats Diffusion" (MAGVIT-v2, arXiv:2310.05737), eq. 5. ``eps`` is
    ``codebook_entropy_epsilon``: 0 gives the exact entropy; xyfJASON/visual-tokenizer-pytorch (the CelebA tables)
    uses 1e-5 (``entropy_loss`` in models/quantizer/quantizer.py and lookup_free_quantizer.py), which weakens the
    push toward codes whose mean probability is far below 1e-5. Each chunk of rows is recomputed in the backward
    pass (activation checkpointing), so neither pass holds an N x K matrix.
    """
    n = z.shape[0]
    step = chunk_rows(codebook.shape[0], max_elements)
    sum_entropy = z.new_zeros(())
    sum_probs = z.new_zeros(codebook.shape[0])
    for start in range(0, n, step):
        chunk = z[start : start + step]
        if torch.is_grad_enabled() and (chunk.requires_grad or codebook.requires_grad):
            h, p = checkpoint(
                _entropy_sums, chunk, codebook, temperature, codebook_entropy_epsilon, use_reentrant=False
            )
        else:
            h, p = _entropy_sums(chunk, codebook, temperature, codebook_entropy_epsilon)
        sum_entropy = sum_entropy + h
        sum_probs = sum_probs + p
    mean_probs = sum_probs / n
    if codebook_entropy_epsilon > 0:
        log_mean_probs = torch.log(mean_probs + codebook_entropy_epsilon)
    else:
        log_mean_probs = torch.log(mean_probs.clamp_min(1e-12))
    return sum_entropy / n, (mean_probs * log_mean_probs).sum()


def entropy_loss(
    z: Tensor,
    codebook: Tensor,
    temperature: float = 0.01,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    codebook_entropy_epsilon: float = 0.0,
) -> Tensor:
    """L = mean_i H(p_i) - H(mean_i p_i): the sum of ``entropy_terms`` (tau = 0.01, weight 0.1 in the CelebA table)."""
    per_sample, codebook_term = entropy_terms(z, codebook, temperature, max_elements, codebook_entropy_epsilon)
    return per_sample + codebook_term


def perplexity_from_counts(counts: Tensor) -> Tensor:
    """exp(entropy of the normalised histogram); equals the number of codes when usage is uniform."""
    p = counts.double() / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())


__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "chunk_rows",
    "entropy_loss",
    "entropy_terms",
    "nearest_code",
    "perplexity_from_counts",
    "squared_distances",
]
