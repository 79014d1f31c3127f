"""One LightningDataModule for every image source.

Sources are ``make_dataset(split)`` factories (split in train / val / test) whose items are uint8 C x H x W tensors.
Batches travel to the accelerator as uint8 and become floats there (``on_after_batch_transfer``): (x / 255 - mean) /
std per channel, [-1, 1] with the default mean = std = 0.5. The training batch also gets its random horizontal flip
there: the loader workers only decode, crop and resize.

The training order, crops and flips are functions of the run's seed, the epoch, the item and the step
(``vqbench.randomness``), and the loader's position is checkpointed (``vqbench.data.resumable``), so a resumed
training sees exactly the batches of the uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from vqbench.data.cache import CachedImages, build_cache
from vqbench.data.check import check_files
from vqbench.data.files import ImageFiles
from vqbench.data.resumable import ResumableLoader, ResumableShuffle, SeededItems
from vqbench.data.sampler import StridedShardSampler
from vqbench.errors import DataError
from vqbench.randomness import derived_seed
from vqbench.training.interrupts import worker_ignores_stop_signals

log = logging.getLogger("vqbench.data")

SPLITS = ("train", "val", "test")


def to_model_range(images: Tensor, mean: float | list[float] = 0.5, std: float | list[float] = 0.5) -> Tensor:
    """uint8 [0, 255] -> float (x / 255 - mean) / std, per channel for lists ([-1, 1] with the defaults)."""
    return images.float().div_(255).sub_(pixel_tensor(mean, images)).div_(pixel_tensor(std, images))


def pixel_tensor(value: float | list[float], like: Tensor) -> Tensor:
    """A per-channel mean or std as a tensor that broadcasts over B x C x H x W (or a 0-dim one for a number)."""
    values = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    return values.view(-1, 1, 1) if values.dim() else values


def random_horizontal_flip(images: Tensor, seed: int) -> Tensor:
    """Flips each image of the batch with probability 1/2; the coin flips are drawn on the batch's device (no sync)
    from a generator seeded with ``seed``."""
    generator = torch.Generator(images.device).manual_seed(seed)
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device, generator=generator) < 0.5
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
    (x / 255 - mean) / std (a number, or one per channel). ``seed``: the run's seed, from which the training order,
    crops and flips are derived.
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
        seed: int = 0,
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
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self.train_sampler: ResumableShuffle | None = None

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

    def check(self, splits: tuple[str, ...] = SPLITS, world_size: int = 1) -> None:
        """Fails before the first training step on bad data: opens the splits, reads every image file of each
        (``vqbench.data.check``; not with ``skip_corrupt``, which skips unreadable files as they come) or, for an
        in-memory source, its first item, and makes sure the train split fills at least one batch on each of the
        ``world_size`` processes."""
        for split in splits:
            dataset = self.dataset(split)
            if isinstance(dataset, ImageFiles) and not self.skip_corrupt:
                check_files(dataset, split, self.num_workers, self.cache_dir)
            elif dataset[0] is None:
                log.warning("the first %s image is unreadable (skipped)", split)
        if "train" in splits and len(self.dataset("train")) < self.batch_size * world_size:
            raise DataError(
                f"the train split has {len(self.dataset('train'))} images, fewer than one batch "
                f"(data.batch_size={self.batch_size} x {world_size} processes); lower data.batch_size"
            )

    def _loader(self, dataset: Dataset, batch_size: int, sampler=None, loader=DataLoader) -> DataLoader:
        return loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_skipping_none if self.skip_corrupt else None,
            worker_init_fn=worker_ignores_stop_signals if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch), sharded over the processes, full batches only; resumable at any batch."""
        dataset = self.dataset("train")
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self.train_sampler = ResumableShuffle(dataset, self.batch_size, self.seed, rank, world_size)
        return self._loader(SeededItems(dataset), self.batch_size, self.train_sampler, loader=ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        if self.trainer is None:
            return self.evaluation_dataloader("test")
        return self.evaluation_dataloader("test", self.trainer.global_rank, self.trainer.world_size)

    def evaluation_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Every image of ``split`` in order; under N processes image i goes to process i mod N, none repeated (the
        evaluation trainer runs with ``use_distributed_sampler=False`` so Lightning does not pad it with repeats)."""
        sampler = StridedShardSampler(len(self.dataset(split)), rank, world_size) if world_size > 1 else None
        return self._loader(self.dataset(split), self.eval_batch_size, sampler=sampler)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        if batch.dtype == torch.uint8:
            batch = to_model_range(batch, self.pixel_mean, self.pixel_std)
        trainer = self.trainer
        if trainer is not None and trainer.training:
            # Called once per batch that reaches training_step (after any prefetching): the loader's position.
            if self.train_sampler is not None:
                self.train_sampler.batch_trained()
            if self.flip:
                batch = random_horizontal_flip(
                    batch, derived_seed(self.seed, "flip", trainer.global_step, trainer.global_rank)
                )
        return batch
