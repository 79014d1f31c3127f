"""rFID: Fréchet Inception distance between the reconstructions and the reference images, under a pinned protocol
(``vqbench.metrics.rfid_protocols``: the feature network and its weights, the quantisation to 8 bits, the resize to
299 x 299).

    FID = ||mu_r - mu_o||^2 + Tr(S_r + S_o - 2 (S_r S_o)^(1/2))

with Tr((S_r S_o)^(1/2)) = sum_i sqrt(lambda_i(S_r S_o)) (the eigenvalues of a product of two PSD matrices are real
and non-negative; torchmetrics computes it the same way, torch-fidelity and clean-fid with scipy.linalg.sqrtm).
The state (feature sums and outer-product sums in float64) is sum-reduced, so multi-process evaluation pools every
image once. With cached reference statistics (``vqbench.metrics.fid_reference``) the originals are not passed through
the network at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from vqbench.metrics.reconstruction import to_uint8
from vqbench.metrics.rfid_protocols import DEFAULT_PROTOCOL, RFIDProtocol, get_protocol
from vqbench.weights import MissingWeightsError, ensure_downloaded

FEATURES = 2048


def quantise(images: Tensor, kind: str) -> Tensor:
    """[0, 1] floats -> uint8 as the protocol prescribes (``rfid_protocols.QUANTISATIONS``)."""
    if kind == "round":
        return to_uint8(images)
    return images.float().clamp(0, 1).mul(255).to(torch.uint8)  # truncation toward zero: floor for x >= 0


def pil_bicubic_299(images: Tensor) -> Tensor:
    """uint8 B x 3 x H x W -> float32 B x 3 x 299 x 299 in [0, 255] with clean-fid's own resizer (PIL bicubic per
    channel on float32 images, clipped, not re-quantised), image by image as clean-fid's loader does."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()
    resized = np.stack([resize(image) for image in pixels])  # B x 299 x 299 x 3, float32
    return torch.from_numpy(resized).permute(0, 3, 1, 2).to(images.device)


class _TorchFidelityInception(nn.Module):
    """torch-fidelity's inception-v3-compat: uint8 in (resized inside, TF1 bilinear), 2048-d pool features out."""

    def __init__(self, weights: Path):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(weights))

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)[0]


def _clean_fid_inception(weights: Path) -> nn.Module:
    """clean-fid's InceptionV3W (TorchScript): float32 [0, 255] at 299 x 299 in, 2048-d pool features out."""
    from cleanfid.inception_torchscript import InceptionV3W

    if weights.name != "inception-2015-12-05.pt":  # InceptionV3W reads that name inside a folder
        raise MissingWeightsError(
            f"metrics.inception_weights={weights}: the clean_fid protocol needs the file named "
            "inception-2015-12-05.pt (rename or link it)"
        )
    return InceptionV3W(str(weights.parent), download=False, resize_inside=False).eval().requires_grad_(False)


def weights_file(protocol: RFIDProtocol, weights_path: str | Path | None) -> Path:
    """The protocol's weights file (``weights_path``, or the file in $TORCH_HOME/hub/checkpoints, downloaded when
    absent); MissingWeightsError names the file to place there."""
    if weights_path is None:
        weights = ensure_downloaded(
            protocol.weights_url,
            f"rFID (protocol {protocol.id}: {protocol.weights_file})",
            " Or point metrics.inception_weights=PATH at the file.",
        )
    else:
        weights = Path(weights_path)
        if not weights.is_file():
            raise MissingWeightsError(
                f"metrics.inception_weights={weights_path} does not exist; point it at {protocol.weights_file} "
                f"(from {protocol.weights_url}), the weights of rFID protocol {protocol.id}"
            )
    return weights


def feature_network(protocol: RFIDProtocol, weights: Path) -> nn.Module:
    """The protocol's pretrained feature network from its weights file."""
    if protocol.extractor == "clean_fid_inception_v3":
        return _clean_fid_inception(weights)
    return _TorchFidelityInception(weights)


class ReconstructionFID(Metric):
    """``update(preds, target)`` with both in [0, 1]: target -> the reference statistics, preds -> the
    reconstructions'. ``network`` replaces the protocol's pretrained network (tests: random weights); it takes what
    the protocol feeds it (uint8 at the image size for ``tf1_bilinear``, float32 [0, 255] at 299 x 299 for
    ``pil_bicubic``). ``reference``: (mu, sigma, count) of the reference images computed earlier under the same
    protocol; the originals are then not passed through the network."""

    full_state_update = False
    higher_is_better = False

    def __init__(
        self,
        protocol: str | RFIDProtocol = DEFAULT_PROTOCOL,
        weights_path: str | Path | None = None,
        network: nn.Module | None = None,
        reference: tuple[Tensor, Tensor, int] | None = None,
        features: int = FEATURES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.protocol = protocol if isinstance(protocol, RFIDProtocol) else get_protocol(protocol)
        #: the pretrained weights file (None with an injected ``network``)
        self.weights = None if network is not None else weights_file(self.protocol, weights_path)
        self.network = network if network is not None else feature_network(self.protocol, self.weights)
        self.network.eval().requires_grad_(False)
        self.reference = reference
        #: where the reference statistics are cached (set by build_evaluation_metrics), or None
        self.reference_cache: Path | None = None
        #: (mu, sigma, count) of the reference side after compute(): what the reference cache stores
        self.reference_statistics: tuple[Tensor, Tensor, int] | None = None
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(features, features, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def weights_digest(self) -> str:
        """SHA-256 (16 hex characters) of the weights file: part of the reference cache's key."""
        from vqbench.metrics.fid_reference import file_digest

        return file_digest(self.weights) if self.weights is not None else "injected"

    def features(self, images: Tensor) -> Tensor:
        """B x C x H x W in [0, 1] -> B x D float64 features under the protocol."""
        if images.shape[1] == 1:  # Inception needs RGB: grey images are repeated, as PIL's convert('RGB') does
            images = images.expand(-1, 3, -1, -1)
        pixels = quantise(images, self.protocol.quantisation)
        if self.protocol.resize == "pil_bicubic":
            pixels = pil_bicubic_299(pixels)
        with torch.autocast(images.device.type, enabled=False):  # Inception in fp32 even under bf16-mixed
            return self.network(pixels).double()

    def _add(self, side: str, features: Tensor) -> None:
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + features.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + features.T @ features)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + features.shape[0])

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if self.reference is None:
            self._add("real", self.features(target))
        self._add("fake", self.features(preds))

    @staticmethod
    def _moments(total: Tensor, outer: Tensor, count: Tensor | int) -> tuple[Tensor, Tensor]:
        n = int(count)
        mean = total / n
        covariance = (outer - n * torch.outer(mean, mean)) / (n - 1)
        return mean, covariance

    def compute(self) -> Tensor:
        if self.reference is not None:
            mu_o, sigma_o, n_o = self.reference
            mu_o, sigma_o = mu_o.to(self.fake_sum), sigma_o.to(self.fake_sum)
        else:
            n_o = int(self.real_count)
            mu_o, sigma_o = self._moments(self.real_sum, self.real_outer, n_o)
        self.reference_statistics = (mu_o.detach().cpu(), sigma_o.detach().cpu(), n_o)
        mu_r, sigma_r = self._moments(self.fake_sum, self.fake_outer, self.fake_count)
        return frechet_distance(mu_r, sigma_r, mu_o, sigma_o)


def frechet_distance(mu_1: Tensor, sigma_1: Tensor, mu_2: Tensor, sigma_2: Tensor) -> Tensor:
    """||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 sum_i sqrt(lambda_i(S_1 S_2)), in float64."""
    eigenvalues = torch.linalg.eigvals(sigma_1 @ sigma_2)
    trace_sqrt = eigenvalues.sqrt().real.sum()
    return (mu_1 - mu_2).square().sum() + sigma_1.trace() + sigma_2.trace() - 2 * trace_sqrt
