"""The training order as checkpointable state, so that a training resumed at any step sees the batches, crops and
flips the uninterrupted run would have seen.

- ``ResumableShuffle``: each epoch a permutation drawn from (seed, epoch); process r of N takes every N-th item of it.
  It counts the batches the training loop has consumed in the current epoch (``batch_trained``, called by the data
  module when a batch reaches the model, so batches that loader workers or Lightning prefetched are not counted);
  that count and the epoch are its state, and a resumed iteration skips the consumed batches.
- ``SeededItems``: the sampler hands out (index, item seed) keys, and the random crops of item i in epoch e are drawn
  after seeding the process's generators with that seed: the same pixels whatever was drawn before.
- ``ResumableLoader``: a DataLoader with ``state_dict`` / ``load_state_dict`` (the sampler's), which Lightning stores
  in every checkpoint and restores before it creates the first iterator of a resumed fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vqbench.randomness import derived_seed, seed_host_generators


class ResumableShuffle(DistributedSampler):
    """Yields ``(index, item_seed)`` keys of ``batch_size``-aligned epochs, resumable at any batch.

    A DistributedSampler subclass because it already shards across processes: Lightning then uses it as it is
    instead of wrapping it in a sampler of its own. The tail that does not fill a batch on every process is dropped.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.batches_per_epoch = len(dataset) // (world_size * batch_size)
        self.num_samples = self.batches_per_epoch * batch_size
        self.total_size = self.num_samples * world_size
        self.batches_trained = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch (and again for the epoch a resumed run continues)."""
        if epoch != self.epoch:
            self.epoch, self.batches_trained = epoch, 0

    def batch_trained(self) -> None:
        self.batches_trained += 1

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if 0 < self.batches_per_epoch <= self.batches_trained:  # resumed exactly at the end of an epoch
            self.epoch, self.batches_trained = self.epoch + 1, 0
        epoch, skip = self.epoch, self.batches_trained * self.batch_size
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "order", epoch))
        order = torch.randperm(len(self.dataset), generator=generator)[: self.total_size]
        for index in order[self.rank :: self.num_replicas][skip:].tolist():
            yield index, derived_seed(self.seed, "item", epoch, index)

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batches_trained = int(state["epoch"]), int(state["batches_trained"])


class SeededItems(Dataset):
    """``dataset[index]`` drawn after seeding the process's host generators with the key's item seed.

    The generators are not restored afterwards: in a loader worker nothing else uses them, and in the main process
    (``num_workers=0``) every training step re-seeds them from its own key (``training.callbacks.SeedEachStep``).
    A dataset that reads whole batches at once (``__getitems__``: the preprocessed cache) holds finished pixels and
    draws nothing, so it is read in one call without seeding.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Tensor | None:
        index, seed = key
        seed_host_generators(seed)
        return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Tensor | None]:
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__([index for index, _ in keys])
        return [self[key] for key in keys]


class ResumableLoader(DataLoader):
    """A DataLoader whose state (the sampler's epoch and consumed batches) Lightning checkpoints and restores."""

    sampler: ResumableShuffle

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
