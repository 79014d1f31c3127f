"""Evaluation metrics."""

from vqbench.metrics.aggregate import CodebookUsage, MeanPerImage
from vqbench.metrics.reconstruction import psnr, ssim

__all__ = ["CodebookUsage", "MeanPerImage", "psnr", "ssim"]
