"""Finding and decoding image files, with errors that name the file.

Every dataset item is a uint8 tensor C x H x W; the data module turns batches into floats in [-1, 1] on the
accelerator (4x less host-to-device traffic than floats, and no per-image float work in the loader workers).

Scans (``find_images``) follow symbolic links but enter each directory once (a link back to a folder above it is a
loop: skipped, with a warning naming it) and keep each file once by its resolved path, so one image can neither
repeat nor land in two splits.

Decoding (``open_image``) gives 8-bit RGB or L whatever the file stores (docs/datasets.md):

- 16-bit grey (PIL modes I;16*, I): v -> round(v * 255 / 65535), not PIL's ``convert``, which clips every value
  above 255 to white. 16-bit RGB(A) PNGs arrive from PIL as 8-bit already (their high byte: floor(v / 256)).
- palette (P, PA), grey+alpha (LA), CMYK (JPEG, Adobe's inverted CMYK included), RGBA: PIL's ``convert``.
- ``viewer=True`` (``data=folder``): as an image viewer shows the file: rotated by its EXIF orientation tag
  (``PIL.ImageOps.exif_transpose``), transparent pixels (alpha, or a palette's transparent index) composited over
  white. ``viewer=False`` (the named datasets): no EXIF rotation and alpha dropped, as the loaders behind their
  tables do (``PIL.Image.open(...).convert("RGB")``: torchvision's ImageFolder and CelebA).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from vqbench.errors import DataError

log = logging.getLogger("vqbench.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def require_root(root: str | os.PathLike | None, dataset: str, layout: str) -> Path:
    """``data.root`` as a Path, or a DataError that says what the folder must contain."""
    if root is None or str(root) == "":
        raise DataError(f"data={dataset} needs data.root=PATH, the folder that holds {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root={root} is not a directory; data={dataset} expects a folder that holds {layout}")
    return path


def find_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    """Every image file under ``folder`` (recursively, hidden folders skipped), in a fixed sorted order, each file
    once (see ``scan_images``)."""
    return list(scan_images(folder, extensions))


def scan_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[Path, str]:
    """Path -> resolved path of every image file under ``folder``, sorted by path.

    Symbolic links are followed, but each directory is entered once (by device and inode): a link to a folder above
    it (a loop) is skipped with a warning, and a second link to a folder already scanned adds nothing. A file
    reached by two paths (a link to a file, or a linked folder) is kept once, under its first path in sorted order.
    Only links are resolved (one ``realpath`` per folder and per linked file), so scanning stays a directory walk.
    """
    found: dict[Path, str] = {}
    owners: dict[str, Path] = {}
    entered: dict[tuple[int, int], str] = {}
    repeats = 0

    def walk(directory: str, ancestors: tuple[tuple[int, int], ...]) -> None:
        nonlocal repeats
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise DataError(f"cannot list the folder {directory}: {error.strerror or error}") from None
        real_directory = os.path.realpath(directory)
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if entry.name.startswith("."):
                    continue
                stat = entry.stat()
                identity = (stat.st_dev, stat.st_ino)
                if identity in ancestors:
                    log.warning(
                        "skipping %s: a symbolic link loop (it leads back to %s, a folder above it)",
                        entry.path,
                        os.path.realpath(entry.path),
                    )
                elif identity in entered:
                    log.info("skipping %s: the same folder as %s, already scanned", entry.path, entered[identity])
                else:
                    entered[identity] = entry.path
                    walk(entry.path, (*ancestors, identity))
            elif entry.name.lower().endswith(extensions):
                resolved = (
                    os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_directory, entry.name)
                )
                if resolved in owners:
                    repeats += 1
                    continue
                owners[resolved] = Path(entry.path)
                found[Path(entry.path)] = resolved

    top = os.stat(folder)
    entered[(top.st_dev, top.st_ino)] = str(folder)
    walk(str(folder), ((top.st_dev, top.st_ino),))
    if repeats:
        log.warning(
            "%d image files under %s are reached by more than one path (symbolic links); each is read once",
            repeats,
            folder,
        )
    return dict(sorted(found.items()))


def open_image(path: Path, channels: int, viewer: bool = False) -> Image.Image:
    """Decodes one file to RGB (channels=3) or grayscale (channels=1), as the module docstring describes; with
    ``viewer`` as an image viewer shows it. A corrupt file is a DataError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            if viewer:
                image = ImageOps.exif_transpose(image)
            return to_mode(image, "RGB" if channels == 3 else "L", viewer)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot decode image {path}: {error}; replace or delete the file, or pass data.skip_corrupt=true "
            "to skip unreadable images (each one is logged)"
        ) from None


#: PIL modes of 16-bit grey images (PNG, TIFF, PGM); "I" is what older Pillow versions give a 16-bit PNG.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_mode(image: Image.Image, mode: str, composite_alpha: bool = False) -> Image.Image:
    """``image`` as 8-bit ``mode`` (RGB or L). 16-bit grey is scaled, v -> round(v * 255 / 65535) (values of a mode-I
    image outside 0..65535 are clipped); with ``composite_alpha`` transparent pixels are laid over white."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64).clip(0, 65535)
        image = Image.fromarray(np.rint(values * (255 / 65535)).astype(np.uint8))
    if composite_alpha and (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(mode)  # a copy also when the mode is already right: the opened file's image is closed


def to_uint8_tensor(image: Image.Image) -> Tensor:
    """PIL image -> uint8 C x H x W tensor."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy())
