"""PSNR and SSIM per image, matching scikit-image's definitions, as batched tensor code.

Both take B x C x H x W tensors in [0, 1] and return one float32 value per image, so a mean over a dataset is a mean
over images (the protocol of every published table), not over batches. They compute in float64 whatever the input dtype:
under bf16 autocast the decoder's output is bf16, and a bf16 PSNR would keep only three significant digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(preds: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """10 log10(R^2 / MSE) per image (``skimage.metrics.peak_signal_noise_ratio``)."""
    mse = (preds.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def ssim(
    preds: Tensor, target: Tensor, data_range: float = 1.0, window: int = 7, k1: float = 0.01, k2: float = 0.03
) -> Tensor:
    """Mean structural similarity per image, as ``skimage.metrics.structural_similarity(data_range=1,
    channel_axis=-1)`` with its defaults (Wang et al. 2004, eq. 13):

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
        C1 = (k1 R)^2, C2 = (k2 R)^2,

    with local statistics from a ``window`` x ``window`` uniform filter and sample covariances (factor
    n / (n - 1), n = window^2). scikit-image filters with reflection padding and then discards a border of
    (window - 1) / 2 pixels before averaging, which is exactly the set of positions a padding-free ("valid")
    filter produces; averaging is over pixels, then over channels.
    """
    x, y = preds.double(), target.double()
    c = x.shape[1]
    kernel = torch.full((c, 1, window, window), 1.0 / window**2, dtype=x.dtype, device=x.device)

    def local_mean(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, groups=c)

    n = window**2
    cov_norm = n / (n - 1)
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = cov_norm * (local_mean(x * x) - mu_x * mu_x)
    var_y = cov_norm * (local_mean(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (local_mean(x * y) - mu_x * mu_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(1).float()


def l1(preds: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error per image on [0, 1] (cf. the l1_loss column of Doraemonzzz/vector-quantize's tables)."""
    return (preds.double() - target.double()).abs().flatten(1).mean(1).float()


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 as ``torchvision.utils.save_image`` stores them in a PNG: x * 255 + 0.5, truncated
    (round half up), clamped to [0, 255]."""
    return images.float().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
