"""Records reference tensors from xyfJASON/visual-tokenizer-pytorch for vqbench's ImageNet 64x64 tables.

    mkdir -p /tmp/vt && git -C CLONE archive 351d29ddf8f41d8ac41224025023668ed4ad0de0 | tar -x -C /tmp/vt
    python tests/reference/visual_tokenizer/record_vqvae_imagenet64.py /tmp/vt

(CLONE: a clone of the repository; run from the vqbench checkout with ``PYTHONPATH=src``; needs torch, torchvision,
omegaconf and scikit-image.) The tables of ``docs/benchmark-imagenet64.md`` at 351d29d were trained by the same
``train_vqvae.py`` and ``models/`` as the CelebA tables, with ``configs/imagenet64/*.yaml``; so the training step is
recorded exactly as ``record_vqvae.py`` records it (its ``record_training``: SimpleCNN with hidden_dim 8 on 16x16
crops of real photographs, batch 8, three steps of ``train_step``), for the quantizers and loss coefficients of the
ImageNet-64 configs (``CASES``; codebooks of d = 64 narrowed to K = 128 codes, as there). What differs from CelebA is
the data, so this script also records ``utils/data.py``'s ImageNet items at 64x64 (``load_data`` with the configs'
``data`` section: ``name: imagenet, img_size: 64, crop: random``) on an ImageNet-layout folder of real photographs
(``record_vqgan.py``'s JPEGs): the pixels after the crop, and whether the item was flipped.

Writes ``vqvae_imagenet64_<case>.pt`` (training, one per case) and ``imagenet64_data_351d29d.pt`` (data) beside
this file. Tensors only; no code of the original is stored.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.reference.visual_tokenizer import record_vqgan, record_vqvae  # noqa: E402

HERE = Path(__file__).resolve().parent
COMMIT = record_vqvae.COMMIT
RESOLUTION = 64

#: case -> the original quantizer (target, params) and train.coef_commit, train.coef_entropy of its config
#: (configs/imagenet64/{vqvae,fsqvae,lfqvae,simvqvae,ibqvae}.yaml with the table row's command-line values)
CASES = {
    "imagenet64_vq_d8_k2048": ("VectorQuantizer", dict(codebook_num=2048, codebook_dim=8), 0.25, 0.0),
    "imagenet64_l2_d64_k128": ("VectorQuantizer", dict(codebook_num=128, codebook_dim=64, l2_norm=True), 0.25, 0.0),
    "imagenet64_entropy_d64_k128": (
        "VectorQuantizer",
        dict(codebook_num=128, codebook_dim=64, use_entropy_reg=True, entropy_reg_temp=0.01),
        0.25,
        0.1,
    ),
    "imagenet64_fsq_8-8-8-6-5": ("FiniteScalarQuantizer", dict(levels=[8, 8, 8, 6, 5]), 0.0, 0.0),
    "imagenet64_lfq_11": ("LookupFreeQuantizer", dict(dim=11, use_entropy_reg=True, entropy_reg_temp=0.01), 0.25, 0.1),
    "imagenet64_simvq_d64_k128": ("SimVQQuantizer", dict(codebook_num=128, codebook_dim=64), 0.25, 0.0),
    "imagenet64_ibq_d64_k128": (
        "IndexBackpropagationQuantizer",
        dict(codebook_num=128, codebook_dim=64, use_entropy_reg=True, entropy_reg_temp=0.01),
        0.25,
        0.1,
    ),
}


def record_items(root: Path) -> dict:
    """Every item of ``load_data``'s ImageNet train and valid datasets at 64x64, Python's and torch's generators
    seeded per item: the crop's H x W x 3 uint8 pixels (the crop alone, re-drawn under the same Python seed) and
    whether ``RandomHorizontalFlip`` flipped the item (checked: the item is the normalised crop or its mirror)."""
    from omegaconf import OmegaConf
    from utils.data import center_crop_arr, load_data, random_crop_arr

    conf = OmegaConf.create({"name": "imagenet", "root": str(root), "img_size": RESOLUTION, "crop": "random"})
    items = {}
    for split, crop_fn in (("train", random_crop_arr), ("valid", center_crop_arr)):
        dataset = load_data(conf, split=split)
        items[split] = []
        for index, path in enumerate(dataset.img_paths):
            seed = 200 + index
            random.seed(seed)
            torch.manual_seed(seed)
            x, _ = dataset[index]
            random.seed(seed)
            crop = np.asarray(crop_fn(record_vqgan.decode(Path(path).read_bytes()), RESOLUTION))
            crop = torch.from_numpy(crop.copy())
            plain = (crop.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
            flipped = not torch.allclose(x, plain, rtol=0, atol=1e-6)
            assert torch.allclose(x, plain.flip(-1) if flipped else plain, rtol=0, atol=1e-6), path
            items[split].append({"file": Path(path).name, "seed": seed, "crop": crop, "flipped": flipped})
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="an export of xyfJASON/visual-tokenizer-pytorch at " + COMMIT)
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the fixtures (default: this folder)")
    args = parser.parse_args()
    if not (args.checkout / "train_vqvae.py").is_file():
        parser.error(f"{args.checkout} has no train_vqvae.py; pass an export of visual-tokenizer-pytorch")
    sys.path.insert(0, str(args.checkout.resolve()))
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    record_vqvae.CASES.update(CASES)  # its record_training looks the case up there
    for seed, case in enumerate(CASES, start=100):
        torch.save(record_vqvae.record_training(case, seed), args.out / f"vqvae_{case}.pt")
    jpegs = record_vqgan.photo_jpegs()
    with tempfile.TemporaryDirectory() as folder:
        record_vqgan.write_imagenet_tree(Path(folder), jpegs)
        items = record_items(Path(folder))
    photos = {
        name: {"jpeg": jpeg, "decoded_sha256": record_vqgan.pixel_digest(np.asarray(record_vqgan.decode(jpeg)))}
        for name, jpeg in jpegs.items()
    }
    data = {"commit": COMMIT, "resolution": RESOLUTION, "photos": photos, "items": items}
    torch.save(data, args.out / "imagenet64_data_351d29d.pt")
    print(f"wrote {len(CASES) + 1} fixtures to {args.out}")


if __name__ == "__main__":
    main()
