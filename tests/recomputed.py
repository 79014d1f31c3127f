"""Evaluation metrics recomputed outside vqbench's metric code, for end-to-end checks of metrics.json: PSNR and SSIM
with scikit-image, L1 and the code statistics with numpy, from a checkpoint's weights or from saved PNG pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchvision.io import read_image

from vqbench.build import build_datamodule, build_tokenizer
from vqbench.data.module import pixel_tensor
from vqbench.data.settings import pixel_statistic


def image_metrics(originals: np.ndarray, reconstructions: np.ndarray, ssim_window: str = "uniform") -> dict[str, float]:
    """Means over images of PSNR, SSIM and L1, for N x H x W x C in [0, 1]. SSIM: scikit-image's defaults (data range
    1), or with ``ssim_window="gaussian"`` its Gaussian form (sigma 1.5, an 11x11 window, population covariance: Wang
    et al. 2004)."""
    pairs = list(zip(originals.astype(np.float64), reconstructions.astype(np.float64), strict=True))
    gaussian = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    options = gaussian if ssim_window == "gaussian" else {}
    return {
        "psnr": float(np.mean([peak_signal_noise_ratio(o, r, data_range=1.0) for o, r in pairs])),
        "ssim": float(
            np.mean([structural_similarity(o, r, data_range=1.0, channel_axis=-1, **options) for o, r in pairs])
        ),
        "l1": float(np.mean([np.abs(o - r).mean() for o, r in pairs])),
    }


def code_metrics(tokens: np.ndarray, codebook_size: int | None, window: int | None = None) -> dict[str, float]:
    """Usage, perplexity and effective size of tokens in split order: N x T ids, or N x T x R id vectors.

    Usage and perplexity count ids (every stage's) over the last ``window`` positions; the effective size counts the
    distinct tokens (ids, or id vectors) over all of them."""
    positions = tokens.reshape(-1, *tokens.shape[2:])
    result = {"effective_codebook_size": float(len(np.unique(positions.reshape(len(positions), -1), axis=0)))}
    if codebook_size is not None:
        recent = positions if window is None else positions[-window:]
        counts = np.bincount(recent.ravel(), minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        result["codebook_usage"] = float((counts > 0).sum() / codebook_size)
        result["perplexity"] = float(np.exp(-(p * np.log(p)).sum()))
        every = np.bincount(positions.ravel(), minlength=codebook_size)
        result["used_codes"] = float((every > 0).sum())
        result["unused_codes"] = float((every == 0).sum())
        if window is not None:
            q = every[every > 0] / every.sum()
            result["codebook_usage_all_tokens"] = result["used_codes"] / codebook_size
            result["perplexity_all_tokens"] = float(np.exp(-(q * np.log(q)).sum()))
        if positions.ndim == 2:  # (N·T) x R ids of a residual VQ: every level's own histogram
            for level in range(positions.shape[-1]):
                level_counts = np.bincount(positions[..., level].ravel(), minlength=codebook_size)
                q = level_counts[level_counts > 0] / level_counts.sum()
                result[f"codebook_usage/level_{level}"] = float((level_counts > 0).sum() / codebook_size)
                result[f"perplexity/level_{level}"] = float(np.exp(-(q * np.log(q)).sum()))
    return result


def _unit_range_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """The model's pixel space -> [0, 1] (x * std + mean, clamped), N x H x W x C."""
    return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).double().numpy()


def _pixel_statistic(cfg, key: str) -> torch.Tensor:
    return pixel_tensor(pixel_statistic(cfg.data, key), torch.empty(0))


def checkpoint_outputs(
    ckpt: Path, split: str, use_ema: bool = False, images: int | None = None, overrides: dict | None = None
) -> dict:
    """The first ``images`` images (all by default) of a split through a checkpoint's tokenizer, the data and the
    network built from the config embedded in the checkpoint (with ``overrides``, dotted keys), under bf16 autocast
    when its trainer.precision is bf16-mixed: originals and reconstructions (N x H x W x C in [0, 1]), tokens
    (N x T[ x R] ids), the quantizer's codebook size and the usage window of the config."""
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(payload["vqbench_config"])
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value)
    tokenizer, _ = build_tokenizer(cfg)
    prefix = "ema.module." if use_ema else "tokenizer."
    tokenizer.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    dataset = build_datamodule(cfg).dataset(split)
    count = len(dataset) if images is None else images
    mean, std = _pixel_statistic(cfg, "pixel_mean"), _pixel_statistic(cfg, "pixel_std")
    batch = (torch.stack([dataset[i] for i in range(count)]).float() / 255 - mean) / std
    bf16 = cfg.trainer.precision == "bf16-mixed"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        reconstruction, quantized = tokenizer.eval()(batch)
    return {
        "originals": _unit_range_images(batch, mean, std),
        "reconstructions": _unit_range_images(reconstruction.float(), mean, std),
        "tokens": quantized.indices.reshape(count, -1, *quantized.indices.shape[3:]).numpy(),
        "codebook_size": tokenizer.quantizer.codebook_size,
        "window": cfg.metrics.get("usage_window"),
        "ssim_window": cfg.metrics.get("ssim_window", "uniform"),
    }


def reference_metrics(ckpt: Path, split: str, **options) -> dict[str, float]:
    """Every metric of a split that needs no pretrained network, named as in metrics.json (``split/name``);
    ``options`` as for ``checkpoint_outputs``."""
    outputs = checkpoint_outputs(ckpt, split, **options)
    metrics = image_metrics(outputs["originals"], outputs["reconstructions"], outputs["ssim_window"])
    metrics |= code_metrics(outputs["tokens"], outputs["codebook_size"], outputs["window"])
    return {f"{split}/{name}": value for name, value in metrics.items()}


def assert_metrics_match(recorded: dict[str, float], expected: dict[str, float]) -> None:
    """Same keys, and every value equal up to the float32 rounding of the network's forward pass. The training-time
    codebook health (train/*) depends on the training's history, not on the checkpoint, and is left out."""
    recorded = {key: value for key, value in recorded.items() if not key.startswith("train/")}
    assert set(recorded) == set(expected)
    for key, value in expected.items():
        assert recorded[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def png_pairs(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The NNNNNN_original.png / NNNNNN_reconstruction.png pairs of ``metrics.save_reconstructions``, in [0, 1]."""
    names = sorted(p.name.removesuffix("_original.png") for p in directory.glob("*_original.png"))

    def read(suffix: str) -> np.ndarray:
        return np.stack([read_image(str(directory / f"{n}_{suffix}.png")).permute(1, 2, 0).numpy() for n in names])

    return read("original") / 255.0, read("reconstruction") / 255.0
