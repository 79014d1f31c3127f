"""The adaptive weight of the generator's adversarial term (Esser et al. 2021, taming ``calculate_adaptive_weight``):

    λ = ‖∇_W L_rec‖ / (‖∇_W L_G‖ + 1e-4),  clamped to [0, 1e4] and detached,

with W the weight of the decoder's last layer and L_rec the reconstruction (+ perceptual) loss. It balances the two
gradients at the output, so the GAN term can neither vanish nor swamp the reconstruction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def last_layer_weight(decoder: nn.Module) -> Tensor:
    """The decoder's ``last_layer`` if it names one (the VQGAN's ``conv_out``), else its last convolution weight
    (the output layer of every sequential decoder: SimpleCNN, fsq_cnn, lattice_cnn)."""
    named = getattr(decoder, "last_layer", None)
    if named is not None:
        return named
    weights = [p for p in decoder.parameters() if p.ndim == 4]
    if not weights:
        raise ValueError(f"{type(decoder).__name__} has no convolution weight to compute the adaptive weight on")
    return weights[-1]


def adaptive_weight(reconstruction_loss: Tensor, generator_loss: Tensor, last_layer: Tensor) -> Tensor:
    (rec_grad,) = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach()
