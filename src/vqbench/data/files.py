"""A dataset of image files with one preprocessing transform: the building block of every file-based source."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vqbench.data.images import open_image, to_uint8_tensor
from vqbench.errors import DataError

log = logging.getLogger("vqbench.data")


class ImageFiles(Dataset):
    """``files`` decoded to ``channels`` channels and passed through ``transform``; items are uint8 C x H x W.

    ``name`` identifies the source in messages and cache file names. With ``skip_corrupt`` an unreadable file yields
    None (the data module's collate drops it) and a warning naming it; otherwise it is a DataError naming it.
    A transform with ``random = True`` makes the dataset uncacheable. ``viewer``: decode as an image viewer shows the
    file (EXIF orientation, alpha over white; ``data=folder``) rather than as the named datasets' loaders did
    (``vqbench.data.images``).
    """

    def __init__(
        self,
        files: Sequence[Path],
        transform: Callable[[Image.Image], Image.Image],
        channels: int,
        name: str,
        root: Path,
        skip_corrupt: bool = False,
        viewer: bool = False,
    ):
        if channels not in (1, 3):
            raise DataError(f"data.channels must be 1 or 3 for image files, got {channels}")
        self.files = list(files)
        self.transform = transform
        self.channels = channels
        self.name = name
        self.root = Path(root)
        self.skip_corrupt = skip_corrupt
        self.viewer = viewer

    @property
    def cacheable(self) -> bool:
        return not getattr(self.transform, "random", False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor | None:
        path = self.files[index]
        try:
            image = open_image(path, self.channels, self.viewer)
            try:
                image = self.transform(image)
            except ValueError as error:
                raise DataError(f"cannot preprocess image {path}: {error}") from None
        except DataError:
            if not self.skip_corrupt:
                raise
            log.warning("skipping unreadable image %s (data.skip_corrupt=true)", path)
            return None
        return to_uint8_tensor(image)

    def fingerprint(self) -> str:
        """A hash of everything the preprocessed pixels depend on: each file's path, size and modification time, the
        transform, the channel count and ``skip_corrupt`` (a cache that left out unreadable images must not serve a
        run that asked for them to be an error). Stat-ing 200k files takes about a second, far less than decoding
        them."""
        digest = hashlib.sha256()
        settings = {"transform": repr(self.transform), "channels": self.channels, "skip_corrupt": self.skip_corrupt}
        if self.viewer:  # only then: the named datasets' caches, written before it existed, stay valid
            settings["decode"] = "viewer"
        digest.update(json.dumps({**settings, "version": 1}).encode())
        for path in self.files:
            stat = os.stat(path)
            digest.update(f"{path.relative_to(self.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]
