"""The evaluation preprocessing of a data config, for images that do not come from the dataset's own files.

``vqbench.load_tokenizer(...).preprocess`` and ``python -m vqbench.tokenize`` run every image through the transform
that the checkpoint's data config applies to its evaluation split, so a tokenizer sees exactly what it was evaluated
on. Each dataset's transform is named here by its split factory (``data.make_dataset._target_``); a test builds each
dataset's evaluation split from a fixture and checks it uses the same transform, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image

from vqbench.data.celeba import celeba_transform
from vqbench.data.images import to_uint8_tensor
from vqbench.data.transforms import CenterCropADM, ResizeSquare
from vqbench.errors import ConfigError


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


@dataclass(frozen=True)
class AntialiasedResize:
    """FashionMNIST's resize (``fashion_mnist.ImageArray``): torch's antialiased bilinear interpolation of the uint8
    pixels, rounded back to uint8; none when the image already has ``resolution`` pixels."""

    resolution: int

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.size == (self.resolution, self.resolution):
            return image
        pixels = to_uint8_tensor(image)[None].float()
        size = (self.resolution, self.resolution)
        resized = F.interpolate(pixels, size=size, mode="bilinear", antialias=True).round().clamp(0, 255)
        array = resized[0].to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _folder(settings: DictConfig, resolution: int) -> Callable[[Image.Image], Image.Image]:
    return CenterCropADM(resolution) if settings.get("center_crop", True) else ResizeSquare(resolution)


#: Split factory (the last part of ``data.make_dataset._target_``) -> its evaluation transform.
EVALUATION_TRANSFORMS: dict[str, Callable[[DictConfig, int], Callable[[Image.Image], Image.Image]]] = {
    "imagenet_split": lambda settings, resolution: CenterCropADM(resolution),
    "celeba_split": lambda settings, resolution: celeba_transform(settings.get("crop", "seed"), resolution),
    "ffhq_split": lambda settings, resolution: ResizeSquare(resolution),
    "folder_split": _folder,
    "fashion_mnist_split": lambda settings, resolution: AntialiasedResize(resolution),
    "sample_split": lambda settings, resolution: CenterCrop(resolution),
}


def evaluation_transform(data: DictConfig) -> Callable[[Image.Image], Image.Image]:
    """The PIL transform that the data config ``data`` applies to the images of its evaluation split."""
    settings = data.make_dataset
    factory = str(settings.get("_target_", "")).rsplit(".", 1)[-1]
    if factory not in EVALUATION_TRANSFORMS:
        raise ConfigError(
            f"no evaluation preprocessing is known for data.make_dataset._target_={settings.get('_target_')}; "
            f"known: {', '.join(sorted(EVALUATION_TRANSFORMS))}"
        )
    return EVALUATION_TRANSFORMS[factory](settings, int(data.resolution))
