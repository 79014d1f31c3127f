"""ImageNet: ``train/`` and ``val/`` trees of images (class sub-folders, or flat as the val set often ships).

``crop="adm"`` (default). Training: short side resized to a random size in [S, 1.25 S], a random S x S crop
(LlamaGen's ``random_crop_arr``), flip on the accelerator. Evaluation (``val`` and ``test`` are both ``val/``): short
side to S by box halvings and a bicubic step, centre S x S crop (ADM's ``center_crop_arr``). S = ``resolution``
(256, 128 or 64 in published tables). The random train crop cannot be cached; with ``data.cache=true`` only the
evaluation split is cached.

``crop="center"``: torchvision's Resize(S) + CenterCrop(S) for every split, training included (FSQ-pytorch and
Doraemonzzz/vector-quantize ``dataset.py``, the ImageNet-128 tables; set ``data.flip=false`` as they do). Every split
can then be cached.

Files are decoded as torchvision's ImageFolder does (``convert("RGB")``, no EXIF rotation). A file of ``train/`` that
is also in ``val/`` (the same file by its resolved path, through a symbolic link) is left out of the train split,
with a warning: no image is trained on and evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from vqbench.data.files import ImageFiles
from vqbench.data.images import require_root, scan_images
from vqbench.data.transforms import CenterCropADM, RandomResizedCropADM, ResizeThenCenterCrop
from vqbench.errors import ConfigError, DataError

log = logging.getLogger("vqbench.data")

LAYOUT = "train/ and val/ folders of images (train/n01440764/*.JPEG, ...; val/ may be flat)"
CROPS = ("adm", "center")


def imagenet_split(
    split: str,
    root: str | None,
    resolution: int = 256,
    channels: int = 3,
    skip_corrupt: bool = False,
    crop: str = "adm",
) -> ImageFiles:
    if crop not in CROPS:
        raise ConfigError(f"data.make_dataset.crop must be one of {', '.join(CROPS)}; got {crop!r}")
    base = require_root(root, "imagenet", LAYOUT)
    folder = base / ("train" if split == "train" else "val")
    if not folder.is_dir():
        raise DataError(f"{base} has no {folder.name}/ folder; data=imagenet expects {LAYOUT}")
    found = scan_images(folder)
    if not found:
        raise DataError(f"{folder} holds no image files; data=imagenet expects {LAYOUT}")
    files = list(found)
    if split == "train" and (base / "val").is_dir():
        evaluated = set(scan_images(base / "val").values())
        files = [path for path, resolved in found.items() if resolved not in evaluated]
        if len(files) < len(found):
            first = next(path for path, resolved in found.items() if resolved in evaluated)
            log.warning(
                "%d files of %s are also in %s (symbolic links to the same file, first: %s); they are left out of "
                "the train split",
                len(found) - len(files),
                folder,
                base / "val",
                first,
            )
    if split == "train" and crop == "adm":
        transform = RandomResizedCropADM(resolution)
    else:
        transform = evaluation_transform({"crop": crop}, resolution)
    return ImageFiles(files, transform, channels, "imagenet", base, skip_corrupt)


def evaluation_transform(settings: Mapping[str, Any], resolution: int) -> CenterCropADM | ResizeThenCenterCrop:
    """The val / test preprocessing of ``data.make_dataset`` settings ``settings``: ADM's centre crop, or
    Resize + CenterCrop with ``crop="center"``."""
    return ResizeThenCenterCrop(resolution) if settings.get("crop", "adm") == "center" else CenterCropADM(resolution)
