"""The embedded sample dataset: real photographs shipped inside scikit-image's package data.

It exists so that ``python run.py`` trains a real tokenizer on a fresh machine with no download. Train, val and test
draw 64x64 (``resolution``) crops from disjoint photographs; grayscale photographs are repeated to three channels.
Train crops are random on every access (the data module adds the random flip); val and test crops are fixed by
``seed``. Items are uint8 C x H x W tensors, like every source's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vqbench.errors import DataError

PHOTOS = {
    "train": [
        "astronaut.png",
        "coffee.png",
        "hubble_deep_field.jpg",
        "motorcycle_left.png",
        "motorcycle_right.png",
        "retina.jpg",
        "ihc.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "moon.png",
    ],
    "val": ["chelsea.png", "camera.png"],
    "test": ["rocket.jpg", "coins.png"],
}


def _photo_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def load_photo(name: str, channels: int) -> Tensor:
    """One photograph as a uint8 C x H x W tensor."""
    from skimage import io

    path = _photo_dir() / name
    if not path.is_file():
        raise DataError(
            f"sample photo {path} is missing; reinstall scikit-image (pip install --force-reinstall scikit-image)"
        )
    array = np.asarray(io.imread(path))
    if array.ndim == 2:
        array = array[..., None]
    array = array[..., :3]
    if channels == 3 and array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 1 and array.shape[-1] == 3:
        array = np.round(array @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


class SamplePhotos(Dataset):
    """``length`` crops of ``resolution`` pixels from the photographs of one split, as uint8 tensors."""

    def __init__(self, split: str, resolution: int = 64, length: int = 1024, channels: int = 3, seed: int = 0):
        if split not in PHOTOS:
            raise DataError(f"unknown split {split!r}; expected one of {sorted(PHOTOS)}")
        self.split = split
        self.resolution = resolution
        self.length = length
        self.photos = [load_photo(name, channels) for name in PHOTOS[split]]
        smallest = min(min(p.shape[1:]) for p in self.photos)
        if resolution > smallest:
            raise DataError(f"data.resolution={resolution} is larger than the smallest sample photo ({smallest} px)")
        self.fixed_crops = None if split == "train" else self._fixed_crops(seed)

    def _fixed_crops(self, seed: int) -> list[tuple[int, int, int]]:
        generator = torch.Generator().manual_seed(seed)
        crops = []
        for i in range(self.length):
            photo = i % len(self.photos)
            h, w = self.photos[photo].shape[1:]
            top = int(torch.randint(h - self.resolution + 1, (1,), generator=generator))
            left = int(torch.randint(w - self.resolution + 1, (1,), generator=generator))
            crops.append((photo, top, left))
        return crops

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if self.fixed_crops is not None:
            photo, top, left = self.fixed_crops[index]
            image = self.photos[photo]
        else:
            image = self.photos[index % len(self.photos)]
            h, w = image.shape[1:]
            top = int(torch.randint(h - self.resolution + 1, (1,)))
            left = int(torch.randint(w - self.resolution + 1, (1,)))
        return image[:, top : top + self.resolution, left : left + self.resolution].clone()


def sample_split(
    split: str,
    resolution: int = 64,
    channels: int = 3,
    train_length: int = 2048,
    val_length: int = 128,
    test_length: int = 256,
    seed: int = 0,
    crop: str | None = None,
) -> SamplePhotos:
    """The dataset of one split; lengths count crops (the train split is re-drawn every epoch).

    ``crop`` is accepted and ignored: when ``data=sample`` stands in for CelebA to scale a recipe down (e.g. the
    llvq sweep with ``data=sample``), the recipe's CelebA crop setting has nothing to act on here.
    """
    length = {"train": train_length, "val": val_length, "test": test_length}.get(split, 0)
    return SamplePhotos(split, resolution=resolution, length=length, channels=channels, seed=seed)


@dataclass(frozen=True)
class CenterCrop:
    """The centre ``resolution`` x ``resolution`` pixels, no resize: the sample data's evaluation crops are crops of
    the photographs at their own scale (at fixed random places; the centre is the deterministic choice here)."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if min(w, h) < self.resolution:
            raise ValueError(f"a {w}x{h} image is smaller than the {self.resolution}x{self.resolution} crop")
        top, left = (h - self.resolution) // 2, (w - self.resolution) // 2
        return image.crop((left, top, left + self.resolution, top + self.resolution))


def evaluation_transform(settings: Mapping[str, Any], resolution: int) -> CenterCrop:
    """The preprocessing of images from elsewhere: a centre crop at the photographs' own scale."""
    return CenterCrop(resolution)
