"""The files of a tokenizer export (``python -m vqbench.export``; a Hugging Face Hub model repository as it stands),
and how one is read back: ``config.json`` (format, resolved config, provenance), ``model.safetensors`` (weights only).
Read by ``vqbench.load_tokenizer``; written by vqbench.export."""

from __future__ import annotations

import json
from pathlib import Path

from vqbench.errors import VqbenchError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
FORMAT = "vqbench-tokenizer"


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds a vqbench export (its config.json says so)."""
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export(folder: str | Path, trusted_modules=()) -> dict:
    """An export folder as the payload of a checkpoint (its config as YAML, its weights as the tokenizer's state dict),
    for ``vqbench.load_tokenizer(DIR)`` to rebuild exactly as it does a checkpoint. Its config is data, checked like a
    checkpoint's (``vqbench.checkpoint.check_stored_config``) before anything is built."""
    from omegaconf import OmegaConf
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vqbench.checkpoint import check_stored_config

    folder = Path(folder)
    if not is_export(folder) or not (folder / WEIGHTS_FILE).is_file():
        raise VqbenchError(
            f"{folder} is not a vqbench export (it needs {CONFIG_FILE} with format {FORMAT} and {WEIGHTS_FILE}); "
            "write one with python -m vqbench.export ckpt=... out=DIR"
        )
    record = json.loads((folder / CONFIG_FILE).read_text())
    check_stored_config(record.get("config"), str(folder), trusted_modules)
    try:
        weights = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError) as error:
        raise VqbenchError(f"{folder / WEIGHTS_FILE} cannot be read ({error}); export the checkpoint again") from None
    # The same path as a checkpoint: the config rebuilds the model, the weights load strictly into it.
    return {
        "vqbench_config": OmegaConf.to_yaml(OmegaConf.create(record["config"])),
        "state_dict": {f"tokenizer.{name}": tensor for name, tensor in weights.items()},
    }


def download(repo: str) -> Path:
    """The local copy of a Hugging Face Hub repository (``OWNER/NAME``, ``OWNER/NAME@REVISION``) holding an export:
    only its config.json, model.safetensors and README.md are fetched (huggingface_hub's cache; ``HF_HUB_OFFLINE=1``
    uses the cached copy)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise VqbenchError("loading from the Hugging Face Hub needs huggingface_hub: pip install -e '.[hub]'") from None
    repo_id, _, revision = repo.partition("@")
    try:
        path = snapshot_download(
            repo_id, revision=revision or None, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, README_FILE]
        )
    except Exception as error:  # huggingface_hub raises many kinds (offline, not found, gated, bad name)
        raise VqbenchError(
            f"cannot fetch hf://{repo} from the Hugging Face Hub: {type(error).__name__}: {error}"
        ) from None
    return Path(path)
