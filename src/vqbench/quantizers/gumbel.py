"""Gumbel-softmax vector quantization.

Jang et al. 2017 and Maddison et al. 2017 (the Gumbel-softmax relaxation), as used by DALL-E's dVAE (Ramesh et al.
2021) and taming-transformers' GumbelQuantize. A linear map gives logits over K codes; a hard Gumbel-softmax sample
picks one (one-hot forward, soft gradient backward) and mixes the code embeddings with it:

    l = W z,   y = one_hot(argmax(l + g)) + (s - sg(s)),   s = softmax((l + g) / tau),   g ~ Gumbel(0, 1)
    codes = y E,   L_kl = KL(softmax(l) || uniform) = sum_k p_k log(p_k K)      (weight 5e-4)

In eval mode no noise is drawn: the token is argmax(l). ``temperature`` is an attribute so a schedule can anneal it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer


class GumbelQuantizer(Quantizer):
    loss_names = ("kl",)

    def __init__(self, codebook_size: int, dim: int, temperature: float = 1.0):
        super().__init__(dim)
        if codebook_size < 2:
            raise ValueError(f"codebook.size must be at least 2 for Gumbel quantization, got {codebook_size}")
        if temperature <= 0:
            raise ValueError(f"quantizer.temperature must be positive, got {temperature}")
        self.codebook_size = codebook_size
        self.temperature = temperature
        self.to_logits = nn.Linear(dim, codebook_size)
        self.embedding = nn.Parameter(torch.randn(codebook_size, dim) * dim**-0.5)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        logits = self.to_logits(z)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=1)
            indices = one_hot.argmax(1)
        else:
            indices = logits.argmax(1)
            one_hot = F.one_hot(indices, self.codebook_size).to(z.dtype)
        log_p = F.log_softmax(logits, dim=1)
        kl = (log_p.exp() * (log_p + math.log(self.codebook_size))).sum(1).mean()
        return one_hot @ self.embedding, indices, {"kl": kl}

    def lookup(self, indices: Tensor) -> Tensor:
        return self.embedding[indices]
