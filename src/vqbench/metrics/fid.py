"""rFID: Fréchet Inception distance between the reconstructions and the evaluated originals.

torchmetrics' FrechetInceptionDistance around torch-fidelity's ``inception-v3-compat`` extractor (2048-d pool
features, the TF Inception weights every FID paper uses), with torch-fidelity's own TF1-style bilinear resize to
299 (``antialias=False``) so numbers agree with torch-fidelity's. Both sides are quantised to uint8, exactly what a
PNG round trip would give. Its state (feature sums and outer-product sums in float64) is sum-reduced, so
multi-process evaluation pools every image once.

    FID = ||mu_r - mu_o||^2 + Tr(S_r + S_o - 2 (S_r S_o)^(1/2))
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from vqbench.metrics.reconstruction import to_uint8
from vqbench.weights import MissingWeightsError, ensure_downloaded

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


class ReconstructionFID(FrechetInceptionDistance):
    """``update(preds, target)`` with both in [0, 1]: target -> the real statistics, preds -> the fake ones."""

    higher_is_better = False

    def __init__(self, weights_path: str | Path | None = None, **kwargs):
        if weights_path is None:
            weights_path = ensure_downloaded(
                INCEPTION_URL,
                "rFID (torch-fidelity's Inception-v3)",
                " Or point metrics.inception_weights=PATH at the file.",
            )
        elif not Path(weights_path).is_file():
            raise MissingWeightsError(
                f"metrics.inception_weights={weights_path} does not exist; point it at "
                f"{Path(INCEPTION_URL).name} (from {INCEPTION_URL})"
            )
        super().__init__(
            feature=2048, feature_extractor_weights_path=str(weights_path), antialias=False, normalize=False, **kwargs
        )

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if preds.shape[1] == 1:  # Inception needs RGB: grey images are repeated, as torch-fidelity does
            preds, target = preds.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        with torch.autocast(preds.device.type, enabled=False):  # Inception in fp32 even under bf16-mixed
            super().update(to_uint8(target), real=True)
            super().update(to_uint8(preds), real=False)
