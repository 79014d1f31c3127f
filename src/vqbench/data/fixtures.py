"""Writers of small datasets in each real on-disk format, from the sample photographs (real image content).

Used by the tests and by `python -m vqbench.bench data`; every file is what the real dataset ships, only fewer.
``write_NAME(root)`` writes the data of ``data=NAME`` (conf/data/NAME.yaml) and returns its ``data.root``: the dataset
contract test (tests/test_dataset_contract.py) loads a batch of every dataset that has one.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from vqbench.data.sample import load_photo


def _photo_crops(count: int, width: int, height: int, seed: int = 0) -> list[Image.Image]:
    """``count`` distinct RGB crops of the sample photographs, each width x height."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(name, 3).permute(1, 2, 0).numpy() for name in ("astronaut.png", "coffee.png", "chelsea.png")]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = max(height / h, width / w)
        image = Image.fromarray(photo)
        if scale > 1:
            image = image.resize((int(w * scale) + 1, int(h * scale) + 1))
            w, h = image.size
        top, left = rng.integers(0, h - height + 1), rng.integers(0, w - width + 1)
        crops.append(image.crop((left, top, left + width, top + height)))
    return crops


def write_celeba(root: Path, partitions: tuple[int, int, int] = (6, 3, 3), csv: bool = False) -> Path:
    """img_align_celeba/000001.jpg ... (178x218 JPEGs) and list_eval_partition.txt (or Kaggle's .csv)."""
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    labels = [part for part, n in enumerate(partitions) for _ in range(n)]
    for i, (image, part) in enumerate(zip(_photo_crops(len(labels), 178, 218), labels, strict=True), start=1):
        name = f"{i:06d}.jpg"
        image.save(folder / name, quality=90)
        rows.append((name, part))
    if csv:
        text = "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in rows)
        (root / "list_eval_partition.csv").write_text(text)
    else:
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in rows))
    return root


def write_png_folder(root: Path, count: int, size: int, nested: bool = True) -> Path:
    """FFHQ-like PNGs: root/00000/00000.png ... (size x size)."""
    for i, image in enumerate(_photo_crops(count, size, size, seed=1)):
        folder = root / f"{i // 4 * 1000:05d}" if nested else root
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.png")
    return root


def write_ffhq(root: Path) -> Path:
    """A small FFHQ: 8 PNGs of 64x64 in numbered sub-folders."""
    return write_png_folder(root, 8, 64)


def write_folder(root: Path) -> Path:
    """A small folder of images for ``data=folder``: 8 PNGs of 48x48."""
    return write_png_folder(root, 8, 48)


def write_idx_images(path: Path, images: np.ndarray, compress: bool) -> Path:
    """An IDX3 file (magic 0x00000803, count, rows, cols big-endian, then uint8 pixels), gzipped if ``compress``."""
    data = struct.pack(">IIII", 0x00000803, *images.shape) + images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(root: Path, train: int = 24, test: int = 10, compress: bool = False) -> Path:
    """root/FashionMNIST/raw/{train,t10k}-images-idx3-ubyte[.gz] with distinct 28x28 images."""
    raw = root / "FashionMNIST" / "raw"
    rng = np.random.default_rng(0)
    write_idx_images(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (train, 28, 28)), compress)
    write_idx_images(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (test, 28, 28)), compress)
    return root


def write_imagenet(
    root: Path,
    classes: int = 2,
    per_class: int = 3,
    val: int = 4,
    flat_val: bool = True,
    sizes: tuple[tuple[int, int], ...] = ((300, 200), (180, 240), (512, 400)),
) -> Path:
    """ImageNet's layout: train/<synset id>/*.JPEG class folders (ids shaped like n01440764; the (width, height)
    ``sizes`` in turn, and one grayscale image) and val/ (flat or by class)."""
    index = 0
    for c in range(classes):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            w, h = sizes[index % len(sizes)]
            image = _photo_crops(1, w, h, seed=index)[0]
            if index == 1:
                image = image.convert("L")  # ImageNet has grayscale JPEGs
            image.save(folder / f"n{c:08d}_{index}.JPEG", quality=90)
            index += 1
    for i in range(val):
        folder = root / "val" if flat_val else root / "val" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = sizes[i % len(sizes)]
        _photo_crops(1, w, h, seed=100 + i)[0].save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)
    return root
