"""Any folder of images (recursively; hidden folders skipped), split into train / held out by a fixed seed.

Images are resized to ``resolution`` x ``resolution`` (bilinear, antialiased), or centre-cropped to a square first
with ``center_crop=true`` so that faces and objects keep their aspect ratio. ``val`` and ``test`` are both the
held-out images.

Files are decoded as an image viewer shows them: rotated by their EXIF orientation (phone photos), transparency
over white, 16-bit scaled to 8 (``vqbench.data.images``). Each file is read once, by its resolved path, so a symbolic
link can neither loop nor put one image into both splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqbench.data.files import ImageFiles
from vqbench.data.images import IMAGE_EXTENSIONS, find_images, require_root
from vqbench.data.splits import seeded_split
from vqbench.data.transforms import CenterCropADM, ResizeSquare
from vqbench.errors import ConfigError, DataError

LAYOUT = f"image files ({', '.join(IMAGE_EXTENSIONS)}), in any sub-folders"


def folder_split(
    split: str,
    root: str | None,
    resolution: int = 64,
    channels: int = 3,
    holdout_fraction: float = 0.1,
    center_crop: bool = True,
    seed: int = 0,
    skip_corrupt: bool = False,
) -> ImageFiles:
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"data.make_dataset.holdout_fraction must be in (0, 1), got {holdout_fraction}")
    base = require_root(root, "folder", LAYOUT)
    files = find_images(base)
    if len(files) < 2:
        raise DataError(f"data.root={base} holds {len(files)} image files; data=folder needs at least 2 {LAYOUT}")
    train, held_out = seeded_split(files, max(1, round(len(files) * holdout_fraction)), seed)
    transform = evaluation_transform({"center_crop": center_crop}, resolution)
    chosen = train if split == "train" else held_out
    return ImageFiles(chosen, transform, channels, "folder", base, skip_corrupt, viewer=True)


def evaluation_transform(settings: Mapping[str, Any], resolution: int) -> CenterCropADM | ResizeSquare:
    """The preprocessing of every split: centre crop (``center_crop=true``) or a resize to a square."""
    return CenterCropADM(resolution) if settings.get("center_crop", True) else ResizeSquare(resolution)
