"""The convolutional autoencoder of the ImageNet-128 FSQ tables (FSQ-pytorch's CogView-style VQ-VAE, as kept in
Doraemonzzz/vector-quantize ``model.py`` and later ``vector_quants/backbone/ae/baseline_convnet.py``).

Encoder: ``num_downsamples`` Conv(k4 s2 p1) to ``channels`` (512), each followed by ReLU; the final 1x1 convolution
to d is the tokenizer's ``pre_quant``. 128x128 images -> 16x16 tokens.

Decoder: it reads the d-dimensional codes directly (``in_channels`` = d; the model config turns the tokenizer's
``post_quant`` off): ``num_downsamples`` ConvTranspose(k4 s2 p1), each followed by ReLU, the first from d to
``channels``, then a 1x1 convolution to the image channels.
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
    def __init__(self, in_channels: int, out_channels: int = 3, channels: int = 512, num_downsamples: int = 3):
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_downsamples):
            layers += [nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.ReLU()]
            width = channels
        layers.append(nn.Conv2d(channels, out_channels, 1))
        super().__init__(*layers)
        self.in_channels = in_channels
