"""The tokenizer: Encoder -> 1x1 conv to codebook.dim -> Quantizer -> 1x1 conv back -> Decoder (the 1x1 convs are
left out for architectures whose encoder already ends in codebook.dim, such as lattice_cnn)."""

from __future__ import annotations

from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, QuantizerOutput


class Tokenizer(nn.Module):
    """An image autoencoder with a discrete bottleneck.

    ``encoder`` must expose ``out_channels`` and ``decoder`` ``in_channels``; the 1x1 convolutions map between those
    and the quantizer's ``dim`` so that ``codebook.dim`` can be swept without touching the architecture. With
    ``projections=False`` there are none: the encoder must end in, and the decoder start from, the quantizer's ``dim``.
    """

    def __init__(self, encoder: nn.Module, quantizer: Quantizer, decoder: nn.Module, projections: bool = True):
        super().__init__()
        if not projections and not encoder.out_channels == quantizer.dim == decoder.in_channels:
            raise ValueError(
                f"without projections the encoder's {encoder.out_channels} output channels, codebook.dim "
                f"{quantizer.dim} and the decoder's {decoder.in_channels} input channels must be equal"
            )
        self.encoder = encoder
        self.pre_quant = nn.Conv2d(encoder.out_channels, quantizer.dim, 1) if projections else nn.Identity()
        self.quantizer = quantizer
        self.post_quant = nn.Conv2d(quantizer.dim, decoder.in_channels, 1) if projections else nn.Identity()
        self.decoder = decoder

    def encode(self, images: Tensor) -> QuantizerOutput:
        return self.quantizer(self.pre_quant(self.encoder(images)))

    def decode(self, codes: Tensor) -> Tensor:
        return self.decoder(self.post_quant(codes))

    def decode_indices(self, indices: Tensor) -> Tensor:
        return self.decode(self.quantizer.indices_to_codes(indices))

    def forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput]:
        quantized = self.encode(images)
        return self.decode(quantized.codes), quantized
