"""The generator objective is the weighted sum the config names (training/module.py):

    L = w_rec · L_rec + w_p · L_perceptual + Σ_k w_k · L_quantizer,k

Each weight is set to a distinct value away from 1 and from the others, so that dropping, swapping or squaring
any one of them changes the total by far more than float32 rounding (terms of O(1), a sum of 5 terms: the
tolerance 1e-6 relative is ~10 x eps x 5)."""

import pytest
import torch
from torch import nn

from tests.test_config import compose_cfg
from vqbench.build import build_tokenizer, build_training_module
from vqbench.training.module import TokenizerModule


class _MeanAbsDifference(nn.Module):
    """A perceptual loss stand-in (no pretrained network): mean |x - y| + 1, never equal to the MSE."""

    def forward(self, x, y):
        return (x - y).abs().mean() + 1.0


@pytest.mark.parametrize("quantizer", ["vq", "lattice"])
def test_total_is_the_weighted_sum_of_every_term(quantizer):
    cfg = compose_cfg([f"quantizer={quantizer}", "model.hidden_channels=4", "model.latent_channels=8"])
    torch.manual_seed(0)
    tokenizer, weights = build_tokenizer(cfg)
    # the terms the quantizer computes (a zero weight, e.g. vq's entropy, switches its term off)
    weights = {name: 0.3 + 0.17 * i if weight else 0.0 for i, (name, weight) in enumerate(sorted(weights.items()))}
    module = TokenizerModule(
        tokenizer, weights, reconstruction_weight=0.7, perceptual=_MeanAbsDifference(), perceptual_weight=0.45
    )
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    total, reconstruction, terms = module.generator_loss(images, step=0)
    used = [name for name in weights if weights[name]]
    assert set(used) <= set(terms) and len(used) >= 2
    torch.testing.assert_close(terms["reconstruction"], torch.nn.functional.mse_loss(reconstruction, images))
    expected = 0.7 * terms["reconstruction"] + 0.45 * terms["perceptual"]
    expected = expected + sum(weights[name] * terms[name] for name in used)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(terms["total"], total)


def test_config_weights_reach_the_module():
    cfg = compose_cfg(
        ["loss.reconstruction_weight=0.6", "quantizer.commitment_weight=0.4", "quantizer.codebook_weight=0.9"]
    )
    module = build_training_module(cfg, for_training=False)
    assert module.reconstruction_weight == 0.6
    assert module.loss_weights == {"commitment": 0.4, "codebook": 0.9, "entropy": 0.0}
