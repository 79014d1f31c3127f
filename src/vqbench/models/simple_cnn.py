"""SimpleCNN encoder/decoder of the CelebA-64 benchmark (xyfJASON/visual-tokenizer-pytorch, every 64x64 row).

Encoder: Conv(C->128, k4 s2 p1) -> LeakyReLU(0.01) -> Conv(128->256, k4 s2 p1) -> LeakyReLU -> Conv(256->256, k3 p1)
         -> 2 x ResidualBlock.                                 Downsampling factor 4: 64x64 -> 16x16 tokens.
Decoder: 2 x ResidualBlock -> LeakyReLU -> Conv(256->256, k3 p1) -> LeakyReLU -> ConvT(256->128, k4 s2 p1)
         -> LeakyReLU -> ConvT(128->C, k4 s2 p1) -> Tanh.
ResidualBlock: x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), both convolutions without bias.
"""

from __future__ import annotations

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SimpleCNNEncoder(nn.Sequential):
    def __init__(
        self, in_channels: int = 3, hidden_channels: int = 128, out_channels: int = 256, num_res_blocks: int = 2
    ):
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),
            nn.Conv2d(hidden_channels, out_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            *[ResidualBlock(out_channels) for _ in range(num_res_blocks)],
        )
        self.out_channels = out_channels


class SimpleCNNDecoder(nn.Sequential):
    def __init__(
        self, out_channels: int = 3, hidden_channels: int = 128, in_channels: int = 256, num_res_blocks: int = 2
    ):
        super().__init__(
            *[ResidualBlock(in_channels) for _ in range(num_res_blocks)],
            nn.LeakyReLU(0.01),
            nn.Conv2d(in_channels, in_channels, 3, padding=1),
            nn.LeakyReLU(0.01),
            nn.ConvTranspose2d(in_channels, hidden_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.01),
            nn.ConvTranspose2d(hidden_channels, out_channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )
        self.in_channels = in_channels
