"""The convolutional autoencoder of the FSQ ImageNet-128 benchmark (Doraemonzzz/vector-quantize, after FSQ-pytorch).

Encoder: three Conv(k4 s2 p1) to ``channels`` (512) with ReLU; the 1x1 convolution to d is the tokenizer's
``pre_quant``. 128x128 images -> 16x16 tokens. Decoder: two ConvT(k4 s2 p1) + ReLU and a last ConvT to the image.
"""

from __future__ import annotations

from torch import nn


class FSQCNNEncoder(nn.Sequential):
    def __init__(self, in_channels: int = 3, channels: int = 512, num_downsamples: int = 3):
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_downsamples):
            layers += [nn.Conv2d(width, channels, 4, stride=2, padding=1), nn.ReLU()]
            width = channels
        super().__init__(*layers)
        self.out_channels = channels


class FSQCNNDecoder(nn.Sequential):
    def __init__(self, out_channels: int = 3, channels: int = 512, num_downsamples: int = 3):
        layers: list[nn.Module] = []
        for _ in range(num_downsamples - 1):
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))
        super().__init__(*layers)
        self.in_channels = channels
