"""Issue 24: pinned rFID protocols, each equal to the library it names on the same images (torch-fidelity,
torchmetrics, clean-fid), with random-weight feature networks on both sides (the pretrained files cannot be
downloaded here), and the checksummed cache of reference statistics.

Tolerance of the comparisons: both sides run the same float32 network on the same uint8 pixels, so features agree
to float32 rounding across kernel variants (eps 1.2e-7 x ~100 accumulation steps ~ 1e-5 relative); FID is a
float64 function of first and second moments of those features, of the order of their variance, so it inherits
~1e-5 relative, and the two matrix square roots (eigenvalues here, scipy's Schur sqrtm there) agree to ~1e-6 on
these full-rank or low-rank PSD products. rel=1e-3 keeps two decades of margin; a wrong resize, quantisation or
covariance normalisation moves FID by more than 1e-2 relative on these images.
"""

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from vqbench.metrics import to_uint8
from vqbench.metrics.fid import ReconstructionFID, quantise
from vqbench.metrics.fid_reference import cache_path, load_reference, save_reference
from vqbench.metrics.rfid_protocols import PROTOCOLS, get_protocol


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """torch-fidelity's inception-v3-compat with Kaiming-random convolutions, as a weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    module = "torch_fidelity.feature_extractor_inceptionv3"
    with (
        mock.patch(f"{module}.load_state_dict_from_url", return_value=None),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        torch.manual_seed(0)
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for layer in network.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


class SmallTrunk(nn.Module):
    """A random stand-in for clean-fid's InceptionV3W past its resize: float [0, 255] at 299 x 299 in, (x - 128) /
    128 as InceptionV3W normalises, 16 features out (few enough for full-rank covariances over 24 images)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=4), nn.Tanh(), nn.Conv2d(8, 4, 5, stride=4), nn.AdaptiveAvgPool2d(2)
        )

    def forward(self, x):
        assert x.shape[-2:] == (299, 299) and x.dtype == torch.float32
        return self.layers((x - 128) / 128).flatten(1)


def _pairs(n: int, size: int = 32, channels: int = 3):
    """Smooth random images (bilinear 5x5 noise, so that images differ in what survives the networks' pooling) and
    'reconstructions' of lower contrast with noise."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, channels, 5, 5, generator=g)
    originals = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=True)
    noise = torch.randn(originals.shape, generator=g)
    reconstructions = (0.7 * originals + 0.15 + 0.1 * noise).clamp(0, 1)
    return originals, reconstructions


def _write_pngs(images: torch.Tensor, folder: Path) -> Path:
    """As visual-tokenizer-pytorch's evaluate.py writes them: torchvision save_image (round half up to uint8)."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        torchvision.utils.save_image(image, folder / f"{i:04d}.png")
    return folder


def test_every_protocol_states_every_choice():
    for protocol in PROTOCOLS.values():
        record = protocol.as_record()
        for field in ("feature_extractor", "weights", "quantisation", "resize", "reference", "images", "dtype"):
            assert record[field], (protocol.id, field)
    with pytest.raises(ValueError, match="clean_fid"):
        get_protocol("adm")


def test_quantisations_round_and_truncate():
    values = torch.tensor([0.0, 0.5 / 255, 0.999 / 255, 254.5 / 255, 1.0, 1.2, -0.1])
    assert quantise(values, "round").tolist() == [0, 1, 1, 255, 255, 255, 0]
    assert quantise(values, "truncate").tolist() == [0, 0, 0, 254, 255, 255, 0]


@pytest.mark.slow  # the full Inception-v3 at 299 x 299 on 40 images: minutes on a shared CPU
def test_torch_fidelity_protocol_equals_torch_fidelity_on_png_folders(tmp_path, random_inception):
    import torch_fidelity

    originals, reconstructions = _pairs(10)
    metric = ReconstructionFID("torch_fidelity", weights_path=random_inception)
    metric.update(reconstructions[:6], originals[:6])
    metric.update(reconstructions[6:], originals[6:])
    ours = float(metric.compute())
    theirs = torch_fidelity.calculate_metrics(
        input1=str(_write_pngs(reconstructions, tmp_path / "rec")),
        input2=str(_write_pngs(originals, tmp_path / "ori")),
        fid=True,
        feature_extractor_weights_path=str(random_inception),
        cuda=False,
        batch_size=10,
        verbose=False,
        save_cpu_ram=True,
    )["frechet_inception_distance"]
    assert ours > 0.01  # two different image sets: not a degenerate zero, so the relative comparison has power
    assert ours == pytest.approx(theirs, rel=1e-3)


@pytest.mark.slow
def test_torchmetrics_normalize_protocol_equals_torchmetrics_fid(random_inception):
    from torchmetrics.image.fid import FrechetInceptionDistance

    originals, reconstructions = _pairs(10)
    metric = ReconstructionFID("torchmetrics_normalize", weights_path=random_inception)
    metric.update(reconstructions, originals)
    theirs = FrechetInceptionDistance(
        feature=2048, normalize=True, antialias=False, feature_extractor_weights_path=str(random_inception)
    )
    theirs.update(originals, real=True)
    theirs.update(reconstructions, real=False)
    ours = float(metric.compute())
    assert ours == pytest.approx(float(theirs.compute()), rel=1e-3)
    # truncation is not rounding: the round protocol on the same images gives another value
    rounded = ReconstructionFID("torch_fidelity", network=metric.network)
    rounded.update(reconstructions, originals)
    assert abs(float(rounded.compute()) - ours) > 1e-3 * ours


@pytest.mark.parametrize("channels", [3, 1])
def test_clean_fid_protocol_equals_clean_fid_on_png_folders(tmp_path, channels):
    from cleanfid import fid as cleanfid

    originals, reconstructions = _pairs(24, size=40, channels=channels)
    trunk = SmallTrunk().eval()
    metric = ReconstructionFID("clean_fid", network=trunk, features=16)
    metric.update(reconstructions, originals)
    ours = float(metric.compute())

    def features(batch):
        with torch.no_grad():
            return trunk(batch)

    theirs = cleanfid.compute_fid(
        str(_write_pngs(originals, tmp_path / "ori")),
        str(_write_pngs(reconstructions, tmp_path / "rec")),
        mode="clean",
        custom_feat_extractor=features,
        device=torch.device("cpu"),
        num_workers=0,
        batch_size=8,
        verbose=False,
    )
    assert ours > 1e-3  # far from 0 (identical sets) on the scale of these small random features
    assert ours == pytest.approx(theirs, rel=1e-3)
    # the tensor-bilinear resize of torch-fidelity is a different protocol: another value on the same images
    bilinear = torch.nn.functional.interpolate(to_uint8(reconstructions).float(), size=299, mode="bilinear")
    assert not torch.allclose(bilinear.expand(-1, 3, -1, -1), _clean_resized(reconstructions), atol=1.0)


def _clean_resized(images):
    from vqbench.metrics.fid import pil_bicubic_299

    return pil_bicubic_299(to_uint8(images.expand(-1, 3, -1, -1)))


def test_reference_statistics_are_cached_with_a_checksum(tmp_path):
    originals, reconstructions = _pairs(24, size=40)
    trunk = SmallTrunk().eval()
    first = ReconstructionFID("clean_fid", network=trunk, features=16)
    first.update(reconstructions, originals)
    value = float(first.compute())
    path = cache_path(tmp_path, "clean_fid", "abc", first.weights_digest())
    save_reference(path, *first.reference_statistics)
    reference = load_reference(path)
    assert reference is not None and reference[2] == 24
    # with the cached reference the originals never reach the network: pass garbage to prove it
    cached = ReconstructionFID("clean_fid", network=trunk, features=16, reference=reference)
    cached.update(reconstructions, torch.full_like(originals, float("nan")))
    assert float(cached.compute()) == pytest.approx(value, rel=1e-12)
    # a corrupted entry fails its checksum and is ignored
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert load_reference(path) is None
    assert np.isfinite(value)
