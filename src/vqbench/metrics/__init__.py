"""Evaluation metrics. LPIPS (``lpips_metric``) and rFID (``fid``) load pretrained networks and are imported on use."""

from vqbench.metrics.aggregate import CodebookUsage, DistinctTokens, MeanPerImage
from vqbench.metrics.reconstruction import SSIM_WINDOWS, l1, psnr, ssim, to_uint8

__all__ = ["SSIM_WINDOWS", "CodebookUsage", "DistinctTokens", "MeanPerImage", "l1", "psnr", "ssim", "to_uint8"]
