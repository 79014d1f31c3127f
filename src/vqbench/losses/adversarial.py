"""GAN losses on PatchGAN logits, and the LeCam regulariser.

Hinge (Lim & Ye 2017; taming's ``hinge_d_loss``):  L_D = ½ (E[relu(1 − D(x))] + E[relu(1 + D(x̂))]),  L_G = −E[D(x̂)].
Non-saturating (Goodfellow et al. 2014; taming's ``vanilla_d_loss``, LlamaGen's ``non-saturating``):
    L_D = ½ (E[softplus(−D(x))] + E[softplus(D(x̂))]),  L_G = E[softplus(−D(x̂))] = −E[log σ(D(x̂))].
LeCam (Tseng et al. 2021, "Regularizing GANs under limited data"):
    R = E[(D(x) − α_fake)²] + E[(D(x̂) − α_real)²], with α the EMAs of the mean real and fake logits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    return -logits_fake.mean()


def non_saturating_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def non_saturating_g_loss(logits_fake: Tensor) -> Tensor:
    return F.softplus(-logits_fake).mean()


D_LOSSES = {"hinge": hinge_d_loss, "non_saturating": non_saturating_d_loss}
G_LOSSES = {"hinge": hinge_g_loss, "non_saturating": non_saturating_g_loss}


def discriminator_loss(kind: str, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return D_LOSSES[kind](logits_real, logits_fake)


def generator_loss(kind: str, logits_fake: Tensor) -> Tensor:
    return G_LOSSES[kind](logits_fake)


def lecam_regularizer(logits_real: Tensor, logits_fake: Tensor, ema_real: Tensor, ema_fake: Tensor) -> Tensor:
    return (logits_real - ema_fake).pow(2).mean() + (logits_fake - ema_real).pow(2).mean()
