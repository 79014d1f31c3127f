"""The preprocessed cache (``data.cache=true``): decode, crop and resize every image once into a uint8 array file.

Decoding full-size JPEGs is what starves a small tokenizer: CelebA at 64x64 needs tens of thousands of images per
second, far more than a few CPU cores decode. The cache stores the preprocessed pixels as one N x C x H x W uint8
``.npy`` file that later runs memory-map, so an item is a slice copy.

File names carry the source's fingerprint (files, sizes, modification times, transform, channels, skip_corrupt): a
changed source or preprocessing gives a new file, i.e. a rebuild. The array is written under a temporary name and
renamed, and the ``.json`` beside it is written last, so an interrupted build is never mistaken for a finished cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vqbench.data.files import ImageFiles
from vqbench.errors import DataError

log = logging.getLogger("vqbench.data")


def cache_paths(source: ImageFiles, cache_dir: Path) -> tuple[Path, Path]:
    # The name holds no split: ImageNet's val and test are the same files and share one cache.
    stem = f"{source.name}-{source.fingerprint()}"
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def _writable_cache_dir(cache_dir: str | os.PathLike | None, source: ImageFiles) -> Path:
    folder = Path(cache_dir).expanduser() if cache_dir else source.root / ".vqbench_cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise DataError(
            f"cannot write the preprocessed cache to {folder} ({error.strerror}); pass data.cache_dir=PATH, a "
            "writable folder with room for N x C x H x W bytes"
        ) from None
    return folder


def _collate_keep_none(items: list[Tensor | None]) -> list[Tensor | None]:
    return items


def build_cache(source: ImageFiles, split: str, cache_dir: str | os.PathLike | None, num_workers: int) -> Path:
    """Writes the cache of one split unless an up-to-date one exists; returns the path of its ``.json``."""
    folder = _writable_cache_dir(cache_dir, source)
    array_path, meta_path = cache_paths(source, folder)
    if meta_path.is_file() and array_path.is_file():
        return meta_path
    if len(source) == 0:
        raise DataError(f"split {split!r} of data={source.name} at {source.root} is empty; nothing to cache")
    first = next((item for item in (source[i] for i in range(len(source))) if item is not None), None)
    if first is None:
        raise DataError(f"no image of split {split!r} of data={source.name} at {source.root} could be read")
    shape = (len(source), *first.shape)
    log.info("building the preprocessed cache %s (%d images of %s)", array_path, len(source), tuple(first.shape))
    started = time.perf_counter()
    partial = array_path.with_name(array_path.name + f".partial-{os.getpid()}")
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    loader = DataLoader(source, batch_size=64, num_workers=num_workers, collate_fn=_collate_keep_none)
    kept, skipped = 0, []
    index = 0
    for batch in loader:
        for item in batch:
            if item is None:
                skipped.append(str(source.files[index].relative_to(source.root)))
            elif tuple(item.shape) != shape[1:]:
                raise DataError(
                    f"{source.files[index]} preprocesses to {tuple(item.shape)}, the others to {shape[1:]}; "
                    "the cache needs images of one size"
                )
            else:
                array[kept] = item.numpy()
                kept += 1
            index += 1
    array.flush()
    del array
    os.replace(partial, array_path)
    meta = {
        "source": str(source.root),
        "dataset": source.name,
        "transform": repr(source.transform),
        "channels": source.channels,
        "images": kept,
        "skipped_unreadable": skipped,
        "shape": list(shape[1:]),
        "seconds": round(time.perf_counter() - started, 2),
    }
    tmp = meta_path.with_name(meta_path.name + f".partial-{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_path)
    if skipped:
        log.warning("the %s cache skipped %d unreadable images (listed in %s)", split, len(skipped), meta_path)
    log.info("cached %d images in %.1f s", kept, meta["seconds"])
    return meta_path


class CachedImages(Dataset):
    """The items of a built cache: uint8 C x H x W tensors read from a memory-mapped array."""

    def __init__(self, meta_path: Path):
        meta = json.loads(Path(meta_path).read_text())
        self.meta_path = Path(meta_path)
        self.length = meta["images"]
        self.array_path = self.meta_path.with_suffix(".npy")
        self._array = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return self.length

    def _open(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(np.array(self._open()[index]))

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        # The DataLoader fetches a whole batch with one fancy-indexed read instead of one call per image.
        return list(torch.from_numpy(self._open()[np.asarray(indices)]).unbind(0))

    def __getstate__(self) -> dict:
        # Worker processes re-open the memory map instead of pickling it.
        return {**self.__dict__, "_array": None}
