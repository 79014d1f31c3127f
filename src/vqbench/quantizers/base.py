"""The contract every quantizer follows.

A quantizer maps encoder vectors ``z`` (B x d x H x W) to straight-through codes of the same shape, the token ids
that name them, and a dict of *unweighted* auxiliary losses. The loss weights live in the config, so the same
module serves every recipe. Internals always run in fp32, also under bf16/fp16 autocast and with TF32 matmuls
enabled: rounding and nearest-neighbour search in reduced precision silently change which code is picked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What ``Quantizer.forward`` returns.

    codes: B x d x H x W, straight-through (gradient reaches z), in the dtype of the input.
    indices: B x H x W integer token ids (B x H x W x R for residual, B x H x W x d' for the lattice).
    losses: named, unweighted scalar terms such as ``codebook``, ``commitment``, ``entropy``.
    """

    codes: Tensor
    indices: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


@contextmanager
def ieee_fp32_matmuls() -> Iterator[None]:
    """fp32 matmuls in full IEEE precision inside the block, whatever ``torch.set_float32_matmul_precision`` says
    outside it (``performance.tf32=true`` sets "high": TF32 on CUDA)."""
    outside = torch.get_float32_matmul_precision()
    if outside == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(outside)


class Quantizer(nn.Module):
    """Base class: handles the layout and the fp32 island; subclasses implement ``quantize`` on N x d rows."""

    #: Number of distinct tokens, or None where the set of tokens is unbounded (the lattice).
    codebook_size: int | None = None
    #: Integer ids per token position: R for residual VQ (one per stage), 1 otherwise (the lattice: one vector).
    ids_per_position: int = 1

    @property
    def bits_per_position(self) -> float | None:
        """Bits that name the code of one token position in the quantizer's code space: log2 K for a codebook of K
        vectors (VQ, EMA, SimVQ, Gumbel). Overridden where the code space is built otherwise (FSQ: sum of log2 of
        the levels; LFQ: its bits; residual VQ: R x log2 K). None where it is unbounded (the lattice: no finite
        codebook; ``vqbench.compression`` measures its tokens empirically instead)."""
        return None if self.codebook_size is None else math.log2(self.codebook_size)

    # What a subclass declares, read by vqbench.build from the class that ``quantizer._target_`` names (no rule there
    # goes by key names) and checked for every conf/quantizer/*.yaml by tests/test_quantizer_contract.py:

    #: The unweighted loss terms ``forward`` returns; the config weighs each with ``quantizer.<name>_weight``, and a
    #: config must give exactly these weights.
    loss_names: ClassVar[tuple[str, ...]] = ()
    #: Costly terms among ``loss_names`` and the constructor switch that computes them: when every one of their
    #: weights is 0 the quantizer is built with ``switch=False`` (else ``switch=True``), e.g.
    #: ``{"compute_entropy": ("entropy",)}``.
    optional_losses: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: True where ``quantizer.levels`` define the codebook (its size is their product: FSQ, SFSQ), so that
    #: ``codebook.size`` follows the levels (``vqbench.build.reconcile_codebook_size``).
    codebook_from_levels: ClassVar[bool] = False
    #: The ``codebook.init`` values the quantizer accepts (its ``init`` argument); "uniform" is its own initialisation.
    codebook_inits: ClassVar[tuple[str, ...]] = ("uniform",)
    #: Whether the gradient of ``codes`` reaches z unchanged (codes = z + sg(q - z)); instances set it where an option
    #: changes it (the rotation trick, l2-normalised z).
    identity_gradient: bool = False

    def __init__(self, dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"codebook.dim must be a positive integer, got {dim}")
        self.dim = dim

    def forward(self, z: Tensor) -> QuantizerOutput:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"expected z of shape B x {self.dim} x H x W, got {tuple(z.shape)}")
        b, d, h, w = z.shape
        rows = z.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.autocast(device_type=z.device.type, enabled=False), ieee_fp32_matmuls():
            codes, indices, losses = self.quantize(rows.float())
        # The rows come back channels-last-strided; the decoder gets z's own layout, as in the originals (whose
        # straight-through z + sg(q - z) takes z's layout): a convolution's kernel, and so its rounding, depends on
        # the layout of its input. A no-op for channels-last z (``performance.channels_last``).
        codes = codes.reshape(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype).contiguous(memory_format=memory_format(z))
        indices = indices.reshape(b, h, w, *indices.shape[1:])
        return QuantizerOutput(codes=codes, indices=indices, losses=losses)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Quantize N x d fp32 rows. Returns (straight-through codes N x d, indices N[...], losses)."""
        raise NotImplementedError

    @torch.no_grad()
    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Token ids (B x H x W[...]) -> the B x d x H x W vectors the decoder consumes."""
        b, h, w = indices.shape[:3]
        rows = self.lookup(indices.reshape(b * h * w, *indices.shape[3:]))
        return rows.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)

    def lookup(self, indices: Tensor) -> Tensor:
        """Flat token ids -> N x d code vectors."""
        raise NotImplementedError


def memory_format(x: Tensor) -> torch.memory_format:
    """channels_last for a channels-last B x C x H x W tensor that is not also plainly contiguous, else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """q in the forward pass, identity gradient to z in the backward pass: z + sg(q - z)."""
    return z + (q - z).detach()


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient backward. Same result as x + sg(round(x) - x), with one temporary
    instead of three: FSQ runs it on every latent element."""
    return _RoundStraightThrough.apply(x)
