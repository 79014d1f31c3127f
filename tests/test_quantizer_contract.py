"""The QuantizerOutput contract (vqbench.quantizers.base), checked for every file of conf/quantizer/.

The quantizers come from listing conf/quantizer/*.yaml, so a new quantizer (one Python file and one YAML,
docs/extending.md) is checked here without anyone editing this file. Each is composed and built as ``python run.py
quantizer=NAME`` would, with every declared loss weight set to 1 so that its optional (costly) terms are computed too.
``OPTIONS`` adds the options that change a quantizer's code path (l2-normalised codes, rotation trick, k-means
initialisation, dead-code restart).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from vqbench.build import build_quantizer
from vqbench.compose import compose_config
from vqbench.metrics.codebook_health import level_codebooks
from vqbench.quantizer_settings import quantizer_class

CONF = Path(__file__).resolve().parents[1] / "conf"
QUANTIZERS = sorted(path.stem for path in (CONF / "quantizer").glob("*.yaml"))

#: Options that change a quantizer's code path: (quantizer, overrides).
OPTIONS = {
    "vq_l2": ("vq", ["codebook.l2_norm=true"]),
    "vq_l2_seed": ("vq", ["codebook.l2_norm=true", "quantizer.l2_norm_mode=seed"]),
    "vq_options": (
        "vq",
        ["quantizer.rotation_trick=true", "codebook.init=kmeans", "quantizer.dead_code_threshold=0.9"],
    ),
    "ema_options": ("ema", ["quantizer.rotation_trick=true", "codebook.init=kmeans"]),
    "ema_dead_codes": ("ema", ["quantizer.dead_code_threshold=0.5"]),
}
CASES = {**{name: (name, []) for name in QUANTIZERS}, **OPTIONS}

DIM, SIZE = 8, 256  # 256 codes: FSQ's table has levels for it ([8, 6, 5]); LFQ and BSQ take 8 bits


@functools.cache
def quantizer_config(case: str) -> DictConfig:
    """The case's ``quantizer`` node, composed as run.py composes it, with every declared loss weight 1."""
    name, overrides = CASES[case]
    base = [f"quantizer={name}", f"codebook.dim={DIM}", f"codebook.size={SIZE}", *overrides]
    declared = quantizer_class(compose_config(base).quantizer).loss_names
    cfg = compose_config([*base, *(f"quantizer.{loss}_weight=1.0" for loss in declared)])
    return OmegaConf.create(OmegaConf.to_container(cfg.quantizer, resolve=True))


def build(case: str):
    """(a new quantizer of the case in training mode, its loss weights)."""
    quantizer, weights = build_quantizer(quantizer_config(case))
    return quantizer.train(), weights


def latents(dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(4, DIM, 8, 8) * 2).to(dtype)  # 256 rows: enough for k-means of 256 codes


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_quantizer_file_is_listed():
    assert {"vq", "ema", "fsq", "lfq"} <= set(QUANTIZERS)


@pytest.mark.parametrize("case", CASES)
def test_losses_are_the_declared_names_as_finite_scalars(case):
    quantizer, weights = build(case)
    assert set(weights) == set(type(quantizer).loss_names)
    out = quantizer(latents().requires_grad_())
    assert set(out.losses) == set(type(quantizer).loss_names)
    for name, value in out.losses.items():
        assert value.dim() == 0 and torch.isfinite(value), f"loss {name} is {value}"
    assert set(quantizer.eval()(latents()).losses) <= set(type(quantizer).loss_names)


@pytest.mark.parametrize("case", CASES)
def test_codes_indices_and_round_trip(case):
    quantizer, _ = build(case)
    z = latents()
    quantizer(z)  # a training step first: k-means, EMA updates and restarts have run
    out = quantizer.eval()(z)
    assert out.codes.shape == z.shape and out.codes.dtype == z.dtype
    assert out.indices.dtype == torch.long and out.indices.shape[:3] == (z.shape[0], *z.shape[2:])
    if quantizer.codebook_size is not None:
        assert int(out.indices.min()) >= 0 and int(out.indices.max()) < quantizer.codebook_size
    # the lookup recomputes the same fp32 rows; 1e-5 allows the projections' matmul reassociation (|codes| <~ 10)
    torch.testing.assert_close(quantizer.indices_to_codes(out.indices), out.codes, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_straight_through_gradient_where_declared(case):
    quantizer, _ = build(case)
    z = latents().requires_grad_()
    grad = torch.randn_like(z)
    (quantizer(z).codes * grad).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    if quantizer.identity_gradient:
        torch.testing.assert_close(z.grad, grad)


@pytest.mark.parametrize("case", CASES)
def test_bf16_autocast_keeps_fp32_internals(case):
    quantizer, _ = build(case)
    seen = []
    original = quantizer.quantize

    def spy(z):
        seen.append(z.dtype)
        result = original(z)
        seen.append(result[0].dtype)
        return result

    quantizer.quantize = spy
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(latents(torch.bfloat16))
    assert seen == [torch.float32, torch.float32]
    assert out.codes.dtype == torch.bfloat16
    assert all(torch.isfinite(v) for v in out.losses.values())


class HostSyncGuard:
    """Makes every Python-level host-device sync on a tensor raise: .item(), .tolist(), .cpu(), .numpy(), and
    bool/int/float of a tensor (which is what a data-dependent ``if`` does)."""

    NAMES = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")

    def __enter__(self):
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

        def forbid(name):
            def raiser(*args, **kwargs):
                raise AssertionError(f"host-device sync: Tensor.{name} called in forward")

            return raiser

        for name in self.NAMES:
            setattr(torch.Tensor, name, forbid(name))

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(torch.Tensor, name, fn)


@pytest.mark.parametrize("case", CASES)
def test_training_forward_has_no_host_device_sync(case):
    quantizer, weights = build(case)
    z = latents().requires_grad_()
    with HostSyncGuard():
        out = quantizer(z)
        total = out.codes.sum() + sum(weights[name] * value for name, value in out.losses.items())
    total.backward()


@pytest.mark.parametrize("case", CASES)
def test_codebook_health_reads_every_code(case):
    """The validation's codebook health (code norms, nearest-code distances) gets K x d code vectors per level."""
    quantizer, _ = build(case)
    codebooks = level_codebooks(quantizer)
    if quantizer.codebook_size is None:
        assert codebooks is None
    else:
        assert codebooks and all(c.shape == (quantizer.codebook_size, DIM) for c in codebooks)
