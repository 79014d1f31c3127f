"""Records the CelebA 64x64 rows of xyfJASON/visual-tokenizer-pytorch at the recipes' real width.

    git -C MIRROR archive 351d29ddf8f41d8ac41224025023668ed4ad0de0 | tar -x -C /tmp/vt
    python tests/reference/visual_tokenizer/record_vqvae_full_width.py /tmp/vt

``record_vqvae.py`` records narrow models (hidden_dim 8, 16x16 crops, K 128 for d 64) with every tensor; this script
records every row of the CelebA tables as ``configs/celeba64/*.yaml`` build it (SimpleCNN hidden_dim 256 and two
residual blocks, the row's K and d) on 64x64 crops, batch 8 (2,048 tokens per step), for three steps of
``train_vqvae.py``'s training step (the same function, ``record_vqvae.record_training``). The 4.9M initial weights are
not stored: ``initial_state`` draws them from the names and shapes with a seeded ``torch.Generator`` (uniform draws,
the same on every CPU kernel), and the test draws the same ones. ``vqvae_full_width.pt`` holds, per row and step,
the loss terms and the token ids (int16), and the names and shapes of the weights.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from tests.reference.visual_tokenizer.record_vqvae import COMMIT, record_training  # noqa: E402

HIDDEN = 256  # configs/celeba64/*.yaml: encoder/decoder hidden_dim
RESOLUTION = 64  # data.img_size
VQ = "VectorQuantizer"
#: row -> (quantizer, its params in configs/celeba64/*.yaml, coef_commit, coef_entropy)
FULL_WIDTH_CASES = {
    **{f"vq_d{d}": (VQ, dict(codebook_num=512, codebook_dim=d), 0.25, 0.0) for d in (4, 8, 16, 32, 64)},
    **{f"vq_k{k}": (VQ, dict(codebook_num=k, codebook_dim=64), 0.25, 0.0) for k in (1024, 2048)},
    **{f"l2_d{d}": (VQ, dict(codebook_num=512, codebook_dim=d, l2_norm=True), 0.25, 0.0) for d in (4, 64)},
    **{f"ema_d{d}": (VQ, dict(codebook_num=512, codebook_dim=d, use_ema_update=True), 0.25, 0.0) for d in (4, 64)},
    "entropy_d64": (VQ, dict(codebook_num=512, codebook_dim=64, use_entropy_reg=True), 0.25, 0.1),
    "fsq_8-8-8": ("FiniteScalarQuantizer", dict(levels=[8, 8, 8]), 0.0, 0.0),
    "fsq_8-5-5-5": ("FiniteScalarQuantizer", dict(levels=[8, 5, 5, 5]), 0.0, 0.0),
    "lfq_9": ("LookupFreeQuantizer", dict(dim=9, use_entropy_reg=True, entropy_reg_temp=0.01), 0.25, 0.1),
    "simvq_d64": ("SimVQQuantizer", dict(codebook_num=512, codebook_dim=64), 0.25, 0.0),
}


def initial_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Initial weights in the original's state-dict names, drawn in sorted-name order from one seeded generator with
    the spreads of the original's initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for convolution and linear
    weights and biases (PyTorch's default bound), U(-1/K, 1/K) for a learned codebook, uniform with variance 1/d for
    SimVQ's frozen codebook (N(0, 1/d) in the original), EMA sums = the codebook and EMA counts 0."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        if name == "quantizer.ema_sumn":
            state[name] = torch.zeros(shape)
            continue
        if name == "quantizer.ema_sumz":
            continue
        if name == "quantizer.codebook.weight":
            bound = math.sqrt(3 / shape[1]) if "quantizer.codebook_proj.weight" in shapes else 1 / shape[0]
        else:
            weight = shapes[name[: -len("bias")] + "weight"] if name.endswith("bias") else shape
            bound = 1 / math.sqrt(math.prod(weight[1:]))
        state[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    if "quantizer.ema_sumz" in shapes:
        state["quantizer.ema_sumz"] = state["quantizer.codebook.weight"].clone()
    return state


def record_full_width(case: str, seed: int) -> dict:
    from tests.reference.visual_tokenizer.record_vqvae import build_original

    shapes = {k: tuple(v.shape) for k, v in build_original(case, seed, FULL_WIDTH_CASES, HIDDEN).state_dict().items()}
    record = record_training(case, seed, FULL_WIDTH_CASES, HIDDEN, RESOLUTION, initial_state(shapes, seed))
    return {
        "case": case,
        "seed": seed,
        "quantizer": record["quantizer"],
        "quantizer_params": record["quantizer_params"],
        "shapes": shapes,
        "losses": record["losses"],
        "indices": [i.to(torch.int16) for i in record["indices"]],
        "batch_seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="an export of xyfJASON/visual-tokenizer-pytorch at " + COMMIT)
    parser.add_argument("--out", type=Path, default=HERE / "vqvae_full_width.pt")
    parser.add_argument("--cases", nargs="*", default=list(FULL_WIDTH_CASES))
    args = parser.parse_args()
    if not (args.checkout / "train_vqvae.py").is_file():
        parser.error(f"{args.checkout} has no train_vqvae.py; pass an export of visual-tokenizer-pytorch")
    sys.path.insert(0, str(args.checkout.resolve()))
    torch.use_deterministic_algorithms(True)
    records = {}
    for seed, case in enumerate(FULL_WIDTH_CASES):
        if case in args.cases:
            records[case] = record_full_width(case, seed)
            print("recorded", case, flush=True)
    torch.save({"commit": COMMIT, "hidden_dim": HIDDEN, "resolution": RESOLUTION, "cases": records}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
