"""The token export format of ``python -m vqbench.tokenize``, and a Dataset that reads it back.

A directory holds:

- ``tokens.npy``: every image's token ids, one row per image (and per flipped copy), ``rows x h x w`` (``x R`` for
  residual VQ), in the smallest unsigned integer type that holds K - 1; memory-mapped, so a generative model's data
  loader reads only the rows it asks for.
- ``index.tsv``: ``row``, ``image`` (the file's path under the data root, or ``SPLIT/N`` for in-memory datasets),
  ``flipped`` (0 or 1). Rows 0..N-1 are the images in the dataset's order; with ``flip=true``, rows N..2N-1 are their
  horizontal flips, in the same order.
- ``metadata.json``: the checkpoint, its config (with the data overrides), the split, the token grid, K, the dtype,
  the copies, the rows of unreadable images that were skipped (``data.skip_corrupt=true``), and ``complete``.
- ``progress/``: one file per finished chunk of images, so that an interrupted export resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vqbench.errors import VqbenchError

TOKENS_FILE = "tokens.npy"
INDEX_FILE = "index.tsv"
METADATA_FILE = "metadata.json"
PROGRESS_DIR = "progress"


def token_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id 0..K-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def read_metadata(directory: Path) -> dict:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise VqbenchError(f"{directory} holds no {METADATA_FILE}; it is not the out= of python -m vqbench.tokenize")
    return json.loads(path.read_text())


class TokenDataset(Dataset):
    """The token ids of a finished export, one item per image (and flipped copy): a LongTensor h x w (x R).

    ``images[i]`` and ``flipped[i]`` say which image item ``i`` is. Rows of images that could not be read
    (``data.skip_corrupt=true``) are left out.
    """

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.metadata = read_metadata(directory)
        if not self.metadata.get("complete"):
            raise VqbenchError(
                f"the export in {directory} is not finished; run the same python -m vqbench.tokenize command again "
                "to finish it"
            )
        self.tokens = np.load(directory / TOKENS_FILE, mmap_mode="r")
        skipped = set(self.metadata["skipped_rows"])
        self.rows, self.images, self.flipped = [], [], []
        for line in (directory / INDEX_FILE).read_text().splitlines()[1:]:
            row, image, flipped = line.split("\t")
            if int(row) not in skipped:
                self.rows.append(int(row))
                self.images.append(image)
                self.flipped.append(flipped == "1")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(self.tokens[self.rows[index]].astype(np.int64))
