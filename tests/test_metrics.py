import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vqbench.data.sample import load_photo
from vqbench.metrics import CodebookUsage, DistinctTokens, MeanPerImage, psnr, ssim


def _real_photos() -> torch.Tensor:
    """Four 64x80 crops of real photographs in [0, 1] (one grayscale photo repeated to RGB)."""
    crops = []
    for name, top, left in [
        ("rocket.jpg", 100, 200),
        ("coins.png", 40, 60),
        ("chelsea.png", 50, 150),
        ("coffee.png", 0, 0),
    ]:
        crops.append(load_photo(name, 3)[:, top : top + 64, left : left + 80].float() / 255)
    return torch.stack(crops)


def _distortions(images: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "noise": (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(0, 1),
        "blur": torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False),
        "shift": images.roll(1, dims=-1),
        "quantised": (images * 7).round() / 7,
        "contrast": images * 0.6 + 0.2,
    }


@pytest.mark.parametrize("distortion", ["noise", "blur", "shift", "quantised", "contrast"])
def test_psnr_and_ssim_match_scikit_image(distortion):
    target = _real_photos()
    preds = _distortions(target)[distortion]
    ours_psnr, ours_ssim = psnr(preds, target), ssim(preds, target)
    for i in range(target.shape[0]):
        a = target[i].permute(1, 2, 0).double().numpy()
        b = preds[i].permute(1, 2, 0).double().numpy()
        assert abs(float(ours_psnr[i]) - peak_signal_noise_ratio(a, b, data_range=1)) < 1e-4
        assert abs(float(ours_ssim[i]) - structural_similarity(a, b, data_range=1, channel_axis=-1)) < 1e-4


@pytest.mark.parametrize("distortion", ["noise", "blur", "shift", "quantised", "contrast"])
def test_gaussian_ssim_matches_scikit_image_in_wang_et_al_mode(distortion):
    """metrics.ssim_window=gaussian is skimage's documented 'match Wang et al.' setting (and piqa's SSIM)."""
    target = _real_photos()
    preds = _distortions(target)[distortion]
    ours = ssim(preds, target, window="gaussian")
    assert not torch.allclose(ours, ssim(preds, target), atol=1e-3)
    for i in range(target.shape[0]):
        a = target[i].permute(1, 2, 0).double().numpy()
        b = preds[i].permute(1, 2, 0).double().numpy()
        reference = structural_similarity(
            a, b, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(float(ours[i]) - reference) < 1e-4


def test_ssim_of_identical_images_is_one():
    images = _real_photos()
    torch.testing.assert_close(ssim(images, images), torch.ones(4))


def test_mean_per_image_is_a_mean_over_images_not_batches():
    metric = MeanPerImage(psnr)
    target = _real_photos()
    preds = _distortions(target)["noise"]
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    torch.testing.assert_close(metric.compute().float(), psnr(preds, target).mean())


def test_codebook_usage_and_perplexity_closed_forms():
    metric = CodebookUsage(8)
    metric.update(torch.tensor([[0, 1], [2, 3]]))
    metric.update(torch.tensor([0, 1, 2, 3]))
    result = metric.compute()
    assert float(result["codebook_usage"]) == 0.5
    assert float(result["perplexity"]) == pytest.approx(4.0)
    single = CodebookUsage(8)
    single.update(torch.zeros(10, dtype=torch.long))
    assert float(single.compute()["perplexity"]) == pytest.approx(1.0)
    skewed = CodebookUsage(4)
    skewed.update(torch.tensor([0, 0, 0, 1]))
    p = np.array([0.75, 0.25])
    assert float(skewed.compute()["perplexity"]) == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_distinct_tokens_counts_vectors_and_stops_past_its_limit():
    metric = DistinctTokens(limit=4)
    metric.update(torch.tensor([[[[0, 1], [0, 1]], [[2, 0], [0, 1]]]]))  # 1 x 2 x 2 tokens of 2 integers
    metric.update(torch.tensor([[[[2, 0], [5, 5]]]]))
    assert float(metric.compute()["effective_codebook_size"]) == 3
    metric.update(torch.tensor([[[[7, 7], [8, 8]]]]))
    assert "effective_codebook_size" not in metric.compute()  # 5 distinct vectors > limit 4: not counted
    metric.reset()
    metric.update(torch.tensor([[[[1, 1]]]]))
    assert float(metric.compute()["effective_codebook_size"]) == 1


def test_effective_codebook_size_counts_multi_stage_tokens_as_vectors():
    """An RVQ's token is its R-vector of stage ids: (0, 0), (0, 1), (1, 0), (1, 1) are 4 tokens, though only ids 0
    and 1 occur. Usage and perplexity still count ids, pooled over the stages."""
    indices = torch.tensor([[[[0, 0], [0, 1]], [[1, 0], [1, 1]]]])  # B x H x W x R = 1 x 2 x 2 x 2
    metric = CodebookUsage(4)
    metric.update(indices)
    metric.update(indices[..., [1, 0]])  # the same four vectors again, in another order
    result = metric.compute()
    assert float(result["effective_codebook_size"]) == 4
    assert float(result["codebook_usage"]) == 2 / 4 and float(result["perplexity"]) == pytest.approx(2.0)
    single_stage = CodebookUsage(4)
    single_stage.update(indices[..., 0])  # B x H x W ids: 0, 0, 1, 1
    assert float(single_stage.compute()["effective_codebook_size"]) == 2


def test_metrics_of_bf16_inputs_keep_full_precision():
    # under bf16 autocast the decoder's output is bf16; the score must not be rounded to bf16's 3 digits
    target = _real_photos()
    preds = _distortions(target)["noise"].bfloat16()
    for fn in (psnr, ssim):
        value = fn(preds, target.bfloat16())
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, fn(preds.float(), target.bfloat16().float()), rtol=1e-6, atol=1e-6)
        assert not torch.equal(value, value.bfloat16().float())


def test_psnr_scales_with_the_data_range():
    """PSNR = 10 log10(R^2 / MSE): the same images in [0, 255] with R = 255 give the [0, 1] value (exact in float64
    up to rounding: 1e-4 dB), and R = 2 on [0, 1] images adds 20 log10(2) = 6.0206 dB."""
    target = _real_photos()
    preds = _distortions(target)["noise"]
    unit = psnr(preds, target)
    torch.testing.assert_close(psnr(preds * 255, target * 255, data_range=255.0), unit, rtol=0, atol=1e-4)
    torch.testing.assert_close(psnr(preds, target, data_range=2.0), unit + 20 * math.log10(2), rtol=0, atol=1e-4)
