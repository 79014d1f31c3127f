"""BSQ against the recorded outputs of zhaoyue-zephyrus/bsq-vit's quantizer (``tests/reference/bsq_vit/record.py``):
codes, token ids, commitment and both entropy terms, and the gradient of each with respect to z."""

import math
from pathlib import Path

import pytest
import torch

from vqbench.quantizers import BinarySphericalQuantizer

REFERENCE = torch.load(Path(__file__).parent / "reference" / "bsq_vit" / "bsq.pt")
CASES = REFERENCE["cases"]
EPS = torch.finfo(torch.float32).eps


def _run(case):
    bits = case["bits"]
    q = BinarySphericalQuantizer(
        bits,
        bits=bits,
        group_size=case["group_size"],
        persample_entropy_compute=case["persample"],
        inv_temperature=case["inv_temperature"],
    ).train()
    z = case["z"].clone().requires_grad_(True)  # B x L x bits tokens -> B x bits x L x 1
    out = q(z.permute(0, 2, 1).unsqueeze(-1))
    codes = out.codes.squeeze(-1).permute(0, 2, 1)
    return z, codes, out.indices.squeeze(-1), out.losses


def _tolerance(case) -> dict:
    """The original takes -p log(p + 1e-8) where vqbench takes the exact -p log p (per-sample term): at most 1e-8 per
    channel and code, two codes per channel, times 1 / T (atol). The gradient of p log(p + eps) differs from
    p log p's by log(1 + eps / p) - eps / (p + eps) < eps / p, multiplied by dp/dz, itself O(p): O(1e-8) per channel
    again. On top, fp32 rounding relative to the magnitude, over sums of 2^group codes and 2 bits channels (rtol)."""
    group = 1 if case["persample"] == "analytical" else case["group_size"]
    return dict(rtol=(2**group + 2 * case["bits"]) * EPS, atol=2 * case["bits"] * 1e-8 * case["inv_temperature"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c['bits']}g{c['group_size']}{c['persample']}")
def test_codes_indices_and_losses_equal_bsq_vit(case):
    z, codes, indices, losses = _run(case)
    assert torch.equal(indices, case["indices"])
    # codes: +-1/sqrt(L) exactly in both (the straight-through sum rounds to the same float)
    torch.testing.assert_close(codes.detach(), case["codes"], rtol=0, atol=2 * EPS / math.sqrt(case["bits"]))
    tol = _tolerance(case)
    mine = {
        "commitment": losses["commitment"],
        "per_sample": losses["per_sample_entropy"],
        "codebook": losses["codebook_entropy"],
    }
    for name, value in mine.items():
        torch.testing.assert_close(value.detach(), case[f"{name}_loss"], **tol)
        grad = torch.autograd.grad(value, z, retain_graph=True)[0]
        torch.testing.assert_close(grad, case[f"{name}_grad"], **tol)
    grad = torch.autograd.grad((codes * case["probe"]).sum(), z)[0]
    torch.testing.assert_close(grad, case["codes_grad"], rtol=16 * EPS, atol=16 * EPS)


def test_round_trip_and_sphere():
    q = BinarySphericalQuantizer(6, codebook_size=64).eval()
    out = q(torch.randn(2, 6, 3, 3))
    torch.testing.assert_close(out.codes.norm(dim=1), torch.ones(2, 3, 3))
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    assert "per_sample_entropy" not in out.losses


def test_group_size_must_divide_the_bits():
    with pytest.raises(ValueError, match="group_size"):
        BinarySphericalQuantizer(8, bits=8, group_size=3)
