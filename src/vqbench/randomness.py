"""Random draws keyed by what they are for (the run's seed and a step, or an epoch and an item), not by history.

A resumed training must draw exactly what the uninterrupted one drew. Capturing generator *states* in the checkpoint
is not enough: a resumed run creates data iterators, runs validation and loads the checkpoint at other moments than
the uninterrupted one, and each of those consumes random numbers. So every random decision of training is seeded from
a hash of its keys (the counter-based idea of Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"):

    seed(step t)       = H(run seed, "step", t, rank)          model noise: Gumbel samples, dead-code restarts, ...
    seed(flip, t)      = H(run seed, "flip", t, rank)          the training batch's horizontal flips
    seed(item i, e)    = H(run seed, "item", e, i)             random crops of item i in epoch e
    order(epoch e)     = permutation from H(run seed, "order", e)

The keys are in every checkpoint (global step, epoch, position in the epoch), so resuming from any step reproduces
the uninterrupted run bit for bit on the CPU.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derived_seed(*keys: int | str) -> int:
    """A 63-bit seed from a hash (BLAKE2b) of ``keys``; different keys give unrelated seeds."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_host_generators(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch's CPU generator (not CUDA's): what a
    data-loading process uses."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def seed_all_generators(seed: int) -> None:
    """Seeds the host generators and every CUDA device's (a host-side call, no device sync)."""
    seed_host_generators(seed)
    torch.cuda.manual_seed_all(seed)
