"""The tokenizer: Encoder -> 1x1 conv to codebook.dim -> Quantizer -> 1x1 conv back -> Decoder (the 1x1 convs are
left out for architectures whose encoder already ends in codebook.dim, such as lattice_cnn)."""

from __future__ import annotations

from torch import Tensor, nn

from vqbench.quantizers.base import Quantizer, QuantizerOutput


class Tokenizer(nn.Module):
    """An image autoencoder with a discrete bottleneck.

    ``encoder`` must expose ``out_channels`` and ``decoder`` ``in_channels``; the 1x1 convolutions map between those
    and the quantizer's ``dim`` so that ``codebook.dim`` can be swept without touching the architecture.
    ``pre_quant_conv=False`` / ``post_quant_conv=False`` leave one out, for an encoder that ends in, or a decoder that
    starts from, the quantizer's ``dim`` (the ImageNet-128 FSQ decoder reads the codes directly; the LL-VQ-VAE
    autoencoder has neither).
    """

    def __init__(
        self,
        encoder: nn.Module,
        quantizer: Quantizer,
        decoder: nn.Module,
        pre_quant_conv: bool = True,
        post_quant_conv: bool = True,
    ):
        super().__init__()
        if not pre_quant_conv and encoder.out_channels != quantizer.dim:
            raise ValueError(
                f"without a pre-quant conv the encoder must end in the {quantizer.dim}-dim codes, but it gives "
                f"{encoder.out_channels} channels; set codebook.dim to the encoder's output width"
            )
        self.encoder = encoder
        self.pre_quant = nn.Conv2d(encoder.out_channels, quantizer.dim, 1) if pre_quant_conv else nn.Identity()
        self.quantizer = quantizer
        if post_quant_conv:
            self.post_quant = nn.Conv2d(quantizer.dim, decoder.in_channels, 1)
        elif decoder.in_channels == quantizer.dim:
            self.post_quant = nn.Identity()
        else:
            raise ValueError(
                f"without a post-quant conv the decoder must read the {quantizer.dim}-dim codes, but it expects "
                f"{decoder.in_channels} channels; set model.decoder.in_channels to codebook.dim"
            )
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
