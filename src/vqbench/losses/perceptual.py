"""LPIPS perceptual loss (Zhang et al. 2018) with the VGG16 trunk, from the ``lpips`` package.

Inputs are images in [−1, 1]; the value is the batch mean of the per-image distance. The network is frozen and in
eval mode. Its linear heads ship inside the package; the VGG16 ImageNet weights come from torchvision's download
cache and are checked for before training starts (``vqbench.weights``). ``pretrained=False`` builds a randomly
initialised trunk: only for tests and smoke runs, and the log says so.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, nn

from vqbench.weights import ensure_downloaded

log = logging.getLogger("vqbench")

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


class PerceptualLoss(nn.Module):
    def __init__(self, pretrained: bool = True, net: str = "vgg"):
        super().__init__()
        import lpips

        if pretrained:
            ensure_downloaded(
                VGG16_URL,
                "the LPIPS perceptual loss",
                " For smoke tests only, loss.perceptual.pretrained=false uses a random VGG16.",
            )
        else:
            log.warning(
                "loss.perceptual.pretrained=false: the LPIPS VGG16 trunk is RANDOMLY INITIALISED. The perceptual "
                "loss is meaningless; use this for smoke tests only"
            )
        self.pretrained = pretrained
        with warnings.catch_warnings():  # lpips still calls torchvision's deprecated pretrained= argument
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.lpips = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained, verbose=False)
        self.lpips.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.lpips.eval()  # always: dropout in LPIPS' heads would make the loss random
        return self

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return self.lpips(reconstruction, target).mean()

    @torch.no_grad()
    def distance(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-image LPIPS, B values."""
        return self.lpips(reconstruction, target).flatten()
