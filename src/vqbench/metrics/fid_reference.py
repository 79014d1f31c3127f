"""Reference statistics of rFID (mu, sigma of the reference images' features), computed once per dataset and
protocol and cached with a checksum.

A cache entry is ``<cache_dir>/<protocol id>-<dataset fingerprint>-<weights digest>.npz`` (mu, sigma, count)
beside a ``.sha256`` file holding the SHA-256 of the ``.npz``; the weights digest is the SHA-256 of the feature
network's weights file, so statistics of other weights are never reused. The fingerprint is the SHA-256 of the
evaluated split's identity: the resolved data config without its loader-only keys, the split, its number of images
and the bytes of its first image. An entry whose checksum does not match (a truncated or edited file) is ignored with
a warning and rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: data.* keys that change how images are loaded, not which pixels they are
LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "cache", "cache_dir", "skip_corrupt", "flip")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/vqbench/rfid_reference (default ~/.cache/vqbench/rfid_reference)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqbench" / "rfid_reference"


def dataset_fingerprint(data_config: dict, split: str, images: int, first_image: Tensor) -> str:
    """SHA-256 (hex, 16 characters) of what decides the reference pixels."""
    identity = {k: v for k, v in data_config.items() if k not in LOADER_KEYS}
    digest = hashlib.sha256(json.dumps([identity, split, images], sort_keys=True, default=str).encode())
    digest.update(first_image.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | Path | None, protocol_id: str, fingerprint: str, weights_digest: str) -> Path:
    """``<cache_dir>/<protocol>-<dataset fingerprint>-<weights digest>.npz``."""
    return Path(cache_dir or default_cache_dir()) / f"{protocol_id}-{fingerprint}-{weights_digest}.npz"


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex, 16 characters) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _checksum_file(path: Path) -> Path:
    return path.with_suffix(".sha256")


def load_reference(path: Path) -> tuple[Tensor, Tensor, int] | None:
    """(mu, sigma, count) from a verified cache entry, or None (absent, or its checksum does not match)."""
    checksum = _checksum_file(path)
    if not path.is_file() or not checksum.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != checksum.read_text().strip():
        log.warning("rFID reference statistics %s do not match their checksum; computing them again", path)
        return None
    with np.load(io.BytesIO(data)) as arrays:
        return torch.from_numpy(arrays["mu"]), torch.from_numpy(arrays["sigma"]), int(arrays["count"])


def save_reference(path: Path, mu: Tensor, sigma: Tensor, count: int) -> None:
    """Writes the entry and its checksum, each atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu.double().numpy(), sigma=sigma.double().numpy(), count=np.int64(count))
    data = buffer.getvalue()
    for target, content in ((path, data), (_checksum_file(path), hashlib.sha256(data).hexdigest().encode())):
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, target)
