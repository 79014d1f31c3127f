"""Pretrained weights that torchvision downloads on first use (VGG16 for LPIPS, AlexNet, Inception for rFID).

Offline, a missing file must stop the run before its first step with a message that names the file, the folder it
is looked for in and how to put it there, instead of a urllib traceback deep inside a library.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vqbench.errors import VqbenchError


class MissingWeightsError(VqbenchError):
    pass


def hub_checkpoint_dir() -> Path:
    """Where torchvision looks for downloaded weights: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def ensure_downloaded(url: str, purpose: str, fallback: str = "") -> Path:
    """The local path of the file at ``url``, downloading it if absent; MissingWeightsError if that fails."""
    path = hub_checkpoint_dir() / os.path.basename(url)
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as error:  # urllib, ssl, socket and OS errors all mean "not available here"
        path.unlink(missing_ok=True)
        raise MissingWeightsError(
            f"{purpose} needs {path.name}, which is not in {path.parent} (TORCH_HOME/hub/checkpoints) and could not "
            f"be downloaded ({type(error).__name__}: {error}). Fetch {url} on a machine with internet and copy it to "
            f"{path} (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it).{fallback}"
        ) from None
    return path
