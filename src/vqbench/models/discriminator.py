"""PatchGAN discriminator: taming's NLayerDiscriminator (after pix2pix; Isola et al. 2017).

Conv(C -> 64, k4 s2 p1) -> LeakyReLU(0.2) -> for n = 1..layers-1: Conv(k4 s2 p1, no bias) -> BatchNorm ->
LeakyReLU(0.2) -> one more such block with stride 1 -> Conv(k4 s1 p1 -> 1 logit per patch). Widths 64 * min(2^n, 8).
With 3 input channels, 64 channels and 3 layers it has 2,765,633 parameters.

Initialisation (``init``):
- ``"taming"``: taming's ``weights_init``: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0.
- ``"pytorch"``: PyTorch's default layer initialisation, as xyfJASON/visual-tokenizer-pytorch's
  ``models/discriminator/patchgan.py`` leaves it (the same network, built in the same order, so the same seed gives
  the same weights).
"""

from __future__ import annotations

from torch import Tensor, nn

INITS = ("taming", "pytorch")


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3, init: str = "taming"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"loss.discriminator.init must be one of {', '.join(INITS)}; got {init!r}")
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            target = channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks += [
                nn.Conv2d(width, target, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(target),
                nn.LeakyReLU(0.2),
            ]
            width = target
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*blocks)
        if init == "taming":
            self.apply(_taming_init)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


def _taming_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
