"""One LightningDataModule for every image source."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(L.LightningDataModule):
    """Wraps a ``make_dataset(split)`` factory (split in train/val/test) into loaders of C x H x W floats in [-1, 1]."""

    def __init__(
        self,
        make_dataset: Callable[[str], Dataset],
        batch_size: int = 16,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        resolution: int = 64,
        channels: int = 3,
    ):
        super().__init__()
        self.make_dataset = make_dataset
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.resolution = resolution
        self.channels = channels
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
