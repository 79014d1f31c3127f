"""FFHQ: a folder of PNG faces (1024, 256 or 128 pixels; sub-folders allowed), resized on load to ``resolution``.

Split as LL-VQ-VAE does (AGKhalil/ll-vq-vae): 60,000 train / 10,000 held out of the 70,000 images by a fixed-seed
permutation; another number of images is split in the same 6 : 1 proportion. There is no separate validation set,
so ``val`` and ``test`` are both the held-out images (no model selection uses them; limit validation cost with
``trainer.limit_val_batches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vqbench.data.files import ImageFiles
from vqbench.data.images import find_images, require_root
from vqbench.data.splits import holdout_size, seeded_split
from vqbench.data.transforms import ResizeSquare
from vqbench.errors import DataError

LAYOUT = "the FFHQ PNG files (e.g. images1024x1024/00000/00000.png; any sub-folders)"


def ffhq_split(
    split: str, root: str | None, resolution: int = 1024, channels: int = 3, seed: int = 0, skip_corrupt=False
) -> ImageFiles:
    base = require_root(root, "ffhq", LAYOUT)
    files = find_images(base, extensions=(".png",))
    if len(files) < 2:
        raise DataError(f"data.root={base} holds {len(files)} PNG files; data=ffhq expects {LAYOUT}")
    train, held_out = seeded_split(files, holdout_size(len(files), 60_000, 10_000), seed)
    chosen = train if split == "train" else held_out
    return ImageFiles(chosen, evaluation_transform({}, resolution), channels, "ffhq", base, skip_corrupt)


def evaluation_transform(settings: Mapping[str, Any], resolution: int) -> ResizeSquare:
    """The preprocessing of every split: a resize to ``resolution`` x ``resolution``."""
    return ResizeSquare(resolution)
