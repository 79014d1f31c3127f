"""CelebA in its standard layout: ``img_align_celeba/*.jpg`` and ``list_eval_partition.txt``.

Only those two are read, so a user who has just the aligned images and the partition file can train; torchvision's
CelebA class would also demand the attribute files and their md5 sums. The partition file's rows are
``000001.jpg 0`` (0 train, 1 val, 2 test); Kaggle's ``list_eval_partition.csv`` (``image_id,partition``) works too.
``root`` may also be the parent folder of ``celeba/`` (torchvision's layout).

Crops: ``seed`` = 128x128 at top 57, left 25, resized to ``resolution`` (the CelebA-64 crop of
xyfJASON/visual-tokenizer-pytorch, whose tables the CelebA sweeps reproduce); ``llvq`` = CenterCrop(148), resized only
if ``resolution`` is not 148 (AGKhalil/ll-vq-vae).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vqbench.data.files import ImageFiles
from vqbench.data.images import require_root
from vqbench.data.transforms import CenterCropThenResize, CropThenResize
from vqbench.errors import ConfigError, DataError

LAYOUT = "img_align_celeba/*.jpg and list_eval_partition.txt"
PARTITIONS = {"train": 0, "val": 1, "test": 2}
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")


def _locate(root: Path) -> Path:
    for candidate in (root, root / "celeba"):
        if (candidate / "img_align_celeba").is_dir():
            return candidate
    raise DataError(f"data.root={root} has no img_align_celeba/ folder; data=celeba expects {LAYOUT} in it")


def read_partitions(path: Path) -> dict[str, int]:
    """file name -> partition number."""
    partitions = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0] == "image_id":
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"{path} line {number} is {line!r}; expected 'FILE.jpg 0|1|2'")
        partitions[fields[0]] = int(fields[1])
    return partitions


def celeba_transform(crop: str, resolution: int):
    if crop == "seed":
        return CropThenResize(top=57, left=25, size=128, resolution=resolution)
    if crop == "llvq":
        return CenterCropThenResize(crop=148, resolution=resolution)
    raise ConfigError(
        f"data.make_dataset.crop must be 'seed' (128x128 at 57, 25) or 'llvq' (CenterCrop 148), got {crop!r}"
    )


def celeba_split(
    split: str, root: str | None, crop: str = "seed", resolution: int = 64, channels: int = 3, skip_corrupt=False
) -> ImageFiles:
    transform = celeba_transform(crop, resolution)
    base = _locate(require_root(root, "celeba", LAYOUT))
    partition_file = next((base / f for f in PARTITION_FILES if (base / f).is_file()), None)
    if partition_file is None:
        raise DataError(
            f"{base} has no list_eval_partition.txt; data=celeba expects {LAYOUT}. It is in the CelebA release "
            "(Eval/list_eval_partition.txt)"
        )
    partitions = read_partitions(partition_file)
    names = sorted(name for name, part in partitions.items() if part == PARTITIONS[split])
    if not names:
        raise DataError(f"{partition_file} lists no images of split {split!r} (partition {PARTITIONS[split]})")
    images = base / "img_align_celeba"
    present = {p.name for p in images.iterdir()}
    missing = [n for n in names if n not in present]
    if missing:
        raise DataError(
            f"{len(missing)} of the {len(names)} {split} images listed in {partition_file} are not in {images} "
            f"(first: {missing[0]}); the folder and the partition file must come from the same CelebA release"
        )
    return ImageFiles([images / n for n in names], transform, channels, "celeba", base, skip_corrupt)


def evaluation_transform(settings: Mapping[str, Any], resolution: int):
    """The preprocessing of every split (``data.make_dataset.crop``)."""
    return celeba_transform(settings.get("crop", "seed"), resolution)
