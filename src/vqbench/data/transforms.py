"""The preprocessing of each dataset, as small PIL transforms whose repr describes them exactly.

The repr of a deterministic transform is part of the preprocessed cache's key, so a cache is rebuilt whenever the
preprocessing changes. Random horizontal flips are not here: the data module applies them on the accelerator.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class CropThenResize:
    """A fixed ``size`` x ``size`` crop at (``top``, ``left``), then a bilinear antialiased resize to ``resolution``.

    The CelebA-64 convention of xyfJASON/visual-tokenizer-pytorch's VQ-VAE benchmarks: 128x128 at top 57, left 25 of the
    178x218 aligned faces, resized to 64x64.
    """

    top: int
    left: int
    size: int
    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if self.left + self.size > w or self.top + self.size > h:
            raise ValueError(
                f"a {w}x{h} image is too small for the {self.size}x{self.size} crop at top {self.top}, left {self.left}"
            )
        image = image.crop((self.left, self.top, self.left + self.size, self.top + self.size))
        return resize_square(image, self.resolution)


@dataclass(frozen=True)
class CenterCropThenResize:
    """torchvision's CenterCrop(``crop``) (offsets rounded as it does), then a bilinear resize if ``resolution``
    differs. LL-VQ-VAE's CelebA preprocessing is CenterCrop(148) without a resize (AGKhalil/ll-vq-vae)."""

    crop: int
    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if self.crop > w or self.crop > h:
            raise ValueError(f"a {w}x{h} image is smaller than the {self.crop}x{self.crop} centre crop")
        top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        return resize_square(image, self.resolution)


@dataclass(frozen=True)
class ResizeThenCenterCrop:
    """torchvision's ``Resize(S)`` then ``CenterCrop(S)`` on a PIL image: the short side to S with PIL's antialiased
    bilinear filter (the long side truncated to int(S * long / short)), then the centre S x S (offsets rounded).
    The preprocessing of every split in FSQ-pytorch and Doraemonzzz/vector-quantize (``dataset.py``)."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        short, long = min(w, h), max(w, h)
        size = (self.resolution, int(self.resolution * long / short))
        image = image.resize(size if w <= h else size[::-1], Image.Resampling.BILINEAR)
        w, h = image.size
        top, left = int(round((h - self.resolution) / 2.0)), int(round((w - self.resolution) / 2.0))
        return image.crop((left, top, left + self.resolution, top + self.resolution))


@dataclass(frozen=True)
class ResizeSquare:
    """A bilinear antialiased resize to ``resolution`` x ``resolution`` (FFHQ, FashionMNIST at other sizes)."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        return resize_square(image, self.resolution)


def resize_square(image: Image.Image, resolution: int) -> Image.Image:
    # PIL's BILINEAR widens its kernel when it downsamples, i.e. it antialiases like torchvision's Resize.
    if image.size == (resolution, resolution):
        return image
    return image.resize((resolution, resolution), Image.Resampling.BILINEAR)


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Guided-diffusion's resize: halve with a box filter while the short side is >= 2x the target, then bicubic.

    The box halvings make the final bicubic step a small one, so large photographs are not aliased.
    """
    while min(image.size) >= 2 * short_side:
        image = image.resize(tuple(s // 2 for s in image.size), Image.Resampling.BOX)
    scale = short_side / min(image.size)
    size = tuple(max(short_side, round(s * scale)) for s in image.size)
    return image.resize(size, Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class CenterCropADM:
    """ImageNet evaluation (ADM / guided-diffusion ``center_crop_arr``): short side to S, then the centre S x S."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        image = resize_short_side(image, self.resolution)
        w, h = image.size
        top, left = (h - self.resolution) // 2, (w - self.resolution) // 2
        return image.crop((left, top, left + self.resolution, top + self.resolution))


@dataclass(frozen=True)
class RandomResizedCropADM:
    """ImageNet training (LlamaGen ``random_crop_arr``): short side to a random size in [S, ``max_scale`` * S], then
    a random S x S crop. Random, so it is never cached."""

    resolution: int
    max_scale: float = 1.25

    random = True

    def __call__(self, image: Image.Image) -> Image.Image:
        short_side = random.randint(self.resolution, math.ceil(self.resolution * self.max_scale))
        image = resize_short_side(image, short_side)
        w, h = image.size
        top, left = random.randint(0, h - self.resolution), random.randint(0, w - self.resolution)
        return image.crop((left, top, left + self.resolution, top + self.resolution))
