"""Evaluation sharding without padding.

torch's DistributedSampler pads the dataset with repeated images so every process gets the same count, and those
repeats would be counted twice by every metric. Here image i goes to process i mod N and nothing is repeated; the
processes simply run one batch more or less, which evaluation (no gradient all-reduce) allows.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class StridedShardSampler(Sampler[int]):
    def __init__(self, dataset_size: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.indices = range(rank, dataset_size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
