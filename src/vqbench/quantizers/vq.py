"""Vector quantization with a learned codebook (VQ-VAE).

van den Oord et al. 2017, "Neural Discrete Representation Learning", eq. 3:

    k_i = argmin_k ||z_i - e_k||^2,   q_i = e_{k_i},   codes = z + sg(q - z)   (straight-through)
    L_codebook   = MSE(sg(z), q)      -- moves the codes toward the encoder outputs
    L_commitment = MSE(z, sg(q))      -- weighted by beta = 0.25 in the config; keeps z near its code

(taming-transformers' "legacy" quantizer puts beta on the codebook term instead; that is not what the paper says.)

Options:
- ``l2_norm``: cosine-similarity codes. Two conventions exist and both are selectable with ``l2_norm_mode``:
  ``"llamagen"`` (Sun et al. 2024, LlamaGen, arXiv 2406.06525; ``tokenizer/tokenizer_image/vq_model.py``) normalises
  z and the codes, and computes losses and the straight-through estimator on the normalised vectors; ``"seed"`` (the
  quantizer behind the CelebA-64 tables of xyfJASON/visual-tokenizer-pytorch, ``models/quantizer/quantizer.py``)
  normalises only for the distance and the returned code, while losses and the straight-through estimator use the
  raw z. The value's name is historical: it is the convention of the first table vqbench reproduced.
- ``compute_entropy``: also return the entropy regulariser of ``distances.entropy_loss`` (MAGVIT-v2, eq. 5), with
  ``codebook_entropy_epsilon`` inside the log of the batch-average entropy (1e-5 in the CelebA table's code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.distances import entropy_loss, nearest_code

L2_NORM_MODES = ("llamagen", "seed")


class VectorQuantizer(Quantizer):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        l2_norm: bool = False,
        l2_norm_mode: str = "llamagen",
        compute_entropy: bool = False,
        entropy_temperature: float = 0.01,
        codebook_entropy_epsilon: float = 0.0,
    ):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if l2_norm_mode not in L2_NORM_MODES:
            raise ValueError(f"quantizer.l2_norm_mode must be one of {L2_NORM_MODES}, got {l2_norm_mode!r}")
        self.codebook_size = codebook_size
        self.l2_norm = l2_norm
        self.l2_norm_mode = l2_norm_mode
        self.compute_entropy = compute_entropy
        self.entropy_temperature = entropy_temperature
        self.codebook_entropy_epsilon = codebook_entropy_epsilon
        self.codebook = nn.Parameter(self.initial_codebook(codebook_size, dim))

    @staticmethod
    def initial_codebook(codebook_size: int, dim: int) -> Tensor:
        """U(-1/K, 1/K), as in the original VQ-VAE implementations."""
        return torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def effective_codebook(self) -> Tensor:
        """The K x d vectors that distances are measured against and codes are taken from."""
        return F.normalize(self.codebook, dim=1) if self.l2_norm else self.codebook

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        codebook = self.effective_codebook()
        z_search = F.normalize(z, dim=1) if self.l2_norm else z
        if self.l2_norm and self.l2_norm_mode == "llamagen":
            z = z_search
        indices = nearest_code(z_search.detach(), codebook.detach())
        q = codebook[indices]
        losses = {
            "codebook": F.mse_loss(q, z.detach()),
            "commitment": F.mse_loss(z, q.detach()),
        }
        if self.compute_entropy and self.training:
            losses["entropy"] = entropy_loss(
                z_search, codebook, self.entropy_temperature, codebook_entropy_epsilon=self.codebook_entropy_epsilon
            )
        return straight_through(z, q), indices, losses

    def lookup(self, indices: Tensor) -> Tensor:
        return self.effective_codebook()[indices]
