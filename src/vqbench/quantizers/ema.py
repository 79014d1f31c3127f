"""Vector quantization whose codebook follows exponential moving averages of its assigned vectors.

van den Oord et al. 2017, "Neural Discrete Representation Learning" (arXiv:1711.00937), appendix A.1. With decay
gamma, per-code counts N_k and sums S_k (buffers; the codebook gets no gradient), for a batch with
n_k vectors assigned to code k:

    N_k <- gamma N_k + (1 - gamma) n_k
    S_k <- gamma S_k + (1 - gamma) sum_{i: k_i = k} z_i
    e_k  = S_k / N_k                      for the codes with n_k > 0; the others keep their vector   (epsilon = 0)
    e_k  = S_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   for every code            (epsilon > 0)

The defaults (``update_rule="standard"``, epsilon = 0, counts from ``initial_count`` = 0, sums from the initial
codes) are the rule of xyfJASON/visual-tokenizer-pytorch (``models/quantizer/quantizer.py``, ``update_codebook``),
the code behind the CelebA tables, and the paper's equations as written. ``epsilon`` > 0 is the Laplace smoothing of
the Sonnet implementation and VQ-VAE-2 (Razavi et al. 2019, arXiv:1906.00446); pair it with ``initial_count=1``,
otherwise a code that never wins keeps S_k = gamma^t e_k over N~_k ~ eps and is blown up (Doraemonzzz/vector-quantize
``quantizers/vq.py``, the ImageNet-128 tables, does exactly that: epsilon 1e-5 with counts from 0).

``update_rule="pytorch_vq_vae"`` is zalandoresearch/pytorch-vq-vae's ``VectorQuantizerEMA``, which AGKhalil/ll-vq-vae
copies (``vector_quantizer/vector_quantizer_ema.py``, the LL-VQ-VAE tables): e ~ N(0, 1) and S ~ N(0, 1) drawn
independently of e, N = 0, Laplace smoothing with eps = 1e-5, and the smoothed counts N~ *replace* N after every
update. Those constants belong to the rule, so ``epsilon`` and ``initial_count`` must stay at 0 with it. A code that
the first batch leaves unused gets N~_k of order eps, so e_k becomes about 1e5 times its N(0, 1) draw, far from
every z: it stays unused (the collapse behind the LL-VQ table's EMA rows).

The batch is quantized with the codebook as it was *before* this batch's update, as every reference implementation
does; the update then happens in the same forward pass (the originals run it in the forward pass or after the
optimizer step, which does not touch the codebook). The only loss is the commitment term MSE(z, sg(q)).

Under torch.distributed, ``distributed_update`` chooses between two updates:

- ``"synchronized"`` (default, every recipe but one): the batch counts n_k and sums are all-reduced across ranks
  *before* the update, so every rank keeps the same codebook and it equals the single-process result on the
  concatenated batch. This is what the rule means on one machine, and what xyfJASON/visual-tokenizer-pytorch (one
  process) and ll-vq-vae (one process) compute.
- ``"rank_local_sums"``: what Doraemonzzz/vector-quantize ``quantizers/vq.py`` (3f0178c, ``VectorQuantizeEMA``)
  computes under the 8-process DDP of ``scripts/train_ema.sh``, the run behind the ImageNet-128 table's EMA row.
  Its ``all_reduce(embed_onehot_sum.contiguous())`` reduces the counts in place, but ``embed_sum`` is a transpose,
  so ``all_reduce(embed_sum.contiguous())`` reduces a copy and the sums stay rank-local; DDP's buffer broadcast
  (``train.py`` line 79, default ``broadcast_buffers``) gives every rank rank 0's counts and sums at each forward;
  the codebook is an ``nn.Embedding`` weight that gets no gradient, which DDP broadcasts only once, at construction.
  So with rank 0's statistics N^0, S^0 and rank r's batch sums s^r:

      N   <- gamma N^0   + (1 - gamma) sum_r n^r          (the same on every rank)
      S^r <- gamma S^0   + (1 - gamma) s^r                (rank-local)
      e^r  = S^r / N~                                      (rank-local: the ranks' codebooks drift apart)

  Here the codebook is a parameter without gradient (as in the original, so a DDP wrapper does not overwrite it),
  and rank 0's counts and sums are broadcast before each update (explicitly, whatever the wrapper does). The
  original writes its checkpoint where ``is_main_process() == 0`` (``train.py`` lines 174-176), i.e. on every rank
  but 0, all to the same file: ``saved_state`` gives rank 1's codebook and sums to every rank, and the training
  module stores them in the checkpoint that rank 0 writes. On one process both updates are the same.

Optional dead-code restart replaces codes whose N_k falls below ``dead_code_threshold`` with random vectors of the
current batch (taken from rank 0 and broadcast, so ranks stay identical; ``dead_codes.restart_dead_codes``), with
N_k = 1 and S_k = the new vector. ``rotation_trick`` and ``init="kmeans"`` as in ``vq.py``; k-means sets the codebook
to the centroids c_k, N_k to the number of vectors in cluster k per batch and S_k = N_k c_k (as
vector-quantize-pytorch's ``init_embed_``), so that the next update continues from the clusters.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vqbench.quantizers.base import Quantizer, straight_through
from vqbench.quantizers.dead_codes import restart_dead_codes
from vqbench.quantizers.distances import nearest_code
from vqbench.quantizers.kmeans import CODEBOOK_INITS, KMeansInit
from vqbench.quantizers.rotation import rotate_onto
from vqbench.quantizers.vq import VectorQuantizer

UPDATE_RULES = ("standard", "pytorch_vq_vae")
DISTRIBUTED_UPDATES = ("synchronized", "rank_local_sums")
#: The rank whose codebook and sums ``rank_local_sums`` saves: Doraemonzzz/vector-quantize writes its checkpoint on
#: every rank but 0 (``train.py`` lines 174-176), all to one file; rank 1 is one of them.
SAVING_RANK = 1
#: zalandoresearch/pytorch-vq-vae ``VectorQuantizerEMA(epsilon=1e-5)``
PYTORCH_VQ_VAE_EPSILON = 1e-5


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EMAVectorQuantizer(Quantizer):
    loss_names = ("commitment",)
    codebook_inits = CODEBOOK_INITS

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        epsilon: float = 0.0,
        initial_count: float = 0.0,
        dead_code_threshold: float = 0.0,
        l2_norm: bool = False,
        update_rule: str = "standard",
        rotation_trick: bool = False,
        init: str = "uniform",
        kmeans_iterations: int = 10,
        kmeans_batches: int = 1,
        distributed_update: str = "synchronized",
    ):
        super().__init__(dim)
        if codebook_size < 1:
            raise ValueError(f"codebook.size must be a positive integer, got {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"quantizer.decay must be in [0, 1), got {decay}")
        if epsilon < 0 or initial_count < 0:
            raise ValueError(
                f"quantizer.epsilon and quantizer.initial_count must be >= 0, got {epsilon} and {initial_count}"
            )
        if l2_norm:
            raise ValueError("quantizer=ema does not support codebook.l2_norm=true; use quantizer=vq for l2 codes")
        if update_rule not in UPDATE_RULES:
            raise ValueError(f"quantizer.update_rule must be one of {UPDATE_RULES}, got {update_rule!r}")
        if distributed_update not in DISTRIBUTED_UPDATES:
            raise ValueError(
                f"quantizer.distributed_update must be one of {DISTRIBUTED_UPDATES}, got {distributed_update!r}"
            )
        if update_rule == "pytorch_vq_vae" and (epsilon != 0 or initial_count != 0):
            raise ValueError(
                "quantizer.update_rule=pytorch_vq_vae fixes its own smoothing (eps 1e-5) and zero initial counts; "
                f"leave quantizer.epsilon and quantizer.initial_count at 0 (got {epsilon} and {initial_count})"
            )
        if init not in CODEBOOK_INITS or (init == "kmeans" and update_rule != "standard"):
            raise ValueError(
                f"codebook.init must be one of {CODEBOOK_INITS} (kmeans with update_rule=standard), got {init!r}"
            )
        self.rotation_trick = rotation_trick
        self.identity_gradient = not rotation_trick
        if init == "kmeans":
            self.kmeans = KMeansInit(codebook_size, kmeans_iterations, kmeans_batches)
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.dead_code_threshold = dead_code_threshold
        self.update_rule = update_rule
        self.distributed_update = distributed_update
        if update_rule == "standard":
            initial = VectorQuantizer.initial_codebook(codebook_size, dim)
            counts, sums = torch.full((codebook_size,), float(initial_count)), initial.clone()
        else:
            initial = torch.randn(codebook_size, dim)
            counts, sums = torch.zeros(codebook_size), torch.randn(codebook_size, dim)
            self.epsilon = PYTORCH_VQ_VAE_EPSILON
        if distributed_update == "rank_local_sums":
            # Per-rank codebooks: a parameter without gradient is left alone by DDP's per-forward buffer broadcast.
            self.codebook = torch.nn.Parameter(initial, requires_grad=False)
        else:
            self.register_buffer("codebook", initial)
        self.register_buffer("ema_counts", counts)
        self.register_buffer("ema_sums", sums)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if self.training and hasattr(self, "kmeans"):
            result = self.kmeans.collect(z)
            if result is not None:
                centroids, counts = result[0], result[1] / self.kmeans.batches
                self.codebook.copy_(centroids)
                self.ema_counts.copy_(counts)
                self.ema_sums.copy_(centroids * counts.unsqueeze(1))
        indices = nearest_code(z.detach(), self.codebook)
        q = self.codebook[indices]  # a copy: the update below does not change this batch's codes
        if self.training:
            self.update_codebook(z.detach(), indices)
        codes = rotate_onto(z, q) if self.rotation_trick else straight_through(z, q)
        return codes, indices, {"commitment": F.mse_loss(z, q)}

    @torch.no_grad()
    def update_codebook(self, z: Tensor, indices: Tensor) -> None:
        counts = torch.zeros_like(self.ema_counts).index_add_(0, indices, torch.ones_like(indices, dtype=z.dtype))
        sums = torch.zeros_like(self.ema_sums).index_add_(0, indices, z)
        if _distributed():
            dist.all_reduce(counts)
            if self.distributed_update == "synchronized":
                dist.all_reduce(sums)
            else:  # rank 0's statistics, as DDP's buffer broadcast hands them to every rank at each forward
                dist.broadcast(self.ema_counts, src=0)
                dist.broadcast(self.ema_sums, src=0)
        self.ema_counts.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sums.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        if self.epsilon > 0:
            total = self.ema_counts.sum()
            smoothed = (self.ema_counts + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
            if self.update_rule == "pytorch_vq_vae":
                self.ema_counts.copy_(smoothed)
            self.codebook.copy_(self.ema_sums / smoothed.unsqueeze(1))
        else:
            # Unassigned codes keep their vector: S_k / N_k would be unchanged (or 0 / 0 for a code never used).
            unassigned = (counts == 0).unsqueeze(1)
            self.codebook.copy_(torch.where(unassigned, self.codebook, self.ema_sums / self.ema_counts.unsqueeze(1)))
        if self.dead_code_threshold > 0:
            self.restart_dead_codes(z)

    @torch.no_grad()
    def restart_dead_codes(self, z: Tensor) -> None:
        restart_dead_codes(z, self.codebook, self.ema_counts, self.dead_code_threshold, 1.0, sums=self.ema_sums)

    @torch.no_grad()
    def saved_state(self) -> dict[str, Tensor]:
        """The codebook and sums that a checkpoint stores in place of this rank's: rank ``SAVING_RANK``'s under
        ``rank_local_sums`` with several ranks (a collective: every rank must call it), nothing otherwise."""
        if self.distributed_update != "rank_local_sums" or not _distributed():
            return {}
        state = {"codebook": self.codebook.detach().clone(), "ema_sums": self.ema_sums.clone()}
        for tensor in state.values():
            dist.broadcast(tensor, src=SAVING_RANK)
        return state

    def lookup(self, indices: Tensor) -> Tensor:
        return self.codebook[indices]
