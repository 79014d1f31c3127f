"""How much a tokenizer compresses an image: tokens per image, bits per image, bits per pixel and the compression ratio
against 8-bit pixels, from the quantizer's code space (``Quantizer.bits_per_position``).

    tokens per image  = h x w x R              (R ids per token position: the stages of residual VQ, else 1)
    bits per image    = h x w x b              (b = bits of one position's code)
    bits per pixel    = bits per image / (H x W)
    compression ratio = 8 x C x H x W / bits per image

b is log2 K for a codebook of K vectors (VQ, EMA, SimVQ, Gumbel), sum_i log2 L_i for FSQ's levels L_i, the bits of
LFQ, R x log2 K for residual VQ. These are fixed-length codes: an entropy coder on the tokens would do better.

A lattice (LL-VQ-VAE, arXiv:2310.09382) has no finite codebook: its tokens are integer vectors without a bound. For it
b is measured: log2 of the number of distinct token vectors observed over the evaluated split (the effective codebook
size), the length of a fixed-length code that numbers the vectors that occurred. It is empirical (another split can
hold other vectors) and leaves out the table of those vectors a decoder would need; when the effective size is not
available (more than a million distinct vectors) the figures are not reported.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from vqbench.models.tokenizer import Tokenizer

PIXEL_BITS = 8


def token_grid(tokenizer: Tokenizer, channels: int, resolution: int) -> tuple[int, int]:
    """(h, w) of the tokens of one ``channels x resolution x resolution`` image, traced on the meta device (shapes
    only, no memory or arithmetic)."""
    from vqbench.build import _meta_trace

    images = torch.empty(1, channels, resolution, resolution, device="meta")
    h, w = _meta_trace(tokenizer.pre_quant, _meta_trace(tokenizer.encoder, images)).shape[-2:]
    return int(h), int(w)


def compression_figures(
    tokenizer: Tokenizer, cfg: DictConfig, metrics: dict[str, float], stage: str
) -> tuple[dict[str, float | str], str | None]:
    """The figures of the module docstring for the images of ``cfg.data``, and None; or ({}, the reason they are
    not available). ``metrics``/``stage``: where a lattice's effective codebook size is read (``test`` or ``val``)."""
    quantizer = tokenizer.quantizer
    channels, resolution = int(cfg.data.channels), int(cfg.data.resolution)
    h, w = token_grid(tokenizer, channels, resolution)
    bits = quantizer.bits_per_position
    if bits is not None:
        basis = _basis(quantizer)
    else:
        distinct = metrics.get(f"{stage}/effective_codebook_size")
        if distinct is None:
            return {}, (
                f"the quantizer has no finite codebook and the {stage} split's effective codebook size, from which its "
                "bits are measured, is not available"
            )
        bits = math.log2(max(float(distinct), 1.0))
        basis = (
            f"no finite codebook: log2 of the {int(distinct):,} distinct token vectors observed on the {stage} split "
            "(empirical)"
        )
    bits_per_image = h * w * bits
    figures: dict[str, float | str] = {
        "token_grid": f"{h}x{w}",
        "tokens_per_image": float(h * w * quantizer.ids_per_position),
        "bits_per_token": bits,
        "bits_per_image": bits_per_image,
        "bits_per_pixel": bits_per_image / (resolution * resolution),
        "compression_ratio": PIXEL_BITS * channels * resolution * resolution / bits_per_image
        if bits_per_image > 0
        else math.inf,
        "code_space": basis,
    }
    return figures, None


def _basis(quantizer) -> str:
    levels = getattr(quantizer, "levels", None)
    if levels is not None:
        return f"levels {list(levels)}: sum of log2 of the levels"
    stages = getattr(quantizer, "num_stages", None)
    if stages is not None:
        return f"{stages} stages x log2 {quantizer.codebook_size}"
    bits = getattr(quantizer, "bits", None)
    if isinstance(bits, int):
        return f"{bits} sign bits (K = 2^{bits})"
    return f"log2 K, K = {quantizer.codebook_size}"


def compression_record(tokenizer: Tokenizer, cfg: DictConfig, metrics: dict, stage: str, unavailable: dict) -> dict:
    """``{"compression": ...}`` for metrics.json , or the reason under ``unavailable``."""
    figures, reason = compression_figures(tokenizer, cfg, metrics, stage)
    if reason is not None:
        unavailable["compression"] = reason
        return {}
    return {"compression": figures}
