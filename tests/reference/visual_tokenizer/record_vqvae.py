"""Records reference tensors from xyfJASON/visual-tokenizer-pytorch, the code behind vqbench's CelebA 64x64 tables.

    python tests/reference/visual_tokenizer/record_vqvae.py CHECKOUT_PATH

CHECKOUT_PATH is an export of the repository (``git -C MIRROR archive COMMIT | tar -x -C /tmp/vt``). The fixtures
in this folder were recorded from commit 351d29ddf8f41d8ac41224025023668ed4ad0de0 (2025-02-22). Its model, quantizer
and training-step code (``models/``, ``train_vqvae.py``) compute what the commits behind the published tables
computed: ``docs/benchmark-celeba64.md`` as of 07352b4 (2024-10-29) and the README table as of 75bd156 (2024-07-21);
only the evaluation changed since (07352b4 measured PSNR/SSIM/LPIPS with piqa 1.3.2, 75bd156 counted codebook usage
over a queue of the last 65,536 tokens), so ``record_evaluation`` records those protocols as well.

Two kinds of fixture, tensors only (no code of the original is stored):

- ``vqvae_<case>.pt``: one narrow model of the original per case (SimpleCNN with hidden_dim 8 on 16x16 crops of
  real photographs, batch 8; the case's quantizer, codebooks of d = 64 narrowed to K = 128 codes), its initial state
  dict, three input batches (uint8) and, for three steps of the training step of ``train_vqvae.py`` (zero_grad,
  forward, the same loss composition, backward, Adam step, then the EMA codebook update), the loss terms, the token
  indices, the gradients of the first step and the state dict after every step.
- ``evaluation.pt``: the original's CelebA test transform applied to the JPEGs in ``celeba/``, which this script
  makes from scikit-image's photographs at CelebA's 178x218 size; PSNR and SSIM of ``metrics/`` (scikit-image) and of
  piqa on the same image pairs; the uint8 pixels ``save_image`` writes for rFID; codebook usage and perplexity over
  every token and over the 65,536-token queue.

Needs the original's imports: torch, torchvision, omegaconf, scikit-image and piqa==1.3.2
(``pip install -e ".[reference]"``).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import io
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

COMMIT = "351d29ddf8f41d8ac41224025023668ed4ad0de0"
HERE = Path(__file__).resolve().parent
RESOLUTION = 16
BATCH = 8
STEPS = 3
HIDDEN = 8

#: case -> the original quantizer (target, params) and the train section of its config (configs/celeba64/*.yaml)
CASES = {
    "vq_d4": ("VectorQuantizer", dict(codebook_num=512, codebook_dim=4), 0.25, 0.0),
    "vq_d64": ("VectorQuantizer", dict(codebook_num=128, codebook_dim=64), 0.25, 0.0),
    "vq_k1024_d4": ("VectorQuantizer", dict(codebook_num=1024, codebook_dim=4), 0.25, 0.0),
    "l2_d4": ("VectorQuantizer", dict(codebook_num=512, codebook_dim=4, l2_norm=True), 0.25, 0.0),
    "l2_d64": ("VectorQuantizer", dict(codebook_num=128, codebook_dim=64, l2_norm=True), 0.25, 0.0),
    "ema_d4": ("VectorQuantizer", dict(codebook_num=512, codebook_dim=4, use_ema_update=True), 0.25, 0.0),
    "ema_d64": ("VectorQuantizer", dict(codebook_num=128, codebook_dim=64, use_ema_update=True), 0.25, 0.0),
    "entropy_d64": ("VectorQuantizer", dict(codebook_num=128, codebook_dim=64, use_entropy_reg=True), 0.25, 0.1),
    "fsq_8-8-8": ("FiniteScalarQuantizer", dict(levels=[8, 8, 8]), 0.0, 0.0),
    "fsq_8-5-5-5": ("FiniteScalarQuantizer", dict(levels=[8, 5, 5, 5]), 0.0, 0.0),
    "lfq_9": ("LookupFreeQuantizer", dict(dim=9, use_entropy_reg=True, entropy_reg_temp=0.01), 0.25, 0.1),
    "simvq_d64": ("SimVQQuantizer", dict(codebook_num=128, codebook_dim=64), 0.25, 0.0),
}

#: photographs the CelebA-sized JPEGs are made from (scikit-image's data; faces and fur where there are some)
JPEG_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")
CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba
USAGE_QUEUE = 65536


def photo_batches(steps: int, batch: int, resolution: int, seed: int) -> torch.Tensor:
    """Random crops of real photographs, steps x batch x 3 x resolution x resolution uint8 pixels."""
    from vqbench.data.sample import PHOTOS, load_photo

    photos = [load_photo(name, 3) for name in PHOTOS["train"]]
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        crops = []
        for _ in range(batch):
            photo = photos[rng.integers(len(photos))]
            top = rng.integers(photo.shape[1] - resolution + 1)
            left = rng.integers(photo.shape[2] - resolution + 1)
            crops.append(photo[:, top : top + resolution, left : left + resolution])
        batches.append(torch.stack(crops))
    return torch.stack(batches)


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the float batch in [-1, 1] the original trains on (ToTensor, then Normalize(0.5, 0.5))."""
    return (pixels.float() / 255 - 0.5) / 0.5


def build_original(case: str, seed: int, cases: dict = CASES, hidden: int = HIDDEN):
    """The original VQModel of one case (models/vqmodel.py, models/autoencoder/simple_cnn.py, models/quantizer/)."""
    from models.autoencoder.simple_cnn import Decoder, Encoder
    from models.vqmodel import VQModel

    target, params, _, _ = cases[case]
    torch.manual_seed(seed)
    encoder = Encoder(img_channels=3, hidden_dim=hidden, n_resblocks=2)
    decoder = Decoder(img_channels=3, hidden_dim=hidden, n_resblocks=2)
    quantizer = getattr(importlib.import_module("models.quantizer"), target)(**params)
    return VQModel(encoder=encoder, decoder=decoder, quantizer=quantizer)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def record_training(
    case: str,
    seed: int,
    cases: dict = CASES,
    hidden: int = HIDDEN,
    resolution: int = RESOLUTION,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Three steps of ``train_step`` in train_vqvae.py (lines 142-179 at the recorded commit), in its order.
    ``initial_state`` replaces the original's own initial weights where given (the full-width recordings)."""
    _, params, coef_commit, coef_entropy = cases[case]
    model = build_original(case, seed, cases, hidden)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    quantizer = model.quantizer
    use_ema_update = getattr(quantizer, "use_ema_update", False)
    use_entropy_reg = getattr(quantizer, "use_entropy_reg", False)
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4)  # configs/celeba64/*.yaml: train.optim
    pixels = photo_batches(STEPS, BATCH, resolution, seed)
    record = {
        "commit": COMMIT,
        "case": case,
        "quantizer": cases[case][0],
        "quantizer_params": params,
        "coef_commit": coef_commit,
        "coef_entropy": coef_entropy,
        "hidden_dim": hidden,
        "initial_state": clone_state(model),
        "batches_uint8": pixels,  # the batches are (pixels / 255 - 0.5) / 0.5, in float32
        "losses": [],
        "indices": [],
        "states": [],
    }
    for step, x in enumerate(to_model_range(pixels)):
        model.train()
        optimizer.zero_grad()
        out = model(x)
        loss_rec = F.mse_loss(out["decx"], x)
        loss_commit = out["loss_commit"]
        loss_vq = out["loss_vq"] if not use_ema_update else None
        loss_entropy = out["loss_entropy"] if use_entropy_reg else None
        loss = loss_rec + coef_commit * loss_commit
        if not use_ema_update:
            loss = loss + loss_vq
        if use_entropy_reg:
            loss = loss + coef_entropy * loss_entropy
        loss.backward()
        if step == 0:
            record["gradients"] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        if use_ema_update:
            codebook_num, codebook_dim = quantizer.codebook_num, quantizer.codebook_dim
            flat_z = out["z"].detach().permute(0, 2, 3, 1).reshape(-1, codebook_dim)
            indices_count = torch.bincount(out["indices"], minlength=codebook_num)
            new_sumz = torch.zeros((codebook_num, codebook_dim))
            new_sumz.scatter_add_(dim=0, index=out["indices"][:, None].repeat(1, codebook_dim), src=flat_z)
            quantizer.update_codebook(new_sumz, indices_count)  # one process: reduce_tensor(t) * world_size == t
        terms = {"reconstruction": loss_rec, "commitment": loss_commit, "total": loss}
        if loss_vq is not None:
            terms["codebook"] = loss_vq
        if loss_entropy is not None:
            terms["entropy"] = loss_entropy
        record["losses"].append({k: v.detach().clone() for k, v in terms.items()})
        record["indices"].append(out["indices"].reshape(BATCH, resolution // 4, resolution // 4).clone())
        record["states"].append(clone_state(model))
    return record


def make_celeba_jpegs(folder: Path) -> list[Path]:
    """CelebA-sized (178x218) JPEGs cut from real photographs: a centre crop at CelebA's aspect ratio, resized."""
    from vqbench.data.sample import load_photo

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    width, height = CELEBA_SIZE
    for number, name in enumerate(JPEG_PHOTOS, start=1):
        photo = Image.fromarray(load_photo(name, 3).permute(1, 2, 0).numpy())
        w, h = photo.size
        crop_w = min(w, round(h * width / height))
        crop_h = round(crop_w * height / width)
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        photo = photo.crop((left, top, left + crop_w, top + crop_h)).resize(CELEBA_SIZE, Image.Resampling.BICUBIC)
        path = folder / f"{number:06d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def original_celeba_transform(split: str):
    """The transform ``utils/data.py`` builds for CelebA, captured without torchvision's download/md5 checks."""
    import torchvision.datasets
    import utils.data as vt_data

    captured = {}

    class Capture:
        def __init__(self, root, split, transform):
            captured["transform"] = transform

    real = torchvision.datasets.CelebA
    torchvision.datasets.CelebA = Capture
    try:
        vt_data.load_data(OmegaConf.create({"name": "celeba", "root": "", "img_size": 64}), split=split)
    finally:
        torchvision.datasets.CelebA = real
    return captured["transform"]


def saved_png_pixels(image: torch.Tensor) -> torch.Tensor:
    """What evaluate.py writes for rFID: torchvision's save_image of one [0, 1] image, read back as uint8."""
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(image, buffer, format="png")
    return torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).contiguous()


def record_evaluation(out: Path, seed: int = 0) -> dict:
    from metrics import PSNR, SSIM
    from piqa import PSNR as PiqaPSNR
    from piqa import SSIM as PiqaSSIM
    from utils.image import image_norm_to_float

    from vqbench.data.sample import PHOTOS, load_photo

    jpegs = make_celeba_jpegs(out / "celeba" / "img_align_celeba")
    transform = original_celeba_transform("test")
    with Image.open(jpegs[0]) as first:
        assert first.size == CELEBA_SIZE
    celeba = torch.stack([transform(Image.open(path)) for path in jpegs])

    # image pairs for the metrics: the CelebA crops and crops of other photographs, with reconstructions that are
    # noisy, blurred and partly outside [-1, 1] (evaluate.py clamps them)
    generator = torch.Generator().manual_seed(seed)
    others = [to_model_range(load_photo(name, 3)[:, 100:164, 100:164]) for name in PHOTOS["test"][:1] + PHOTOS["val"]]
    originals = torch.cat([celeba, torch.stack(others)])
    blurred = F.avg_pool2d(originals, 3, stride=1, padding=1, count_include_pad=False)
    noise = 0.15 * torch.randn(originals.shape, generator=generator)
    reconstructions = blurred + noise
    x = originals.clone()
    decx = reconstructions.clamp(-1, 1)  # evaluate.py line 107
    x, decx = image_norm_to_float(x), image_norm_to_float(decx)  # lines 110-111
    record = {
        "commit": COMMIT,
        "jpeg_names": [p.name for p in jpegs],
        "celeba_test_images": len(jpegs),  # the first originals
        "originals": originals,
        "reconstructions": reconstructions,
        "psnr_skimage": PSNR(reduction="none")(decx, x),  # metrics/psnr.py
        "ssim_skimage": SSIM(reduction="none")(decx, x),  # metrics/ssim.py
        # evaluate.py of 07352b4 (the CelebA table's commit): from piqa import PSNR, SSIM
        "psnr_piqa": PiqaPSNR(reduction="none")(decx, x),
        "ssim_piqa": PiqaSSIM(reduction="none")(decx, x),
        "png_originals": torch.stack([saved_png_pixels(image) for image in x]),
        "png_reconstructions": torch.stack([saved_png_pixels(image) for image in decx]),
    }

    # codebook usage and perplexity of a token stream longer than the queue, with a skewed code distribution
    codebook_size, batches = 512, 80
    logits = torch.linspace(0, 6, codebook_size)
    stream = torch.multinomial(logits.softmax(0), batches * BATCH * 256, replacement=True, generator=generator)
    stream[: 256 * 8] = torch.arange(256 * 8) % codebook_size  # every code appears early, then the queue forgets it
    index_batches = stream.reshape(batches, BATCH, 16, 16)
    # evaluate.py (recorded commit) lines 99-139: every token of the test split
    indices_count = torch.zeros((codebook_size,))
    for indices in index_batches:
        indices_count += F.one_hot(indices.flatten(), num_classes=codebook_size).sum(dim=0).float()
    probs = indices_count / indices_count.sum()
    record["usage_all_tokens"] = torch.tensor(torch.sum(indices_count > 0).item() / codebook_size)
    record["perplexity_all_tokens"] = torch.exp(-torch.sum(probs * torch.log(torch.clamp(probs, 1e-10))))
    # evaluate.py of 75bd156 (the README table's commit), lines 95-134: a deque of the last 65,536 tokens
    queue = collections.deque(maxlen=USAGE_QUEUE)
    for indices in index_batches:
        queue.extend(indices.flatten().tolist())
    queued = torch.tensor(queue)
    probs = torch.mean(F.one_hot(queued, num_classes=codebook_size).float(), dim=0)
    record["usage_queue"] = torch.tensor(len(torch.unique(queued)) / codebook_size)
    record["perplexity_queue"] = torch.exp(-torch.sum(probs * torch.log(torch.clamp(probs, 1e-10))))
    record["index_batches"] = index_batches.to(torch.int16)
    record["codebook_size"] = codebook_size
    return record


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
    for seed, case in enumerate(CASES):
        torch.save(record_training(case, seed), args.out / f"vqvae_{case}.pt")
    torch.save(record_evaluation(args.out), args.out / "evaluation.pt")
    total = sum(p.stat().st_size for p in args.out.glob("*.pt"))
    print(f"wrote {len(CASES) + 1} fixtures ({total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
