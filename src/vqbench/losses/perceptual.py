"""LPIPS perceptual loss (Zhang et al. 2018) with the VGG16 trunk, from the ``lpips`` package.

It takes images in the model's space, (x - ``pixel_mean``) / ``pixel_std`` for x in [0, 1] ([-1, 1] with the
defaults), and hands LPIPS ``lo + (hi - lo) x`` with (lo, hi) = ``input_range``: [-1, 1] is what LPIPS was trained on
(the default; with the default pixel space LPIPS gets the images unchanged). FSQ-pytorch and
Doraemonzzz/vector-quantize (``metric.py``, the ImageNet-128 tables) feed it [0, 1] images: ``input_range=(0, 1)``.
The value is the batch mean of the per-image distance. The network is frozen and in eval mode. Its linear heads
ship inside the package; the VGG16 ImageNet weights come from torchvision's download cache and are checked for
before training starts (``vqbench.weights``). ``pretrained=False`` builds a randomly initialised trunk: only for
tests and smoke runs, and the log says so.
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
    def __init__(
        self,
        pretrained: bool = True,
        net: str = "vgg",
        pixel_mean: float | list[float] = 0.5,
        pixel_std: float | list[float] = 0.5,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ):
        super().__init__()
        import lpips

        low, high = input_range
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (pixel_mean, pixel_std))
        # model space -> [0, 1] -> input_range, as one affine map per channel: x * scale + shift
        scale, shift = (high - low) * std, low + (high - low) * mean
        self.register_buffer("input_scale", scale.view(1, -1, 1, 1) if scale.dim() else scale, persistent=False)
        self.register_buffer("input_shift", shift.view(1, -1, 1, 1) if shift.dim() else shift, persistent=False)

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

    def lpips_inputs(self, images: Tensor) -> Tensor:
        return images * self.input_scale + self.input_shift

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return self.lpips(self.lpips_inputs(reconstruction), self.lpips_inputs(target)).mean()

    @torch.no_grad()
    def distance(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-image LPIPS, B values."""
        return self.lpips(self.lpips_inputs(reconstruction), self.lpips_inputs(target)).flatten()
