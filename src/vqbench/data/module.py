"""One LightningDataModule for every image source.

Sources are ``make_dataset(split)`` factories (split in train / val / test) whose items are uint8 C x H x W tensors.
Batches travel to the accelerator as uint8 and become floats there (``on_after_batch_transfer``): (x / 255 - mean) /
std per channel, [-1, 1] with the default mean = std = 0.5. The training batch also gets its random horizontal flip
there: the loader workers only decode, crop and resize.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from vqbench.data.cache import CachedImages, build_cache
from vqbench.data.files import ImageFiles
from vqbench.data.sampler import StridedShardSampler
from vqbench.errors import DataError

log = logging.getLogger("vqbench.data")

SPLITS = ("train", "val", "test")


def to_model_range(images: Tensor, mean: float | list[float] = 0.5, std: float | list[float] = 0.5) -> Tensor:
    """uint8 [0, 255] -> float (x / 255 - mean) / std, per channel for lists ([-1, 1] with the defaults)."""
    return images.float().div_(255).sub_(pixel_tensor(mean, images)).div_(pixel_tensor(std, images))


def pixel_tensor(value: float | list[float], like: Tensor) -> Tensor:
    """A per-channel mean or std as a tensor that broadcasts over B x C x H x W (or a 0-dim one for a number)."""
    values = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    return values.view(-1, 1, 1) if values.dim() else values


def random_horizontal_flip(images: Tensor) -> Tensor:
    """Flips each image of the batch with probability 1/2; the coin flips are drawn on the batch's device (no sync)."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(-1), images)


def collate_skipping_none(items: list[Tensor | None]) -> Tensor:
    """default_collate without the None items that ``data.skip_corrupt=true`` turns unreadable images into."""
    kept = [item for item in items if item is not None]
    if not kept:
        raise DataError("every image of a batch was unreadable; check the data (the log names each skipped file)")
    return default_collate(kept)


class ImageDataModule(L.LightningDataModule):
    """Loaders of uint8 images from ``make_dataset(split)``; float batches in the model's pixel space on the
    accelerator.

    ``flip``: random horizontal flips of training batches. ``cache``: decode and preprocess each file-based split
    once into a memory-mapped uint8 array (see ``vqbench.data.cache``) under ``cache_dir`` (default: a
    ``.vqbench_cache`` folder in the dataset's root). ``pixel_mean`` / ``pixel_std``: the model sees
    (x / 255 - mean) / std (a number, or one per channel).
    """

    def __init__(
        self,
        make_dataset: Callable[[str], Dataset],
        batch_size: int = 16,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        resolution: int = 64,
        channels: int = 3,
        flip: bool = False,
        cache: bool = False,
        cache_dir: str | None = None,
        root: str | None = None,
        skip_corrupt: bool = False,
        pixel_mean: float | list[float] = 0.5,
        pixel_std: float | list[float] = 0.5,
    ):
        super().__init__()
        self.make_dataset = make_dataset
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.resolution = resolution
        self.channels = channels
        self.flip = flip
        self.cache = cache
        self.cache_dir = cache_dir
        self.root = root  # used by make_dataset through the config; kept for the record
        self.skip_corrupt = skip_corrupt
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std
        self.datasets: dict[str, Dataset] = {}

    def source(self, split: str) -> Dataset:
        """The uncached dataset of a split. Raises DataError on a missing root, wrong layout or empty split."""
        dataset = self.make_dataset(split)
        if len(dataset) == 0:
            raise DataError(f"the {split} split of the data is empty; check data.root and the dataset's layout")
        return dataset

    def _cached(self, split: str, source: Dataset) -> Dataset:
        if not isinstance(source, ImageFiles):
            return source  # already in memory (sample photos, FashionMNIST)
        if not source.cacheable:
            log.warning("the %s split uses random crops of the full image and is read without the cache", split)
            return source
        return CachedImages(build_cache(source, split, self.cache_dir, max(self.num_workers, 1)))

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, before the others read the cache in setup.
        if self.cache:
            for split in SPLITS:
                self._cached(split, self.source(split))

    def dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            source = self.source(split)
            self.datasets[split] = self._cached(split, source) if self.cache else source
        return self.datasets[split]

    def check(self, splits: tuple[str, ...] = SPLITS) -> None:
        """Opens the splits and decodes one image of each, so bad data fails before the first training step."""
        for split in splits:
            dataset = self.dataset(split)
            if dataset[0] is None:
                log.warning("the first %s image is unreadable (skipped)", split)

    def _loader(self, split: str, batch_size: int, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_skipping_none if self.skip_corrupt else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.trainer is None:
            return self.evaluation_dataloader("test")
        return self.evaluation_dataloader("test", self.trainer.global_rank, self.trainer.world_size)

    def evaluation_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Every image of ``split`` in order; under N processes image i goes to process i mod N, none repeated (the
        evaluation trainer runs with ``use_distributed_sampler=False`` so Lightning does not pad it with repeats)."""
        sampler = StridedShardSampler(len(self.dataset(split)), rank, world_size) if world_size > 1 else None
        return self._loader(split, self.eval_batch_size, shuffle=False, sampler=sampler)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        if batch.dtype == torch.uint8:
            batch = to_model_range(batch, self.pixel_mean, self.pixel_std)
        if self.flip and self.trainer is not None and self.trainer.training:
            batch = random_horizontal_flip(batch)
        return batch
