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
- ``rotation_trick``: the gradient estimator of ``rotation.rotate_onto`` instead of the straight-through estimator
  (Fifty et al. 2024, arXiv 2410.06424); the forward values are the same.
- ``init="kmeans"``: the codebook becomes the k-means of the first ``kmeans_batches`` training batches
  (``kmeans.KMeansInit``, ``kmeans_iterations`` Lloyd steps; spherical with ``l2_norm``), once, identical on every rank.
- ``dead_code_threshold`` > 0: usage counts N_k <- decay N_k + (1 - decay) n_k (``usage_decay``, from 1, batch counts
  all-reduced under DDP) and codes with N_k below the threshold restart on batch vectors with N_k = threshold
  (``dead_codes.restart_dead_codes``; lucidrains/vector-quantize-pytorch's ``threshold_ema_dead_code`` with
  ``learnable_codebook=True, ema_update=False``). Restarted codes keep their optimizer state.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.dead_codes import restart_dead_codes
from vqbench.quantizers.distances import entropy_loss, nearest_code
from vqbench.quantizers.kmeans import CODEBOOK_INITS, KMeansInit
from vqbench.quantizers.rotation import rotate_onto

L2_NORM_MODES = ("llamagen", "seed")


class VectorQuantizer(Quantizer):
    loss_names = ("codebook", "commitment", "entropy")
    optional_losses = {"compute_entropy": ("entropy",)}
    codebook_inits = CODEBOOK_INITS

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        l2_norm: bool = False,
        l2_norm_mode: str = "llamagen",
        compute_entropy: bool = False,
        entropy_temperature: float = 0.01,
        codebook_entropy_epsilon: float = 0.0,
        rotation_trick: bool = False,
        init: str = "uniform",
        kmeans_iterations: int = 10,
        kmeans_batches: int = 1,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if l2_norm_mode not in L2_NORM_MODES:
            raise ValueError(f"quantizer.l2_norm_mode must be one of {L2_NORM_MODES}, got {l2_norm_mode!r}")
        if init not in CODEBOOK_INITS:
            raise ValueError(f"codebook.init must be one of {CODEBOOK_INITS}, got {init!r}")
        if dead_code_threshold < 0 or not 0.0 <= usage_decay < 1.0:
            raise ValueError(
                f"quantizer.dead_code_threshold must be >= 0 and quantizer.usage_decay in [0, 1), got "
                f"{dead_code_threshold} and {usage_decay}"
            )
        self.codebook_size = codebook_size
        self.l2_norm = l2_norm
        self.l2_norm_mode = l2_norm_mode
        self.compute_entropy = compute_entropy
        self.entropy_temperature = entropy_temperature
        self.codebook_entropy_epsilon = codebook_entropy_epsilon
        self.rotation_trick = rotation_trick
        # llamagen's straight-through estimator is on the normalised z: its gradient goes through the normalisation
        self.identity_gradient = not rotation_trick and not (l2_norm and l2_norm_mode == "llamagen")
        self.codebook = nn.Parameter(self.initial_codebook(codebook_size, dim))
        if init == "kmeans":
            self.kmeans = KMeansInit(codebook_size, kmeans_iterations, kmeans_batches, cosine=l2_norm)
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        if dead_code_threshold > 0:
            self.register_buffer("usage_counts", torch.ones(codebook_size))

    @staticmethod
    def initial_codebook(codebook_size: int, dim: int) -> Tensor:
        """U(-1/K, 1/K), as in the original VQ-VAE implementations."""
        return torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def effective_codebook(self) -> Tensor:
        """The K x d vectors that distances are measured against and codes are taken from."""
        return F.normalize(self.codebook, dim=1) if self.l2_norm else self.codebook

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if self.training and hasattr(self, "kmeans"):
            result = self.kmeans.collect(z)
            if result is not None:
                with torch.no_grad():
                    self.codebook.copy_(result[0])
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
        if self.training and self.dead_code_threshold > 0:
            self.restart_dead_codes(z_search.detach(), indices)
        codes = rotate_onto(z, q) if self.rotation_trick else straight_through(z, q)
        return codes, indices, losses

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor, indices: Tensor) -> None:
        """After this batch's codes are taken: update the usage counts, restart the codes below the threshold."""
        counts = torch.zeros_like(self.usage_counts).index_add_(0, indices, torch.ones_like(z[:, 0]))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts)
        self.usage_counts.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        restart_dead_codes(z, self.codebook.data, self.usage_counts, self.dead_code_threshold, self.dead_code_threshold)

    def lookup(self, indices: Tensor) -> Tensor:
        return self.effective_codebook()[indices]
