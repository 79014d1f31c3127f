"""IBQ against the recorded outputs of both original implementations (``tests/reference/ibq/record.py``): forward
values, token ids, every loss and the gradients of each with respect to z and the codebook, with the loss weights
read from ``conf/quantizer/ibq.yaml`` (visual-tokenizer-pytorch 351d29d) and ``ibq_seed_voken.yaml`` (SEED-Voken)."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vqbench.build import build_quantizer
from vqbench.quantizers import IndexBackpropagationQuantizer

REFERENCE = torch.load(Path(__file__).parent / "reference" / "ibq" / "ibq.pt")
CONF = Path(__file__).parents[1] / "conf" / "quantizer"
EPS = torch.finfo(torch.float32).eps


def _weights(name: str) -> dict[str, float]:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.codebook_size, cfg.dim = REFERENCE["codebook"].shape
    return build_quantizer(cfg)[1]


def _run(chunked: bool = True):
    """vqbench's IBQ on the recorded input, its 32 rows in chunks of 3 (``chunked``) or in one."""
    k, d = REFERENCE["codebook"].shape
    q = IndexBackpropagationQuantizer(k, d, **({"max_elements": 3 * k} if chunked else {})).train()
    q.codebook.data.copy_(REFERENCE["codebook"])
    z = REFERENCE["z"].clone().requires_grad_(True)
    return q, z, q(z)


def _grads(value: torch.Tensor, q, z) -> list[torch.Tensor]:
    found = torch.autograd.grad(value, [z, q.codebook], retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(found, [z, q.codebook], strict=True)]


def _tolerances():
    """Bounds on fp32 rounding between two summation orders (the originals' one matmul vs chunks of rows):
    eps x the largest magnitude in play. The entropy's logits l / tau reach |l| / 0.01 and both originals add 1e-5
    to them before log_softmax (a no-op in exact arithmetic, left out here): each shifted logit rounds differently by
    up to eps |l / tau|, which moves log_softmax by at most twice that; a few such roundings bound the entropy and
    its gradient."""
    logits = REFERENCE["z"].permute(0, 2, 3, 1).reshape(-1, REFERENCE["codebook"].shape[1]) @ REFERENCE["codebook"].t()
    entropy_scale = logits.abs().max().item() / 0.01
    plain = dict(rtol=64 * EPS, atol=64 * EPS)
    entropy = dict(rtol=4 * EPS * entropy_scale, atol=4 * EPS * entropy_scale)
    return plain, entropy


@pytest.mark.parametrize("original", ["visual_tokenizer", "seed_voken"])
def test_forward_values_and_indices_equal_the_originals(original):
    ref = REFERENCE[original]
    _, _, out = _run()
    assert torch.equal(out.indices, ref["indices"])
    plain, _ = _tolerances()
    torch.testing.assert_close(out.codes.detach(), ref["codes"], **plain)


def test_losses_and_gradients_equal_visual_tokenizer_351d29d():
    """loss_vq = codebook + double_quant, loss_commit = commitment, loss_entropy = entropy; the config's weights are
    the original's (1, 1, 0.25, 0.1 with coef_commit and coef_entropy of configs/imagenet64/ibqvae.yaml)."""
    ref = REFERENCE["visual_tokenizer"]
    q, z, out = _run()
    weights = _weights("ibq")
    assert weights == {"codebook": 1.0, "commitment": 0.25, "double_quant": 1.0, "entropy": 0.1}
    probe = (out.codes * REFERENCE["probe"]).sum()
    mine = {
        "codes": probe,
        "loss_vq": out.losses["codebook"] + out.losses["double_quant"],
        "loss_commit": out.losses["commitment"],
        "loss_entropy": out.losses["entropy"],
    }
    plain, entropy = _tolerances()
    for name, value in mine.items():
        tol = entropy if name == "loss_entropy" else plain
        torch.testing.assert_close(value.detach(), ref["values"][name], **tol)
        for got, expected in zip(_grads(value, q, z), ref["grads"][name], strict=True):
            torch.testing.assert_close(got, expected, **tol)


def test_losses_and_gradients_equal_seed_voken():
    """quant_loss = double_quant + commitment + beta codebook with the weights of quantizer=ibq_seed_voken."""
    ref = REFERENCE["seed_voken"]
    q, z, out = _run()
    weights = _weights("ibq_seed_voken")
    quant_loss = sum(weights[name] * out.losses[name] for name in ("codebook", "commitment", "double_quant"))
    plain, entropy = _tolerances()
    for name, value in {"quant_loss": quant_loss, "entropy_loss": out.losses["entropy"]}.items():
        tol = entropy if name == "entropy_loss" else plain
        torch.testing.assert_close(value.detach(), ref["values"][name], **tol)
        for got, expected in zip(_grads(value, q, z), ref["grads"][name], strict=True):
            torch.testing.assert_close(got, expected, **tol)


def test_chunked_rows_give_the_same_values_and_gradients():
    """Chunks of 3 rows (recomputed in the backward pass) against one chunk of all 32: same indices, values and
    gradients up to the rounding of the entropy's per-chunk partial sums."""
    results = []
    for chunked in (False, True):
        q, z, out = _run(chunked)
        total = (out.codes * REFERENCE["probe"]).sum() + sum(out.losses.values())
        results.append((out.indices, total.detach(), *_grads(total, q, z)))
    _, entropy = _tolerances()
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(a, b, **entropy)


def test_entropy_only_when_its_weight_is_set_and_training():
    cfg = OmegaConf.load(CONF / "ibq.yaml")
    cfg.codebook_size, cfg.dim, cfg.entropy_weight = 16, 4, 0.0
    q, _ = build_quantizer(cfg)
    assert "entropy" not in q(torch.randn(1, 4, 2, 2)).losses
    q = IndexBackpropagationQuantizer(16, 4)
    assert "entropy" in q.train()(torch.randn(1, 4, 2, 2)).losses
    assert "entropy" not in q.eval()(torch.randn(1, 4, 2, 2)).losses


def test_memory_stays_bounded_at_16384_codes_in_forward_and_backward():
    """32-row chunks of the N x K softmax at K = 16384: no tensor larger than one chunk (unchunked: 128 x 16384)."""
    from tests.test_quantizers import _LargestTensor

    k, budget = 16384, 16384 * 32
    q = IndexBackpropagationQuantizer(k, 8, max_elements=budget).train()
    z = torch.randn(2, 8, 8, 8, requires_grad=True)
    with _LargestTensor() as recorder:
        out = q(z)
        (out.codes.sum() + sum(out.losses.values())).backward()
    assert recorder.largest <= max(budget, k * 8)
    assert z.grad is not None and q.codebook.grad is not None
