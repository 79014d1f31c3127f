"""The token export format of ``python -m vqbench.tokenize``, and a Dataset that reads it back.

A directory holds:

- ``tokens.npy``: every image's token ids, one row per image (and per flipped copy), ``rows x h x w`` (``x R`` for
  residual VQ), in the smallest unsigned integer type that holds K - 1; memory-mapped, so a generative model's data
  loader reads only the rows it asks for.
- ``index.jsonl``: JSON Lines, one object per row: ``{"row": 0, "image": "train/n01/x.JPEG", "split": "train",
  "flipped": false}``; ``image`` is the file's path under the data root (or ``SPLIT/N`` for in-memory datasets). JSON
  escapes every character that could break a line or a field (tab, newline, quotes; ASCII only, so a file name that
  is not valid UTF-8 comes back as the same Python string), so any file name round-trips. Rows 0..N-1 are the images
  in the dataset's order; with ``flip=true``, rows N..2N-1 are their horizontal flips, in the same order. (Exports
  of earlier versions have ``index.tsv``, tab-separated ``row image flipped``; ``TokenDataset`` still reads it.)
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
INDEX_FILE = "index.jsonl"
#: The tab-separated index of earlier exports (a tab or newline in a file name corrupted it).
LEGACY_INDEX_FILE = "index.tsv"
METADATA_FILE = "metadata.json"
PROGRESS_DIR = "progress"


def token_dtype(codebook_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id 0..K-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def index_lines(image_ids: list[str], split: str, copies: int) -> list[str]:
    """The lines of ``index.jsonl``: every copy (0: original, 1: flipped) of every image, row by row."""
    return [
        json.dumps({"row": copy * len(image_ids) + i, "image": image, "split": split, "flipped": copy == 1})
        for copy in range(copies)
        for i, image in enumerate(image_ids)
    ]


def read_index(directory: Path) -> list[dict]:
    """The rows of an export's index (``index.jsonl``, or an earlier export's ``index.tsv``)."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        with open(directory / INDEX_FILE, encoding="ascii") as f:
            return [json.loads(line) for line in f if line.strip()]
    rows = []
    for line in (directory / LEGACY_INDEX_FILE).read_text().splitlines()[1:]:
        row, image, flipped = line.split("\t")
        rows.append({"row": int(row), "image": image, "flipped": flipped == "1"})
    return rows


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
        for entry in read_index(directory):
            if entry["row"] not in skipped:
                self.rows.append(entry["row"])
                self.images.append(entry["image"])
                self.flipped.append(entry["flipped"])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(self.tokens[self.rows[index]].astype(np.int64))
