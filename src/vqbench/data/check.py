"""Before the first training step, every image file of a split is read once, so that an unreadable file stops the run
with one line naming it instead of crashing it hours later.

What "read" means per format (each catches truncated files and damaged data, not only a bad header):

- JPEG: decoded at 1/8 scale (PIL ``draft``): every byte of the entropy-coded data is still decoded, only the inverse
  DCT is smaller (about half the time of a full decode here).
- PNG: ``Image.verify`` reads every chunk and checks its CRC, without decompressing (about 1/30 of a full decode of a
  1024-pixel FFHQ face here).
- any other format: fully decoded.

The files are read in ``num_workers`` processes. A split that passed is remembered by its fingerprint (every file's
path, size and modification time; see ``ImageFiles.fingerprint``) in the preprocessed-cache folder, so later runs on
unchanged files skip the check; where that folder cannot be written, every run checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vqbench.data.files import ImageFiles
from vqbench.errors import DataError

log = logging.getLogger("vqbench.data")


def read_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image, or None if it can."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                if image.format == "JPEG":
                    image.draft(image.mode, (1, 1))
                image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return f"{type(error).__name__}: {error}"
    return None


class _Problems(Dataset):
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, str | None]:
        # The index travels with the answer: the message names the file it belongs to, whatever the batching.
        return index, read_problem(self.files[index])


def _as_list(items: list) -> list:
    return items


def _memo_path(source: ImageFiles, cache_dir: str | os.PathLike | None) -> Path:
    folder = Path(cache_dir).expanduser() if cache_dir else source.root / ".vqbench_cache"
    key = hashlib.sha256(f"{source.root.resolve()}\0{source.fingerprint()}".encode()).hexdigest()[:16]
    return folder / f"{source.name}-{key}.checked.json"


def check_files(source: ImageFiles, split: str, num_workers: int, cache_dir: str | os.PathLike | None) -> None:
    """Reads every file of ``source`` (see the module docstring); raises DataError naming the unreadable ones."""
    memo = _memo_path(source, cache_dir)
    if memo.is_file():
        return
    started = time.perf_counter()
    loader = DataLoader(_Problems(source.files), batch_size=64, num_workers=num_workers, collate_fn=_as_list)
    problems = []
    for batch in loader:
        problems += [(source.files[index], problem) for index, problem in batch if problem is not None]
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more; the first ones: {', '.join(p.name for p, _ in problems[1:4])})"
        raise DataError(
            f"cannot decode image {path} of the {split} split ({problem}){more if len(problems) > 1 else ''}; "
            "replace or delete it, or pass data.skip_corrupt=true to skip unreadable images (each one is logged)"
        )
    seconds = time.perf_counter() - started
    log.info("read all %d %s images of data=%s in %.1f s", len(source), split, source.name, seconds)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_name(f"{memo.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps({"images": len(source), "seconds": round(seconds, 2)}) + "\n")
        os.replace(partial, memo)
    except OSError as error:
        log.info("could not remember the check in %s (%s); the next run checks again", memo, error.strerror)
