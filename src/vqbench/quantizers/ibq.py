"""Index backpropagation quantization (IBQ): the one-hot choice of a code gets a softmax gradient.

Shi et al. 2024, "Taming Scalable Visual Tokenizer for Autoregressive Image Generation", arXiv 2412.02692, sec. 3.2.
With codebook E (K x d, U(-1/K, 1/K)) and the dot-product logits l_i = E z_i (not distances):

    p_i = softmax(l_i),   k_i = argmax_k p_ik,   h_i = one_hot(k_i)
    codes_i = (h_i - sg(p_i) + p_i) E                      forward: E_{k_i}; backward: through p_i to z and to all of E
    codebook     = MSE(E_{k_i}, sg(z))
    commitment   = MSE(z, sg(E_{k_i}))
    double_quant = MSE(codes, z)                           the "double quantization" loss of the paper
    entropy      = mean_i H(softmax(l_i / tau)) - H(mean_i softmax(l_i / tau))    (log(m + eps) in the second)

Both implementations compute exactly these terms; they weight them differently (the weights live in the config):

- xyfJASON/visual-tokenizer-pytorch ``models/quantizer/index_backpropagation_quantizer.py`` (commit d43e9c5, unchanged
  at 351d29d; the ImageNet-64 table's IBQ rows, ``configs/imagenet64/ibqvae.yaml``): codebook + double_quant with
  weight 1 (its ``loss_vq``), commitment 0.25, entropy 0.1 with tau = 0.01 and eps = 1e-5.
  ``conf/quantizer/ibq.yaml``.
- TencentARC/SEED-Voken ``src/IBQ/modules/vqvae/quantize.py`` (``IndexPropagationQuantize``): beta = 0.25 on the
  *codebook* term, commitment and double_quant with weight 1, entropy weight 0.05 in its ImageNet configs
  (``configs/IBQ/gpu/imagenet_ibqgan_*.yaml``; 0.1 is its loss's default). ``conf/quantizer/ibq_seed_voken.yaml``.

Both add eps = 1e-5 to the logits inside ``log_softmax`` of the per-sample entropy; a constant added to every logit
cancels in log_softmax, so it is left out here. The N x K softmax is computed a chunk of rows at a time and
recomputed in the backward pass (activation checkpointing), so neither pass holds an N x K matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vqbench.quantizers.base import Quantizer
from vqbench.quantizers.distances import DEFAULT_MAX_ELEMENTS, chunk_rows
from vqbench.quantizers.vq import VectorQuantizer

#: eps inside log(mean_i p_i + eps) of the batch entropy in both originals (their ``entropy_loss`` default)
IBQ_ENTROPY_EPSILON = 1e-5


def _ibq_chunk(
    z: Tensor, codebook: Tensor, temperature: float, with_entropy: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For one chunk of rows: (codes (h - sg(p) + p) E, indices, sum_i H(p~_i), sum_i p~_i), p~ = softmax(l / tau)."""
    logits = z @ codebook.t()
    probs = torch.softmax(logits, dim=1)
    indices = probs.max(dim=1).indices
    # (h - sg(p) + p) E without the N x K one-hot: E_k + (p - sg(p)) E, whose second term is exactly 0 forward and
    # carries p's gradient backward (the originals' (1 - p_k) + p_k rounds within an ulp of 1: same value up to eps)
    codes = codebook[indices] + (probs - probs.detach()) @ codebook
    if not with_entropy:
        return codes, indices, z.new_zeros(()), z.new_zeros(codebook.shape[0])
    log_p = torch.log_softmax(logits / temperature, dim=1)
    p = log_p.exp()
    return codes, indices, -(p * log_p).sum(), p.sum(0)


class IndexBackpropagationQuantizer(Quantizer):
    loss_names = ("codebook", "commitment", "double_quant", "entropy")
    optional_losses = {"compute_entropy": ("entropy",)}

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        compute_entropy: bool = True,
        entropy_temperature: float = 0.01,
        codebook_entropy_epsilon: float = IBQ_ENTROPY_EPSILON,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if entropy_temperature <= 0:
            raise ValueError(f"quantizer.entropy_temperature must be > 0, got {entropy_temperature}")
        self.codebook_size = codebook_size
        self.compute_entropy = compute_entropy
        self.entropy_temperature = entropy_temperature
        self.codebook_entropy_epsilon = codebook_entropy_epsilon
        self.max_elements = max_elements
        self.codebook = nn.Parameter(VectorQuantizer.initial_codebook(codebook_size, dim))

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        with_entropy = self.compute_entropy and self.training
        step = chunk_rows(self.codebook_size, self.max_elements)
        codes, indices, entropy_sum, probs_sum = [], [], z.new_zeros(()), z.new_zeros(self.codebook_size)
        for start in range(0, z.shape[0], step):
            chunk = z[start : start + step]
            args = (chunk, self.codebook, self.entropy_temperature, with_entropy)
            if torch.is_grad_enabled() and (chunk.requires_grad or self.codebook.requires_grad):
                c, k, h, p = checkpoint(_ibq_chunk, *args, use_reentrant=False)
            else:
                c, k, h, p = _ibq_chunk(*args)
            codes.append(c)
            indices.append(k)
            entropy_sum, probs_sum = entropy_sum + h, probs_sum + p
        codes, indices = torch.cat(codes), torch.cat(indices)
        hard = self.codebook[indices]
        losses = {
            "codebook": F.mse_loss(hard, z.detach()),
            "commitment": F.mse_loss(z, hard.detach()),
            "double_quant": F.mse_loss(codes, z),
        }
        if with_entropy:
            mean_probs = probs_sum / z.shape[0]
            batch_entropy = -(mean_probs * torch.log(mean_probs + self.codebook_entropy_epsilon)).sum()
            losses["entropy"] = entropy_sum / z.shape[0] - batch_entropy
        return codes, indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        return self.codebook[indices]


__all__ = ["IBQ_ENTROPY_EPSILON", "IndexBackpropagationQuantizer"]
