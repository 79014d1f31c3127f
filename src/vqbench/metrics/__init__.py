"""Evaluation metrics."""

from vqbench.metrics.aggregate import CodebookUsage, DistinctTokens, MeanPerImage
from vqbench.metrics.reconstruction import psnr, ssim

__all__ = ["CodebookUsage", "DistinctTokens", "MeanPerImage", "psnr", "ssim"]
