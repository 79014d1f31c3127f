"""The Python API: a trained or converted checkpoint as a function from images to token ids and back.

    from vqbench import load_tokenizer

    tok = load_tokenizer("outputs/DATE/TIME/checkpoints/last.ckpt", device="cuda")
    x = tok.preprocess(images)          # PIL images, uint8 tensors or [0, 1] float tensors -> B x C x S x S
    ids = tok.encode(x)                 # B x h x w token ids, h x w = tok.token_grid, values < tok.codebook_size
    y = tok.decode(ids)                 # B x C x S x S; tok.to_uint8(y) for 0..255 pixels

Images live in the checkpoint's pixel space, (x - data.pixel_mean) / data.pixel_std with x in [0, 1]: [-1, 1] for
every recipe but the ImageNet-128 FSQ (ImageNet mean/std) and LL-VQ-VAE ones. ``preprocess`` is the evaluation
preprocessing of the checkpoint's data config (the same crop and resize as ``+eval=true``), and ``decode(encode(x))``
is the reconstruction the evaluation scores, clamped to the image range as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from vqbench.data.evaluation_transform import evaluation_transform
from vqbench.data.images import to_uint8_tensor
from vqbench.data.module import pixel_tensor, to_model_range
from vqbench.errors import VqbenchError
from vqbench.models.tokenizer import Tokenizer

ImageInput = Image.Image | Tensor | Sequence[Image.Image | Tensor]


@dataclass
class ImageTokenizer:
    """A tokenizer in evaluation mode on ``device``, with the config it was trained (or converted) with."""

    tokenizer: Tokenizer
    config: DictConfig
    device: torch.device

    @property
    def codebook_size(self) -> int | None:
        """K: token ids are in [0, K). None for the lattice, whose tokens are unbounded integer vectors."""
        return self.tokenizer.quantizer.codebook_size

    @property
    def channels(self) -> int:
        return int(self.config.data.channels)

    @property
    def resolution(self) -> int:
        """S: ``preprocess`` returns S x S images (the checkpoint's ``data.resolution``)."""
        return int(self.config.data.resolution)

    @cached_property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token ids of one S x S image."""
        probe = torch.zeros(1, self.channels, self.resolution, self.resolution, device=self.device)
        with torch.no_grad():
            h, w = self.tokenizer.pre_quant(self.tokenizer.encoder(probe)).shape[-2:]
        return int(h), int(w)

    def preprocess(self, images: ImageInput) -> Tensor:
        """One image or a batch -> B x C x S x S floats in the pixel space on the tokenizer's device.

        Accepts PIL images, uint8 tensors (C x H x W or B x C x H x W, values 0..255) and float tensors with values
        in [0, 1], or a list of any of them; each image goes through the evaluation crop and resize of the
        checkpoint's data config. Floats are rounded to uint8 first, as the dataset's pixels are.
        """
        pils = [self._to_pil(image) for image in _as_list(images)]
        transform = evaluation_transform(self.config.data)
        try:
            batch = torch.stack([to_uint8_tensor(transform(image)) for image in pils])
        except ValueError as error:
            raise VqbenchError(f"cannot preprocess an image for this tokenizer: {error}") from None
        return self.from_uint8(batch.to(self.device))

    def _to_pil(self, image: Image.Image | Tensor) -> Image.Image:
        if isinstance(image, Image.Image):
            return image.convert("RGB" if self.channels == 3 else "L")
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise VqbenchError(f"expected PIL images or (B x) C x H x W tensors with 1 or 3 channels, got {shape}")
        if image.is_floating_point():
            if image.min() < 0 or image.max() > 1:
                raise VqbenchError("float images must have values in [0, 1]; pass uint8 tensors for 0..255 pixels")
            image = image.mul(255).round()
        elif image.dtype != torch.uint8:
            raise VqbenchError(f"integer images must be uint8 (0..255), got {image.dtype}")
        array = image.to(torch.uint8).cpu().permute(1, 2, 0).numpy()
        pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return pil.convert("RGB" if self.channels == 3 else "L")

    def _check_batch(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise VqbenchError(
                f"expected B x {self.channels} x H x W images in the pixel space (tok.preprocess makes them), "
                f"got {tuple(images.shape)}"
            )

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """B x C x H x W images in the pixel space -> integer token ids, B x h x w (B x h x w x R for residual VQ,
        B x h x w x d' integer vectors for the lattice)."""
        self._check_batch(images)
        return self.tokenizer.encode(images.to(self.device)).indices

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Token ids from ``encode`` -> images in the pixel space, clamped to the image range [0, 1] there as the
        evaluation clamps reconstructions."""
        images = self.tokenizer.decode_indices(indices.to(self.device))
        mean, std = self._pixel_statistics(images)
        low, high = (0 - mean) / std, (1 - mean) / std  # [0, 1] in the pixel space: [-1, 1] by default
        return torch.clamp(images, min=low.expand_as(images), max=high.expand_as(images))

    def from_uint8(self, pixels: Tensor) -> Tensor:
        """uint8 0..255 pixels (B x C x S x S, already cropped) -> the pixel space, as the data module maps them."""
        from vqbench.data.settings import pixel_statistic

        return to_model_range(
            pixels, pixel_statistic(self.config.data, "pixel_mean"), pixel_statistic(self.config.data, "pixel_std")
        )

    def to_uint8(self, images: Tensor) -> Tensor:
        """Images in the pixel space -> uint8 0..255 pixels (clamped, rounded), e.g. to save them as PNG."""
        mean, std = self._pixel_statistics(images)
        return images.mul(std).add(mean).clamp(0, 1).mul(255).round().to(torch.uint8)

    def _pixel_statistics(self, like: Tensor) -> tuple[Tensor, Tensor]:
        from vqbench.data.settings import pixel_statistic

        mean, std = (pixel_statistic(self.config.data, key) for key in ("pixel_mean", "pixel_std"))
        return pixel_tensor(mean, like), pixel_tensor(std, like)


def _as_list(images: ImageInput) -> list[Image.Image | Tensor]:
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images)
    if isinstance(images, (Image.Image, Tensor)):
        return [images]
    return list(images)


def load_tokenizer(
    checkpoint: str,
    use_ema: bool = False,
    device: str | torch.device = "cpu",
    trusted_modules: Sequence[str] = (),
) -> ImageTokenizer:
    """The tokenizer of a vqbench checkpoint (``checkpoints/last.ckpt`` of a training run, or the output of
    ``python -m vqbench.convert``), read tensors-only (``torch.load(weights_only=True)``), its config checked before
    anything is built (``vqbench.checkpoint``). ``use_ema=True`` takes the weight EMA of a run trained with
    ``ema_decay``. A folder written by ``python -m vqbench.export`` (safetensors + config.json), or ``hf://OWNER/NAME``
    for such a folder on the Hugging Face Hub, loads the same way, its config checked alike. ``trusted_modules``:
    module prefixes of your own classes that the stored config may build (docs/checkpoints.md)."""
    from pathlib import Path

    from vqbench.checkpoint import load_checkpoint

    if str(checkpoint).startswith("hf://") or Path(checkpoint).is_dir():
        from vqbench.export_format import download, read_export

        if use_ema:
            raise VqbenchError("an export holds one set of weights; export with use_ema=true instead of loading it so")
        folder = download(str(checkpoint).removeprefix("hf://")) if str(checkpoint).startswith("hf://") else checkpoint
        return tokenizer_from_checkpoint(read_export(folder, trusted_modules), str(folder), False, device)

    payload = load_checkpoint(str(checkpoint), trusted_modules=trusted_modules)
    return tokenizer_from_checkpoint(payload, str(checkpoint), use_ema, device)


def tokenizer_from_checkpoint(
    payload: dict, checkpoint: str, use_ema: bool, device: str | torch.device, config: DictConfig | None = None
) -> ImageTokenizer:
    """The tokenizer of a checkpoint already read (and checked) by ``vqbench.checkpoint.load_checkpoint``;
    ``config``: the checkpoint's own config with changes (e.g. an export's data overrides), by default the
    checkpoint's."""
    from vqbench.checkpoint import evaluation_module

    trained = OmegaConf.create(payload["vqbench_config"])
    module = evaluation_module(trained, payload, checkpoint, use_ema=use_ema)
    device = torch.device(device)
    return ImageTokenizer(module.tokenizer.eval().to(device), trained if config is None else config, device)
