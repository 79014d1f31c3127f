"""A weights-only tokenizer to share: ``model.safetensors`` and ``config.json``, no pickle, no training state.

    python -m vqbench.export ckpt=PATH out=DIR [use_ema=false]

A training checkpoint carries what the training needs to continue (optimizer and scheduler state, the weight EMA, the
data loader's position, a discriminator); a user of the tokenizer needs its weights and the config that rebuilds it.
``DIR`` receives:

- ``model.safetensors``: the tokenizer's state dict (encoder, quantizer, decoder; the weight EMA with
  ``use_ema=true``), in the safetensors format (tensors only: loading it runs no code);
- ``config.json``: ``format`` (``vqbench-tokenizer``), the resolved config that rebuilds the tokenizer, where the
  weights came from (checkpoint, step, trained weights or their EMA), the codebook size, token grid, image size and
  parameter count;
- ``README.md``: how to load it.

``vqbench.load_tokenizer(DIR)`` loads it (the same ``ImageTokenizer`` as from a checkpoint), rebuilding the model
from the config exactly as it does for a checkpoint. The folder is a Hugging Face Hub model repository as it stands:
upload it with ``huggingface_hub.upload_folder(repo_id=..., folder_path=DIR)`` (or ``hf upload REPO DIR``), and
``load_tokenizer("hf://OWNER/NAME")`` downloads and loads it (``pip install -e ".[hub]"``).

An ``out`` folder that is not empty and is not an earlier export is refused (nothing is written into it); an earlier
export in it is replaced. Bad input is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from vqbench.errors import OutputError, VqbenchError
from vqbench.export_format import CONFIG_FILE, FORMAT, README_FILE, WEIGHTS_FILE, is_export

USAGE = "usage: python -m vqbench.export ckpt=PATH out=DIR [use_ema=false]"
OPTIONS = {"ckpt", "out", "use_ema"}


def parse_arguments(argv: list[str]) -> dict:
    options = {}
    for argument in argv:
        key, equals, value = argument.partition("=")
        if not equals or key not in OPTIONS:
            raise VqbenchError(f"'{argument}' is not one of ckpt=PATH, out=DIR, use_ema=true|false. {USAGE}")
        options[key] = value
    for key in ("ckpt", "out"):
        if not options.get(key):
            raise VqbenchError(f"{key}=... is required. {USAGE}")
    use_ema = options.get("use_ema", "false").lower()
    if use_ema not in ("true", "false"):
        raise VqbenchError(f"use_ema={options['use_ema']}: expected true or false")
    return {"ckpt": options["ckpt"], "out": Path(options["out"]), "use_ema": use_ema == "true"}


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} is a file; give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise OutputError(
            f"out={out} is not empty and holds no vqbench export ({CONFIG_FILE} with format {FORMAT}); its files are "
            "kept. Give an empty or new folder"
        )


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file: readable by those who share the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_tokenizer(ckpt: str, out: Path, use_ema: bool = False) -> dict:
    """Writes the export of checkpoint ``ckpt`` into ``out`` (see the module docstring); returns its config.json."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    import vqbench
    from vqbench.api import tokenizer_from_checkpoint
    from vqbench.checkpoint import load_checkpoint

    _check_output(out)
    payload = load_checkpoint(ckpt, purpose="export")
    tokenizer = tokenizer_from_checkpoint(payload, ckpt, use_ema, "cpu")
    # contiguous copies: safetensors stores no views and no tensors that share memory
    weights = {name: tensor.detach().contiguous().clone() for name, tensor in tokenizer.tokenizer.state_dict().items()}
    record = {
        "format": FORMAT,
        "format_version": 1,
        "vqbench_version": vqbench.__version__,
        "source": {
            "checkpoint": str(Path(ckpt).resolve()),
            "step": payload.get("global_step"),
            "weights": "weight EMA" if use_ema else "trained weights",
        },
        "codebook_size": tokenizer.codebook_size,
        "token_grid": list(tokenizer.token_grid),
        "image_size": [tokenizer.channels, tokenizer.resolution, tokenizer.resolution],
        "parameters": sum(t.numel() for t in tokenizer.tokenizer.parameters()),
        "config": OmegaConf.to_container(tokenizer.config, resolve=True),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
        _atomic_write(out / README_FILE, lambda tmp: Path(tmp).write_text(_model_card(record)))
        # last: its presence (with the format) is what makes the folder an export
        _atomic_write(out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    except OSError as error:
        raise OutputError(f"cannot write the export into out={out} ({error.strerror or error})") from None
    return record


def _model_card(record: dict) -> str:
    model = record["config"].get("model", {})
    return (
        "---\nlibrary_name: vqbench\ntags: [visual-tokenizer, vqbench]\n---\n\n"
        "# vqbench tokenizer\n\n"
        f"Exported by `python -m vqbench.export` from `{Path(record['source']['checkpoint']).name}` "
        f"(step {record['source']['step']}, {record['source']['weights']}): {record['parameters']:,} parameters, "
        f"codebook size {record['codebook_size']}, {record['token_grid'][0]}x{record['token_grid'][1]} tokens per "
        f"{record['image_size'][1]}x{record['image_size'][2]} image. Encoder: "
        f"`{model.get('encoder', {}).get('_target_', '?')}`.\n\n"
        "```python\nfrom vqbench import load_tokenizer\n\n"
        'tok = load_tokenizer("THIS_FOLDER")  # or "hf://OWNER/NAME" for a Hugging Face Hub repository\n'
        "ids = tok.encode(tok.preprocess(images))\nimages_back = tok.decode(ids)\n```\n\n"
        "`config.json` holds the resolved vqbench config; `model.safetensors` the weights.\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(argument in ("-h", "--help") for argument in argv):
        print(__doc__)
        return 0
    try:
        args = parse_arguments(argv)
        record = export_tokenizer(args["ckpt"], args["out"], args["use_ema"])
    except VqbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args['out']}: {WEIGHTS_FILE} ({record['parameters']:,} parameters, {record['source']['weights']}) and "
        f"{CONFIG_FILE}; load it with vqbench.load_tokenizer({str(args['out'])!r})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
