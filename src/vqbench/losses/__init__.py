"""Training objectives beyond the quantizers' own terms (plain tensor code: no Lightning, no Hydra)."""

from vqbench.losses.adaptive_weight import adaptive_weight, last_layer_weight
from vqbench.losses.adversarial import (
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    lecam_regularizer,
    non_saturating_d_loss,
    non_saturating_g_loss,
)
from vqbench.losses.perceptual import PerceptualLoss

__all__ = [
    "PerceptualLoss",
    "adaptive_weight",
    "discriminator_loss",
    "generator_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "last_layer_weight",
    "lecam_regularizer",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
]
