"""The taming-transformers VQGAN encoder/decoder (Esser et al. 2021, "Taming Transformers", arXiv 2012.09841).

Encoder: Conv3x3(C -> ch) -> per level l: ``num_res_blocks`` ResnetBlocks to ch * ch_mult[l] (+ attention at the
attention levels), a stride-2 downsample except at the last level -> middle (Res, Attn, Res) -> GroupNorm -> SiLU
-> Conv3x3 to ``z_channels``. The decoder mirrors it with ``num_res_blocks + 1`` blocks per level and nearest
upsampling + Conv3x3. GroupNorm(32, eps 1e-6) everywhere, single-head attention. With ch 128, ch_mult (1,1,2,2,4),
2 res blocks, attention at the lowest level (16x16 for 256-pixel images) and z 256, the tokenizer with K = 1024,
d = 256 has 72,141,699 parameters (encoder, 1x1 convolutions, codebook, decoder: the "72.1M" of the tables).

Attention is placed by level, not by pixel size, so a smoke run at 64 pixels builds the same network.

``attention_norm_eps``: the epsilon of the GroupNorm in front of each attention block. taming uses 1e-6 like every
other GroupNorm; xyfJASON/visual-tokenizer-pytorch (``models/autoencoder/vqgan_net.py``, ``SelfAttentionBlock``) leaves
PyTorch's default 1e-5 there, and its ImageNet-256 recipes set it. ``norm_groups`` (32 in every recipe) lets narrow
test networks of fewer than 32 channels exist.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int, groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=eps)


class ResnetBlock(nn.Module):
    """x + Conv(SiLU(GN(Conv(SiLU(GN(x)))))), with a 1x1 convolution on the skip path when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels, groups),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels, groups),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1 convolutions for q, k, v and the output."""

    def __init__(self, channels: int, groups: int = 32, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = group_norm(channels, groups, norm_eps)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # B x HW x C
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.out(y.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 Conv3x3 after padding one pixel on the right and bottom (taming's asymmetric padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _middle(channels: int, groups: int, attention_norm_eps: float) -> nn.Sequential:
    return nn.Sequential(
        ResnetBlock(channels, channels, groups),
        AttentionBlock(channels, groups, attention_norm_eps),
        ResnetBlock(channels, channels, groups),
    )


class VQGANEncoder(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: tuple[int, ...] = (4,),
        z_channels: int = 256,
        norm_groups: int = 32,
        attention_norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.out_channels = z_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        width = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResnetBlock(width, channels * mult, norm_groups))
                width = channels * mult
                if level in attention_levels:
                    layers.append(AttentionBlock(width, norm_groups, attention_norm_eps))
            if level != len(channel_mult) - 1:
                layers.append(Downsample(width))
        layers += [
            _middle(width, norm_groups, attention_norm_eps),
            group_norm(width, norm_groups),
            nn.SiLU(),
            nn.Conv2d(width, z_channels, 3, padding=1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class VQGANDecoder(nn.Module):
    def __init__(
        self,
        out_channels: int = 3,
        channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: tuple[int, ...] = (4,),
        z_channels: int = 256,
        norm_groups: int = 32,
        attention_norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.in_channels = z_channels
        width = channels * channel_mult[-1]
        layers: list[nn.Module] = [
            nn.Conv2d(z_channels, width, 3, padding=1),
            _middle(width, norm_groups, attention_norm_eps),
        ]
        for level in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers.append(ResnetBlock(width, channels * channel_mult[level], norm_groups))
                width = channels * channel_mult[level]
                if level in attention_levels:
                    layers.append(AttentionBlock(width, norm_groups, attention_norm_eps))
            if level != 0:
                layers.append(Upsample(width))
        layers += [group_norm(width, norm_groups), nn.SiLU()]
        self.layers = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> nn.Parameter:
        """The weight the adaptive GAN weight is computed on (taming's ``decoder.conv_out.weight``)."""
        return self.conv_out.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.layers(x))
