"""Finite scalar quantization (FSQ) and its simple [0, 1] variant.

Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple", sec. 3 and appendix A.1. Each of the
len(levels) channels is bounded and rounded to one of L_i integers; the implicit codebook is their product:

    half = (L - 1)(1 + 1e-3) / 2,  offset = 0.5 if L even else 0,  shift = atanh(offset / half)
    bound(z) = tanh(z + shift) * half - offset
    q = round_ste(bound(z)) / (L // 2)
    index = sum_i (round(bound(z_i)) + L_i // 2) * prod_{j<i} L_j        (mixed radix)

``bound="atanh"`` (default) is the form above: bound(0) = 0 exactly (vector-quantize-pytorch and
visual-tokenizer-pytorch ``finite_scalar_quantizer.py``). ``bound="tan"`` is the paper's appendix A.1 code, kept by
FSQ-pytorch and Doraemonzzz/vector-quantize (``quantizers/fsq.py``, the ImageNet-128 tables): half = (L - 1)(1 - 1e-3)
/ 2 and shift = tan(offset / half). Both give the same L values per channel; the bounded values differ by up to 0.2 %.

There is no auxiliary loss. ``codebook.dim`` vectors are projected to len(levels) channels and back by linear maps
(identity when the two agree). When no levels are given they come from the paper's table for the codebook size
(whose product may differ from it: 1024 -> [8,5,5,5], 1000 codes); levels and a codebook size given together must
agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, round_ste

#: Recommended levels per codebook size (Mentzer et al. 2023, table 1).
LEVELS_FOR_SIZE = {
    2**8: [8, 6, 5],
    2**9: [8, 8, 8],
    2**10: [8, 5, 5, 5],
    2**11: [8, 8, 6, 5],
    2**12: [7, 5, 5, 5, 5],
    2**14: [8, 8, 8, 6, 5],
    2**16: [8, 8, 8, 5, 5, 5],
}


def format_levels(levels: list[int]) -> str:
    """Levels as a command-line value: ``[8,5,5,5]`` (no spaces, so that the override is one shell word)."""
    return "[" + ",".join(str(level) for level in levels) + "]"


def levels_for_codebook_size(codebook_size: int) -> list[int]:
    """The paper's levels for ``codebook_size``; for a size the table lacks, a ValueError whose two fixes are valid
    as written: the nearest size of the table, or levels given together with their product."""
    if codebook_size not in LEVELS_FOR_SIZE:
        sizes = ", ".join(str(k) for k in LEVELS_FOR_SIZE)
        number = codebook_size if isinstance(codebook_size, (int, float)) and codebook_size > 0 else 1
        nearest = min(LEVELS_FOR_SIZE, key=lambda size: abs(math.log(size) - math.log(number)))
        example = LEVELS_FOR_SIZE[2**10]
        raise ValueError(
            f"FSQ has no recommended levels for codebook.size={codebook_size} (the FSQ paper's table 1 has {sizes}); "
            f"set codebook.size={nearest}, or give the levels with their product, e.g. "
            f"quantizer.levels={format_levels(example)} codebook.size={math.prod(example)}"
        )
    return list(LEVELS_FOR_SIZE[codebook_size])


def levels_problem(levels) -> tuple[str, list[int]] | None:
    """Why ``levels`` cannot define an FSQ codebook, and valid levels close to them; None if they can.

    Each level must be an integer >= 2: FSQ rounds a channel to one of L values, and one value carries nothing.
    """
    if not isinstance(levels, (list, tuple)) or not levels:
        return "must be a non-empty list of integers >= 2", list(LEVELS_FOR_SIZE[2**10])
    numbers = [isinstance(level, (int, float)) and not isinstance(level, bool) for level in levels]
    if all(numbers) and all(float(level).is_integer() and level >= 2 for level in levels):
        return None
    fixed = [max(2, round(level)) if number else 2 for level, number in zip(levels, numbers, strict=True)]
    return "every level must be an integer >= 2", fixed


def projection(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Identity() if dim_in == dim_out else nn.Linear(dim_in, dim_out)


class _ScalarQuantizer(Quantizer):
    """Shared plumbing: projection to len(levels) channels, mixed-radix indices, projection back."""

    codebook_from_levels = True

    def __init__(self, dim: int, levels: list[int] | None, codebook_size: int | None):
        super().__init__(dim)
        if levels and codebook_size is not None and math.prod(int(level) for level in levels) != codebook_size:
            raise ValueError(
                f"quantizer.levels={list(levels)} give {math.prod(int(level) for level in levels)} codes but "
                f"codebook.size={codebook_size}; the levels define the codebook: set "
                f"codebook.size={math.prod(int(level) for level in levels)}"
            )
        levels = list(levels) if levels else levels_for_codebook_size(codebook_size)
        problem = levels_problem(levels)
        if problem is not None:
            raise ValueError(
                f"quantizer.levels={levels}: {problem[0]}, e.g. quantizer.levels={format_levels(problem[1])}"
            )
        self.levels = [int(level) for level in levels]
        self.codebook_size = math.prod(self.levels)
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.long), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1], dtype=torch.long), dim=0)
        self.register_buffer("_basis", basis, persistent=False)
        self.project_in = projection(dim, len(self.levels))
        self.project_out = projection(len(self.levels), dim)

    @property
    def bits_per_position(self) -> float:
        """sum_i log2 L_i over the levels L_i (Mentzer et al. 2023, arXiv:2309.15505: the implicit codebook is the
        product of the levels)."""
        return sum(math.log2(level) for level in self.levels)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        digits, codes = self.digits_and_codes(self.project_in(z))
        indices = (digits * self._basis).sum(dim=1)
        return self.project_out(codes), indices, {}

    def lookup(self, indices: Tensor) -> Tensor:
        digits = torch.div(indices.unsqueeze(1), self._basis, rounding_mode="floor") % self._levels
        return self.project_out(self.digits_to_codes(digits))

    def digits_and_codes(self, z: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def digits_to_codes(self, digits: Tensor) -> Tensor:
        raise NotImplementedError


#: The two forms of FSQ's bound: (half-width factor, shift function); see the module docstring.
BOUNDS = {"atanh": (1 + 1e-3, torch.atanh), "tan": (1 - 1e-3, torch.tan)}


class FSQ(_ScalarQuantizer):
    def __init__(
        self, dim: int, levels: list[int] | None = None, codebook_size: int | None = None, bound: str = "atanh"
    ):
        super().__init__(dim, levels, codebook_size)
        if bound not in BOUNDS:
            raise ValueError(f"quantizer.bound must be one of {', '.join(BOUNDS)}; got {bound!r}")
        factor, shift = BOUNDS[bound]
        self.bound_form = bound
        levels_f = torch.tensor(self.levels, dtype=torch.float64)
        half = (levels_f - 1) * factor / 2
        offset = torch.where(levels_f % 2 == 0, 0.5, 0.0)
        self.register_buffer("_half", half.float(), persistent=False)
        self.register_buffer("_offset", offset.float(), persistent=False)
        self.register_buffer("_shift", shift(offset / half).float(), persistent=False)
        self.register_buffer("_half_width", (self._levels // 2).float(), persistent=False)
        self.register_buffer("_half_width_long", self._levels // 2, persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        return torch.addcmul(-self._offset, torch.tanh(z + self._shift), self._half)

    def digits_and_codes(self, z: Tensor) -> tuple[Tensor, Tensor]:
        rounded = round_ste(self.bound(z))
        digits = rounded.detach().long().add_(self._half_width_long)
        return digits, rounded / self._half_width

    def digits_to_codes(self, digits: Tensor) -> Tensor:
        return (digits - self._half_width_long).float() / self._half_width


class SimpleFSQ(_ScalarQuantizer):
    """FSQ on [0, 1]:  n = round_ste((L - 1) sigmoid(z)),  code = n / (L - 1)."""

    def __init__(self, dim: int, levels: list[int] | None = None, codebook_size: int | None = None):
        super().__init__(dim, levels, codebook_size)

    def digits_and_codes(self, z: Tensor) -> tuple[Tensor, Tensor]:
        steps = (self._levels - 1).float()
        n = round_ste(steps * torch.sigmoid(z))
        return n.detach().long(), n / steps

    def digits_to_codes(self, digits: Tensor) -> Tensor:
        return digits.float() / (self._levels - 1).float()
