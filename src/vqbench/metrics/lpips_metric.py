"""LPIPS (Zhang et al. 2018) as an evaluation metric: the ``lpips`` package with the AlexNet trunk, the variant every
reconstruction table reports. Inputs in [0, 1] are mapped to the [-1, 1] range the package expects; the value is
the mean over images of the per-image distance, with sum-reduced state so multi-process evaluation counts each
image once.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import Metric

from vqbench.weights import ensure_downloaded

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class LPIPS(Metric):
    full_state_update = False
    higher_is_better = False

    def __init__(self, net: str = "alex", pretrained: bool = True, **kwargs):
        """``pretrained=False`` (tests only) uses a random trunk; the package's linear heads are always loaded."""
        super().__init__(**kwargs)
        import lpips

        if pretrained and net == "alex":
            ensure_downloaded(ALEXNET_URL, "LPIPS (AlexNet)")
        with warnings.catch_warnings():  # lpips still calls torchvision's deprecated pretrained= argument
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.net = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained, verbose=False)
        self.net.eval().requires_grad_(False)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds, target: B x C x H x W in [0, 1]; one-channel images are repeated to RGB as LPIPS needs."""
        if preds.shape[1] == 1:
            preds, target = preds.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        with torch.autocast(preds.device.type, enabled=False):
            distance = self.net(preds.float() * 2 - 1, target.float() * 2 - 1).flatten()
        self.total += distance.double().sum()
        self.count += distance.numel()

    def compute(self) -> Tensor:
        return self.total / self.count
