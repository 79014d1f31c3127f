"""Released VQGAN checkpoints -> vqbench checkpoints (weights + the config that rebuilds them).

    python -m vqbench.convert taming   vqgan_imagenet_f16_1024/checkpoints/last.ckpt taming_f16_1024.ckpt
    python -m vqbench.convert llamagen vq_ds16_c2i.pt llamagen_vq16.ckpt
    python run.py +eval=true ckpt=taming_f16_1024.ckpt data=imagenet data.root=/path/to/imagenet

Formats:

- ``taming``: a taming-transformers ``VQModel`` Lightning checkpoint (Esser et al., "Taming Transformers for
  High-Resolution Image Synthesis", arXiv 2012.09841; CompVis/taming-transformers ``taming/models/vqgan.py``): the
  ``state_dict`` holds ``encoder.*`` / ``decoder.*`` (``taming/modules/diffusionmodules/model.py``: ``down.L.block.B``,
  ``down.L.attn.B``, ``down.L.downsample``, ``mid.block_1/attn_1/block_2``, and ``up.L...`` for the decoder),
  ``quantize.embedding.weight`` (K x d), ``quant_conv.*`` and ``post_quant_conv.*``. The training loss
  (``loss.*``: discriminator and LPIPS) is dropped.
- ``llamagen``: a LlamaGen tokenizer checkpoint (Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable
  Image Generation", arXiv 2406.06525; FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py``), e.g.
  ``vq_ds16_c2i.pt``: ``{"model": state_dict}`` (its ``"ema"`` weights when present, as LlamaGen's own evaluation
  script picks them) with ``encoder.conv_blocks.L.res.B`` / ``.attn.B`` / ``.downsample``, ``encoder.mid.0-2``, the
  decoder's ``conv_blocks`` in forward order (lowest resolution first), and l2-normalised codes. Its usage buffer
  ``quantize.codebook_used`` is dropped.

Both are the taming VQGAN layout under different names, so both become ``model=vqgan``: the widths, levels, blocks and
attention levels are read from the weights' shapes, and the config is the matching recipe (``+experiment=
imagenet256_vqgan_taming`` or ``imagenet256_vqgan_llamagen``) with them. Unknown keys, missing keys and shape
mismatches are errors that name them. The source file is read tensors-only: any other pickled Python object in it
(Lightning callbacks, argparse options) becomes an inert placeholder, so loading a downloaded file runs no code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from vqbench.errors import CheckpointError, VqbenchError
from vqbench.permissions import as_created
from vqbench.stored_config import CHECKPOINT_FORMAT

FORMATS = ("taming", "llamagen")
#: The released recipe each format's config is built on (conf/experiment/).
EXPERIMENTS = {"taming": "imagenet256_vqgan_taming", "llamagen": "imagenet256_vqgan_llamagen"}
#: Source keys that are not part of the tokenizer: the training loss, a usage statistic.
DROPPED = {"taming": ("loss.",), "llamagen": ("quantize.codebook_used",)}
#: Sub-module names inside a residual block and an attention block -> vqbench's (models/vqgan.py).
RESNET_PARTS = {"norm1": "body.0", "conv1": "body.2", "norm2": "body.3", "conv2": "body.5", "nin_shortcut": "skip"}
ATTENTION_PARTS = {"norm": "norm", "q": "q", "k": "k", "v": "v", "proj_out": "out"}


class _Placeholder:
    """Stands for a pickled Python object of a foreign checkpoint; keeps nothing and runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def load_foreign_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of a file written by another project. Python objects other than tensors and
    plain containers (which weights_only refuses) are replaced by placeholders; the tensors are read as they are."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        placeholders = [(type(name.rsplit(".", 1)[-1], (_Placeholder,), {}), name) for name in names]
        with torch.serialization.safe_globals(placeholders):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path} cannot be read as a PyTorch checkpoint ({error})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def _state_dict(payload: dict, path: Path, keys: tuple[str, ...]) -> dict[str, Tensor]:
    for key in keys:
        if isinstance(payload.get(key), dict):
            return payload[key]
    if payload and all(isinstance(v, Tensor) for v in payload.values()):
        return payload  # a bare state dict
    raise CheckpointError(f"{path} has no state dict under {' or '.join(keys)} (top-level keys: {sorted(payload)})")


@dataclass(frozen=True)
class Layout:
    """How one project names the modules of the taming VQGAN encoder/decoder (level L, block B, of ``levels``)."""

    encoder_block: Callable[[int, int], str]
    encoder_attention: Callable[[int, int], str]
    encoder_downsample: Callable[[int], str]
    encoder_middle: tuple[str, str, str]
    decoder_block: Callable[[int, int, int], str]
    decoder_attention: Callable[[int, int, int], str]
    decoder_upsample: Callable[[int, int], str]
    decoder_middle: tuple[str, str, str]


TAMING = Layout(
    encoder_block=lambda level, block: f"encoder.down.{level}.block.{block}",
    encoder_attention=lambda level, block: f"encoder.down.{level}.attn.{block}",
    encoder_downsample=lambda level: f"encoder.down.{level}.downsample",
    encoder_middle=("encoder.mid.block_1", "encoder.mid.attn_1", "encoder.mid.block_2"),
    decoder_block=lambda level, block, levels: f"decoder.up.{level}.block.{block}",
    decoder_attention=lambda level, block, levels: f"decoder.up.{level}.attn.{block}",
    decoder_upsample=lambda level, levels: f"decoder.up.{level}.upsample",
    decoder_middle=("decoder.mid.block_1", "decoder.mid.attn_1", "decoder.mid.block_2"),
)
LLAMAGEN = Layout(
    encoder_block=lambda level, block: f"encoder.conv_blocks.{level}.res.{block}",
    encoder_attention=lambda level, block: f"encoder.conv_blocks.{level}.attn.{block}",
    encoder_downsample=lambda level: f"encoder.conv_blocks.{level}.downsample",
    encoder_middle=("encoder.mid.0", "encoder.mid.1", "encoder.mid.2"),
    # The decoder's conv_blocks run from the lowest resolution (level levels - 1) up.
    decoder_block=lambda level, block, levels: f"decoder.conv_blocks.{levels - 1 - level}.res.{block}",
    decoder_attention=lambda level, block, levels: f"decoder.conv_blocks.{levels - 1 - level}.attn.{block}",
    decoder_upsample=lambda level, levels: f"decoder.conv_blocks.{levels - 1 - level}.upsample",
    decoder_middle=("decoder.mid.0", "decoder.mid.1", "decoder.mid.2"),
)
LAYOUTS = {"taming": TAMING, "llamagen": LLAMAGEN}


@dataclass(frozen=True)
class Architecture:
    """The ``model=vqgan`` settings and codebook a state dict's shapes imply."""

    channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_levels: tuple[int, ...]
    z_channels: int
    image_channels: int
    codebook_size: int
    codebook_dim: int


def _count(present: Callable[[int], bool]) -> int:
    """How many consecutive n = 0, 1, ... have ``present(n)``."""
    n = 0
    while present(n):
        n += 1
    return n


def _shape(state: dict[str, Tensor], key: str, path: Path, fmt: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path} is not a {fmt} VQGAN checkpoint: its state dict has no {key}")
    return state[key].shape


def infer_architecture(state: dict[str, Tensor], layout: Layout, path: Path, fmt: str) -> Architecture:
    conv_in = _shape(state, "encoder.conv_in.weight", path, fmt)
    channels = conv_in[0]
    levels = _count(lambda level: f"{layout.encoder_block(level, 0)}.conv1.weight" in state)
    blocks = _count(lambda block: f"{layout.encoder_block(0, block)}.conv1.weight" in state)
    if levels == 0 or blocks == 0:
        raise CheckpointError(
            f"{path} is not a {fmt} VQGAN checkpoint: no {layout.encoder_block(0, 0)}.* weights in its state dict"
        )
    widths = [_shape(state, f"{layout.encoder_block(level, 0)}.conv1.weight", path, fmt)[0] for level in range(levels)]
    if any(width % channels for width in widths):
        raise CheckpointError(f"{path}: encoder widths {widths} are not multiples of its first width {channels}")
    attention = tuple(level for level in range(levels) if f"{layout.encoder_attention(level, 0)}.q.weight" in state)
    decoder_attention = tuple(
        level for level in range(levels) if f"{layout.decoder_attention(level, 0, levels)}.q.weight" in state
    )
    if decoder_attention != attention:
        raise CheckpointError(
            f"{path}: attention at encoder levels {list(attention)} but decoder levels {list(decoder_attention)}; "
            "model=vqgan puts attention at the same levels in both"
        )
    codebook = _shape(state, "quantize.embedding.weight", path, fmt)
    image_in, image_out = conv_in[1], _shape(state, "decoder.conv_out.weight", path, fmt)[0]
    if image_in != image_out:
        raise CheckpointError(f"{path}: the encoder reads {image_in} channels but the decoder writes {image_out}")
    return Architecture(
        channels=int(channels),
        channel_mult=tuple(int(width // channels) for width in widths),
        num_res_blocks=int(blocks),
        attention_levels=attention,
        z_channels=int(_shape(state, "encoder.conv_out.weight", path, fmt)[0]),
        image_channels=int(image_in),
        codebook_size=int(codebook[0]),
        codebook_dim=int(codebook[1]),
    )


def module_names(arch: Architecture, layout: Layout) -> list[tuple[str, str, dict[str, str]]]:
    """(source module, vqbench module, renames of its parts; empty: parts keep their names), in the order
    ``VQGANEncoder``/``VQGANDecoder`` build their ``layers`` (models/vqgan.py)."""
    levels = len(arch.channel_mult)
    pairs: list[tuple[str, str, dict[str, str]]] = [("encoder.conv_in", "encoder.layers.0", {})]
    index = 1
    for level in range(levels):
        for block in range(arch.num_res_blocks):
            pairs.append((layout.encoder_block(level, block), f"encoder.layers.{index}", RESNET_PARTS))
            index += 1
            if level in arch.attention_levels:
                pairs.append((layout.encoder_attention(level, block), f"encoder.layers.{index}", ATTENTION_PARTS))
                index += 1
        if level != levels - 1:
            pairs.append((layout.encoder_downsample(level), f"encoder.layers.{index}", {}))
            index += 1
    for part, source in enumerate(layout.encoder_middle):
        pairs.append((source, f"encoder.layers.{index}.{part}", ATTENTION_PARTS if part == 1 else RESNET_PARTS))
    pairs += [("encoder.norm_out", f"encoder.layers.{index + 1}", {})]
    pairs += [("encoder.conv_out", f"encoder.layers.{index + 3}", {})]  # after the SiLU

    pairs += [("decoder.conv_in", "decoder.layers.0", {})]
    for part, source in enumerate(layout.decoder_middle):
        pairs.append((source, f"decoder.layers.1.{part}", ATTENTION_PARTS if part == 1 else RESNET_PARTS))
    index = 2
    for level in reversed(range(levels)):
        for block in range(arch.num_res_blocks + 1):
            pairs.append((layout.decoder_block(level, block, levels), f"decoder.layers.{index}", RESNET_PARTS))
            index += 1
            if level in arch.attention_levels:
                source = layout.decoder_attention(level, block, levels)
                pairs.append((source, f"decoder.layers.{index}", ATTENTION_PARTS))
                index += 1
        if level != 0:
            pairs.append((layout.decoder_upsample(level, levels), f"decoder.layers.{index}", {}))
            index += 1
    pairs += [("decoder.norm_out", f"decoder.layers.{index}", {}), ("decoder.conv_out", "decoder.conv_out", {})]
    pairs += [("quant_conv", "pre_quant", {}), ("post_quant_conv", "post_quant", {})]
    return pairs


def rename_keys(state: dict[str, Tensor], arch: Architecture, fmt: str) -> tuple[dict[str, str], list[str]]:
    """{vqbench key: source key} for the source's weights, and the source keys that have no place in the Tokenizer."""
    table = {source: (target, parts) for source, target, parts in module_names(arch, LAYOUTS[fmt])}
    renamed, unknown = {}, []
    for key in state:
        if key.startswith(DROPPED[fmt]):
            continue
        if key == "quantize.embedding.weight":
            renamed["quantizer.codebook"] = key
            continue
        module, _, leaf = key.rpartition(".")
        part = ""
        if module not in table:  # a part of a block (norm1, q, ...) or of a resampler (conv)
            module, _, part = module.rpartition(".")
        if module not in table or (part and table[module][1] and part not in table[module][1]):
            unknown.append(key)
            continue
        target, parts = table[module]
        renamed[".".join(filter(None, (target, parts.get(part, part), leaf)))] = key
    return renamed, unknown


def source_key(key: str, arch: Architecture, fmt: str) -> str:
    """The source's name of a Tokenizer key (for naming the missing ones)."""
    if key == "quantizer.codebook":
        return "quantize.embedding.weight"
    for source, target, parts in module_names(arch, LAYOUTS[fmt]):
        if key.startswith(target + "."):
            rest = key[len(target) + 1 :]
            for source_part, part in parts.items():
                if rest.startswith(part + "."):
                    rest = source_part + rest[len(part) :]
            return f"{source}.{rest}"
    return key


def converted_config(fmt: str, arch: Architecture):
    """The recipe's config (``+experiment=...``) with the architecture and codebook of the weights."""
    from vqbench.compose import compose_config

    overrides = [
        f"+experiment={EXPERIMENTS[fmt]}",
        f"model.channels={arch.channels}",
        f"model.channel_mult=[{','.join(map(str, arch.channel_mult))}]",
        f"model.num_res_blocks={arch.num_res_blocks}",
        f"model.attention_levels=[{','.join(map(str, arch.attention_levels))}]",
        f"model.z_channels={arch.z_channels}",
        f"data.channels={arch.image_channels}",
        f"codebook.size={arch.codebook_size}",
        f"codebook.dim={arch.codebook_dim}",
        f"codebook.l2_norm={'true' if fmt == 'llamagen' else 'false'}",
    ]
    if fmt == "llamagen":
        overrides.append("quantizer.l2_norm_mode=llamagen")  # losses on the normalised z, as vq_model.py computes them
    return compose_config(overrides)


def convert(fmt: str, source: Path, weights: str = "auto") -> dict:
    """The vqbench checkpoint (a dict for ``torch.save``) of the released checkpoint ``source``."""
    from vqbench.build import build_tokenizer

    if fmt not in FORMATS:
        raise VqbenchError(f"unknown format {fmt!r}; the formats are: {', '.join(FORMATS)}")
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist; give the path of the released checkpoint file")
    payload = load_foreign_checkpoint(source)
    if fmt == "taming":
        state = _state_dict(payload, source, ("state_dict",))
    else:
        order = {"auto": ("ema", "model", "state_dict"), "model": ("model",), "ema": ("ema",)}[weights]
        state = _state_dict(payload, source, order)
    arch = infer_architecture(state, LAYOUTS[fmt], source, fmt)
    config = converted_config(fmt, arch)
    tokenizer, _ = build_tokenizer(config)
    expected = tokenizer.state_dict()
    renamed, unknown = rename_keys(state, arch, fmt)
    unknown += [key for target, key in renamed.items() if target not in expected]
    if unknown:
        raise CheckpointError(f"{source}: unknown {fmt} keys: {', '.join(sorted(unknown))}")
    missing = [source_key(key, arch, fmt) for key in expected if key not in renamed]
    if missing:
        raise CheckpointError(f"{source}: missing keys: {', '.join(missing)}")
    mismatched = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[target].shape)})"
        for target, key in renamed.items()
        if state[key].shape != expected[target].shape
    ]
    if mismatched:
        raise CheckpointError(f"{source}: shape mismatches: {', '.join(mismatched)}")
    return {
        "state_dict": {f"tokenizer.{target}": state[key].float().contiguous() for target, key in renamed.items()},
        "vqbench_config": OmegaConf.to_yaml(config, resolve=False),
        "vqbench_format": CHECKPOINT_FORMAT,
        "global_step": None,
        "converted_from": {"format": fmt, "file": str(source.resolve()), "bytes": source.stat().st_size},
    }


def _save(checkpoint: dict, out: Path) -> None:
    """Written under a temporary name and renamed, so an interrupted conversion leaves no partial file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    as_created(fd)  # mkstemp's 0o600 would ignore the umask
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqbench.convert", description=__doc__.splitlines()[0])
    parser.add_argument("format", help=f"the checkpoint's origin: {', '.join(FORMATS)}")
    parser.add_argument("source", type=Path, help="the released checkpoint file")
    parser.add_argument("out", type=Path, help="the vqbench checkpoint to write (.ckpt)")
    parser.add_argument(
        "--weights",
        choices=("auto", "model", "ema"),
        default="auto",
        help="llamagen: which weights of the file (auto: the EMA when present, else the model)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise VqbenchError(f"{args.out} exists; choose another path or pass --overwrite")
        checkpoint = convert(args.format, args.source, args.weights)
        _save(checkpoint, args.out)
    except VqbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = OmegaConf.create(checkpoint["vqbench_config"])
    print(
        f"wrote {args.out}: model=vqgan channels {config.model.channels}, channel_mult "
        f"{list(config.model.channel_mult)}, {config.model.num_res_blocks} res blocks, attention at levels "
        f"{list(config.model.attention_levels)}, codebook {config.codebook.size} x {config.codebook.dim}"
        f"{' (l2-normalised)' if config.codebook.l2_norm else ''}\n"
        f"evaluate it: python run.py +eval=true ckpt={args.out} data=imagenet data.root=/path/to/imagenet"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
