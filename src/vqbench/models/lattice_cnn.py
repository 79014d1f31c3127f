"""The LL-VQ-VAE convolutional template (Khalil et al. 2023, "LL-VQ-VAE: Learnable Lattice Vector-Quantization For
Efficient Representations", arXiv 2310.09382; AGKhalil/ll-vq-vae).

Encoder: per hidden width h_i: Conv(k4 s2 p1) + LeakyReLU; then Conv3x3 + LeakyReLU, 2 residual layers
[x + Conv1x1(ReLU(Conv3x3(ReLU(x))))] without bias, LeakyReLU. The template's final Conv1x1 to d = 64 is the
tokenizer's ``pre_quant`` (set ``codebook.dim=64``). The decoder mirrors it: Conv3x3 + LeakyReLU, 2 residual layers,
LeakyReLU, then one ConvT(k4 s2 p1) per level back to the image channels. Hidden widths: FFHQ-1024 [16, 32],
CelebA [64], FashionMNIST [64].
"""

from __future__ import annotations

from torch import nn

from vqbench.models.simple_cnn import ResidualBlock


class LatticeCNNEncoder(nn.Sequential):
    def __init__(self, in_channels: int = 3, hidden_channels: tuple[int, ...] = (64,)):
        layers: list[nn.Module] = []
        width = in_channels
        for hidden in hidden_channels:
            layers += [nn.Conv2d(width, hidden, 4, stride=2, padding=1), nn.LeakyReLU()]
            width = hidden
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU()]
        layers += [ResidualBlock(width), ResidualBlock(width), nn.LeakyReLU()]
        super().__init__(*layers)
        self.out_channels = width


class LatticeCNNDecoder(nn.Sequential):
    def __init__(self, out_channels: int = 3, hidden_channels: tuple[int, ...] = (64,)):
        width = hidden_channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU()]
        layers += [ResidualBlock(width), ResidualBlock(width), nn.LeakyReLU()]
        targets = [*reversed(hidden_channels[:-1]), out_channels]
        for i, target in enumerate(targets):
            layers.append(nn.ConvTranspose2d(width, target, 4, stride=2, padding=1))
            if i < len(targets) - 1:
                layers.append(nn.LeakyReLU())
            width = target
        super().__init__(*layers)
        self.in_channels = hidden_channels[-1]
