"""The entropy terms of lookup-free quantization, exact, without an N x 2^bits matrix.

LFQ's soft assignment of a row z (``bits`` channels) to the implicit codes c in {-1, +1}^bits is (Yu et al. 2023,
"Language Model Beats Diffusion: Tokenizer is Key to Visual Generation", arXiv:2310.05737, eq. 5)

    p(c | z) = softmax_c(s * <z, c>)                       s = the logit scale

The usual definition, softmax_c(-||z - c||^2 / tau), is this with s = 2 / tau: ||z - c||^2 = ||z||^2 - 2 <z, c> +
bits, and the terms without c cancel in the softmax (``logit_scale_for_temperature``). Because the logit is a sum
over the bits, p(c | z) is a product of independent bits, P(c_j = +1 | z) = sigmoid(2 s z_j). That gives both terms
of the regulariser exactly:

    per-sample entropy   mean_i H(p_i) = mean_i sum_j H_2(sigmoid(2 s z_ij))                  O(N * bits)
    codebook entropy     -H(mean_i p_i), where, splitting the bits into a low and a high half,
                         mean_i p_i(c_lo, c_hi) = (1/N) sum_i p_i(c_lo) p_i(c_hi) = (P_lo^T P_hi / N)[c_lo, c_hi]

P_lo (N x 2^lo) and P_hi (N x 2^hi) are softmaxes over the codes of each half, so the code distribution is one
(2^lo x N) @ (N x 2^hi) matrix product. Its cost is still N * 2^bits multiply-adds, but as one dense product instead
of a 2^bits-way softmax per row. Rows go through in chunks of at most ``max_elements`` half-code probabilities,
each recomputed in the backward pass when there is more than one, so memory is O(2^bits + max_elements + N * bits).
The ``codebook_entropy`` clamp (1e-12) and the signs (per-sample entropy minimised, codebook entropy maximised,
so returned negated) are those of ``vqbench.quantizers.distances.entropy_terms``, the direct computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from vqbench.quantizers.distances import DEFAULT_MAX_ELEMENTS

#: The floor under the code probabilities in log(p) of the codebook entropy (as in distances.entropy_terms).
PROBABILITY_FLOOR = 1e-12


def logit_scale_for_temperature(temperature: float) -> float:
    """s such that softmax_c(s <z, c>) = softmax_c(-||z - c||^2 / tau) over c in {-1, +1}^bits: s = 2 / tau."""
    return 2.0 / temperature


def sign_codes(bits: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """All 2^bits codes as a 2^bits x bits matrix of +-1; row k is the code of index k = sum_j [c_j > 0] 2^j."""
    powers = 2 ** torch.arange(bits, device=device)
    return ((torch.arange(2**bits, device=device).unsqueeze(1) // powers) % 2).to(dtype) * 2 - 1


def per_sample_entropy(z: Tensor, logit_scale: float) -> Tensor:
    """mean_i H(p_i) as a sum of per-bit binary entropies: H_2(q) = -q log q - (1 - q) log(1 - q), q = sigmoid(a),
    a = 2 s z_ij, with log q = logsigmoid(a) and log(1 - q) = logsigmoid(-a) (exact where q rounds to 0 or 1)."""
    a = 2 * logit_scale * z
    entropy = -(torch.sigmoid(a) * F.logsigmoid(a) + torch.sigmoid(-a) * F.logsigmoid(-a))
    return entropy.sum(1).mean()


def _half_code_sums(z: Tensor, codes_lo: Tensor, codes_hi: Tensor, logit_scale: float) -> Tensor:
    """sum over the rows of z of p_i(c_lo) p_i(c_hi): a 2^lo x 2^hi matrix."""
    lo = codes_lo.shape[1]
    scaled = logit_scale * z  # N x bits, cheaper to scale than the N x 2^half logits
    p_lo = torch.softmax(scaled[:, :lo] @ codes_lo.t(), dim=1)
    p_hi = torch.softmax(scaled[:, lo:] @ codes_hi.t(), dim=1)
    return p_lo.t() @ p_hi


def code_distribution(z: Tensor, logit_scale: float, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """mean_i p_i(c) over the 2^bits codes, indexed like ``sign_codes`` (bit j of the index is channel j)."""
    n, bits = z.shape
    lo = bits // 2
    codes_lo, codes_hi = sign_codes(lo, z.device, z.dtype), sign_codes(bits - lo, z.device, z.dtype)
    step = max(1, max_elements // (2**lo + 2 ** (bits - lo)))
    if n <= step:
        sums = _half_code_sums(z, codes_lo, codes_hi, logit_scale)
    else:
        sums = z.new_zeros(2**lo, 2 ** (bits - lo))
        for start in range(0, n, step):
            chunk = z[start : start + step]
            if torch.is_grad_enabled() and chunk.requires_grad:
                sums = sums + checkpoint(_half_code_sums, chunk, codes_lo, codes_hi, logit_scale, use_reentrant=False)
            else:
                sums = sums + _half_code_sums(chunk, codes_lo, codes_hi, logit_scale)
    # index = k_lo + 2^lo k_hi: the high half varies slowest
    return sums.t().reshape(-1) / n


def codebook_entropy(mean_probs: Tensor, epsilon: float = 0.0) -> Tensor:
    """H(mean_i p_i) = -sum_c m(c) log max(m(c), 1e-12); with ``epsilon`` > 0, -sum_c m(c) log(m(c) + epsilon)
    (xyfJASON/visual-tokenizer-pytorch's 1e-5, as ``distances.entropy_terms``'s ``codebook_entropy_epsilon``)."""
    if epsilon > 0:
        return -(mean_probs * torch.log(mean_probs + epsilon)).sum()
    return -(mean_probs * torch.log(mean_probs.clamp_min(PROBABILITY_FLOOR))).sum()


def lfq_entropy_terms(
    z: Tensor, logit_scale: float, max_elements: int = DEFAULT_MAX_ELEMENTS, codebook_entropy_epsilon: float = 0.0
) -> tuple[Tensor, Tensor]:
    """(per_sample, codebook) = (mean_i H(p_i), -H(mean_i p_i)) for rows z (N x bits); both are minimised.
    ``codebook_entropy_epsilon``: see ``codebook_entropy``."""
    mean_probs = code_distribution(z, logit_scale, max_elements)
    return per_sample_entropy(z, logit_scale), -codebook_entropy(mean_probs, codebook_entropy_epsilon)


__all__ = [
    "PROBABILITY_FLOOR",
    "code_distribution",
    "codebook_entropy",
    "lfq_entropy_terms",
    "logit_scale_for_temperature",
    "per_sample_entropy",
    "sign_codes",
]
