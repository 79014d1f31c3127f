"""FashionMNIST from torchvision's IDX files: ``FashionMNIST/raw/{train,t10k}-images-idx3-ubyte`` (plain or ``.gz``).

The IDX format is read here (a 16-byte header: magic 0x00000803, count, rows, cols, all big-endian; then uint8
pixels) because torchvision's class wants the extracted files in its own layout and would try to download otherwise.
``root`` may be the folder holding ``FashionMNIST/``, ``FashionMNIST/`` itself, or its ``raw/``.

Split as LL-VQ-VAE does (AGKhalil/ll-vq-vae): 55,000 train / 5,000 validation of the training file by a fixed-seed
permutation; ``test`` is the 10,000-image t10k file. Images are 28x28x1, resized (bilinear) only if ``resolution``
is not 28.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vqbench.data.images import require_root, to_uint8_tensor
from vqbench.data.splits import holdout_size, seeded_split
from vqbench.errors import ConfigError, DataError

LAYOUT = "FashionMNIST/raw/train-images-idx3-ubyte and t10k-images-idx3-ubyte (plain or .gz)"
FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
IDX_IMAGES_MAGIC = 0x00000803


def read_idx_images(path: Path) -> np.ndarray:
    """N x rows x cols uint8 array from an IDX3 file (gzip-compressed if the name ends in .gz)."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read {path}: {error}; re-extract or re-download the file") from None
    if len(data) < 16:
        raise DataError(f"{path} is {len(data)} bytes, shorter than an IDX header; the file is truncated")
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(f"{path} starts with 0x{magic:08x}, not the IDX image magic 0x{IDX_IMAGES_MAGIC:08x}")
    expected = 16 + int(count) * int(rows) * int(cols)
    if len(data) != expected:
        raise DataError(f"{path} holds {len(data)} bytes; its header ({count} x {rows} x {cols}) needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(int(count), int(rows), int(cols))


def _find(root: Path, name: str) -> Path:
    for folder in (root / "FashionMNIST" / "raw", root / "raw", root):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"data.root={root} has no {name} (or {name}.gz); data=fashion_mnist expects {LAYOUT}")


class ImageArray(Dataset):
    """In-memory uint8 images N x C x H x W, resized to ``resolution`` once if needed."""

    def __init__(self, images: Tensor, resolution: int):
        if images.shape[-1] != resolution:
            images = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", antialias=True)
            images = images.round().clamp(0, 255).to(torch.uint8)
        self.images = images.contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def fashion_mnist_split(
    split: str, root: str | None, resolution: int = 28, channels: int = 1, seed: int = 0
) -> ImageArray:
    if channels != 1:
        raise ConfigError(f"FashionMNIST is grayscale; set data.channels=1 (got {channels})")
    base = require_root(root, "fashion_mnist", LAYOUT)
    images = torch.from_numpy(read_idx_images(_find(base, FILES["test" if split == "test" else "train"])).copy())
    images = images[:, None]
    if split != "test":
        indices = list(range(len(images)))
        train, val = seeded_split(indices, holdout_size(len(indices), 55_000, 5_000), seed)
        images = images[train if split == "train" else val]
    return ImageArray(images, resolution)


@dataclass(frozen=True)
class AntialiasedResize:
    """``ImageArray``'s resize on a PIL image: torch's antialiased bilinear interpolation of the uint8 pixels, rounded
    back to uint8; none when the image already has ``resolution`` pixels."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.size == (self.resolution, self.resolution):
            return image
        pixels = to_uint8_tensor(image)[None].float()
        size = (self.resolution, self.resolution)
        resized = F.interpolate(pixels, size=size, mode="bilinear", antialias=True).round().clamp(0, 255)
        array = resized[0].to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def evaluation_transform(settings: Mapping[str, Any], resolution: int) -> AntialiasedResize:
    """The preprocessing of every split, for PIL images."""
    return AntialiasedResize(resolution)
