"""Fixed-seed train / held-out splits for sources that ship without one (FFHQ, FashionMNIST's train set, folders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def holdout_size(total: int, train_parts: int, holdout_parts: int) -> int:
    """How many of ``total`` items are held out at the ratio train_parts : holdout_parts (at least one).

    FFHQ's LL-VQ split is 60,000 : 10,000 of 70,000 and FashionMNIST's 55,000 : 5,000 of 60,000; a source of another
    size is split in the same proportion.
    """
    return max(1, round(total * holdout_parts / (train_parts + holdout_parts)))


def seeded_split(items: Sequence[T], holdout: int, seed: int) -> tuple[list[T], list[T]]:
    """(train, held out): a permutation from ``torch.Generator().manual_seed(seed)``; the same on every machine."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    held = sorted(order[:holdout])
    train = sorted(order[holdout:])
    return [items[i] for i in train], [items[i] for i in held]
