"""What ``record_vqgan.py`` and ``tests/test_fidelity_visual_tokenizer_vqgan.py`` must share: the commit the VQGAN
fixtures were recorded from, the fixture paths, and the frozen networks that cannot be downloaded here.

LPIPS needs ImageNet-pretrained VGG16 (training loss) and AlexNet (evaluation metric) trunks. Both sides of the
comparison get the same seeded random trunk instead, drawn from NumPy's legacy ``RandomState`` (whose streams are
frozen across NumPy versions), so the recorder and the test build bit-identical weights without storing 59 MB of
them. The LPIPS linear heads are real: the recorder loads the checkout's own ``losses/cache/vgg.pth`` and the ``lpips``
package's AlexNet heads; the test checks the recorded VGG heads against the package's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

#: ``git -C /work/.mirror/xyfJASON+visual-tokenizer-pytorch/repo log -1 --format=%H``
COMMIT = "351d29ddf8f41d8ac41224025023668ed4ad0de0"
#: the commit of the older ImageNet-256 table (docs/benchmark-imagenet256.md of 6fb0cc9 to 07352b4) and its
#: train_vqgan.py (``record_vqgan_07352b4.py``)
COMMIT_07352B4 = "07352b46e9ecbf1efcf43bdf474db5a05630f17c"
HERE = Path(__file__).resolve().parent


def fixture_path(name: str, commit: str = COMMIT) -> Path:
    """``vqgan_<name>_<commit[:7]>.pt`` beside this file: every fixture names the commit it was recorded from."""
    return HERE / f"vqgan_{name}_{commit[:7]}.pt"


#: (features index, in, out, kernel) of every convolution of torchvision's ``vgg16().features`` and
#: ``alexnet().features``: the trunks LPIPS slices (written out so that no 138M-parameter VGG16 has to be built).
VGG16_CONVS = [
    (0, 3, 64, 3), (2, 64, 64, 3), (5, 64, 128, 3), (7, 128, 128, 3), (10, 128, 256, 3), (12, 256, 256, 3),
    (14, 256, 256, 3), (17, 256, 512, 3), (19, 512, 512, 3), (21, 512, 512, 3), (24, 512, 512, 3),
    (26, 512, 512, 3), (28, 512, 512, 3),
]  # fmt: skip
ALEXNET_CONVS = [(0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)]
VGG16_SEED = 16
ALEXNET_SEED = 8


def seeded_trunk_weights(convs: list[tuple[int, int, int, int]], seed: int) -> dict[str, torch.Tensor]:
    """He-normal weights and small normal biases for each (index, in, out, kernel) convolution, keyed like the
    torchvision ``features`` state dict ("0.weight", "0.bias", ...)."""
    rng = np.random.RandomState(seed)
    weights = {}
    for index, c_in, c_out, k in convs:
        std = np.sqrt(2.0 / (c_in * k * k))
        weight = rng.standard_normal((c_out, c_in, k, k)) * std
        weights[f"{index}.weight"] = torch.from_numpy(weight.astype(np.float32))
        weights[f"{index}.bias"] = torch.from_numpy((rng.standard_normal(c_out) * 0.01).astype(np.float32))
    return weights


def vgg16_trunk() -> dict[str, torch.Tensor]:
    return seeded_trunk_weights(VGG16_CONVS, VGG16_SEED)


def alexnet_trunk() -> dict[str, torch.Tensor]:
    return seeded_trunk_weights(ALEXNET_CONVS, ALEXNET_SEED)


@torch.no_grad()
def load_trunk(sliced: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Loads features-indexed ``weights`` into an LPIPS trunk split into ``sliceN`` sequentials (the ``lpips``
    package's and visual-tokenizer-pytorch's ``vgg16``/``alexnet`` both keep torchvision's layer indices as names)."""
    loaded = set()
    for name, parameter in sliced.named_parameters():
        key = name.split(".", 1)[1]  # "slice2.5.weight" -> "5.weight"
        parameter.copy_(weights[key])
        loaded.add(key)
    if loaded != set(weights):
        raise ValueError(f"trunk layers not loaded: {sorted(set(weights) - loaded)}")
