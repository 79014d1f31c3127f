"""The LL-VQ-VAE convolutional autoencoder, as AGKhalil/ll-vq-vae builds it in ``experiments/model.py`` (Khalil et
al. 2023, "LL-VQ-VAE: Learnable Lattice Vector-Quantization For Efficient Representations", arXiv 2310.09382; the
layout comes from AntixK/PyTorch-VAE's ``models/vq_vae.py``).

Encoder: per hidden width h_i, Conv(k4 s2 p1) + LeakyReLU; Conv3x3 + LeakyReLU; 2 residual layers; LeakyReLU;
Conv1x1 to the code width d + LeakyReLU.
Decoder: Conv3x3 d -> h_last + LeakyReLU; 2 residual layers; LeakyReLU; per remaining width, ConvT(k4 s2 p1) +
LeakyReLU; ConvT(k4 s2 p1) to the image channels + LeakyReLU.
Residual layer: x + Conv1x1(ReLU(Conv3x3(x))), both convolutions without bias (no activation before the first).

The encoder ends in d and the decoder starts from it, so the tokenizer adds no 1x1 projections around the quantizer
(``model.pre_quant_conv`` and ``post_quant_conv`` false). The decoder's output passes through a LeakyReLU (slope
0.01) like the original's, so reconstructions below the data range are damped rather than clipped. Hidden widths of
the LL-VQ table: FFHQ-1024 [16, 32], CelebA [64], FashionMNIST [64]; d = 64.
"""

from __future__ import annotations

from torch import Tensor, nn


class ResidualLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatticeCNNEncoder(nn.Sequential):
    def __init__(self, in_channels: int = 3, hidden_channels: tuple[int, ...] = (64,), code_dim: int = 64):
        layers: list[nn.Module] = []
        width = in_channels
        for hidden in hidden_channels:
            layers += [nn.Conv2d(width, hidden, 4, stride=2, padding=1), nn.LeakyReLU()]
            width = hidden
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU()]
        layers += [ResidualLayer(width), ResidualLayer(width), nn.LeakyReLU()]
        layers += [nn.Conv2d(width, code_dim, 1), nn.LeakyReLU()]
        super().__init__(*layers)
        self.out_channels = code_dim


class LatticeCNNDecoder(nn.Sequential):
    def __init__(self, out_channels: int = 3, hidden_channels: tuple[int, ...] = (64,), code_dim: int = 64):
        width = hidden_channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, padding=1), nn.LeakyReLU()]
        layers += [ResidualLayer(width), ResidualLayer(width), nn.LeakyReLU()]
        for target in [*reversed(hidden_channels[:-1]), out_channels]:
            layers += [nn.ConvTranspose2d(width, target, 4, stride=2, padding=1), nn.LeakyReLU()]
            width = target
        super().__init__(*layers)
        self.in_channels = code_dim
