"""Records reference tensors from Doraemonzzz/vector-quantize, the code behind the ImageNet-128 FSQ tables.

    git -C MIRROR archive 3f0178ceb7362afc41ee2c3e8378b128038ddc24 | tar -x -C /tmp/vector-quantize
    python tests/reference/vector_quantize/record.py /tmp/vector-quantize

Commit 3f0178ceb7362afc41ee2c3e8378b128038ddc24 (2024-06-07) is the commit whose README first shows the fp32 table
("Repreduced result"); the bf16 table followed 13 minutes later (503b2e4) with no code change. The repository was
then FSQ-pytorch's single-folder code: ``train.py``, ``model.py``, ``quantizers/{fsq,sfsq,vq,lfq}.py``,
``lpips.py``, ``metric.py``, ``scheduler.py``, ``dataset.py``, ``eval_ddp.py``. The ``vector_quants/`` package and
``train_stage1.py`` of the repository's newest commit (e8e53ef, whose README still carries the table) came later.
The script checks the git blob id of every file it imports, so it only runs on that commit.

What it records, written next to this file (``*.pt``, each naming the commit):

- ``data.pt`` with ``photos/val/skimage/*.jpg``: three real photographs (scikit-image's) saved as JPEGs, and what
  the original's ``dataset.py`` (ImageFolder + Resize(128) + CenterCrop(128) + ToTensor + Normalize) makes of them.
- ``batches.pt``: four training batches of 4 real photographs (scikit-image's), preprocessed by the original's
  ``get_transform`` at 16x16.
- one file per table row type (``fsq_8-6-5``, ``fsq_7-5-5-5-5``, ``sfsq_8-8-8-5-5-5``, ``ema``, ``lfq``): the
  table's model (``model.VQVAE``) at narrow widths (8 channels, 16x16 images, 2x2 tokens; EMA K 16 x d 8,
  LFQ 6 bits), its initial weights, and four optimizer steps run as ``train.py`` runs them (lines 85-148):
  L1 + LPIPS(un-normalised to [0, 1]) + the quantizer's loss, Adam, the AnnealingLR schedule (warmup 0.2 of 10
  iterations so that lr 0, the warmup and the decay all happen), a GradScaler and no ``optimizer.zero_grad()``
  (the code of the tables had none). Per step: the lr, the loss terms, the token ids, and the EMA buffers; the
  gradients of the first step; the weights after the first and the last step; then the evaluation quantities of
  ``eval_ddp.py`` on one batch (L1, perceptual value, ids, codebook usage as it counts it).

The initial weights are PyTorch's defaults (seed 0) except that the encoder's last 1x1 convolution is scaled by 20
and the EMA codebook starts along encoder outputs, at 0.01 of their norm: at the default scale the narrow model's
latents sit near 0 and all tokens fall on one or two codes, which would leave the rounding, the nearest-code search
and the EMA update of most codes untested. The original's initialisation itself (PyTorch defaults, U(-1/K, 1/K)
codebook, zero counts) is compared with vqbench's by reading the code, not here.

The perceptual network is the original's ``lpips.LPIPS`` with random weights from ``random_lpips_weights`` (also
used by the test, so both sides share them); the pretrained VGG16 cannot be downloaded here.

Stubs (the original code runs unchanged otherwise): ``requests`` (imported by lpips.py for downloads only);
``torchvision.models.vgg16`` inside lpips.py builds an untrained VGG16 instead of downloading one;
``Tensor.cuda`` is the identity (model.py puts FSQ's zero loss on the GPU); ``torch.cuda.amp.GradScaler`` becomes
``torch.amp.GradScaler("cpu")`` with the same defaults (scale 2^16); a one-process gloo group stands in for the
8-GPU DDP (``quantizers/vq.py``'s all_reduce returns early at world size 1); fp32 autocast is a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

import torch

COMMIT = "3f0178ceb7362afc41ee2c3e8378b128038ddc24"
HERE = Path(__file__).resolve().parent

#: git blob ids at COMMIT of the files this script imports.
BLOBS = {
    "model.py": "91b098b0641c2af9c7e183ac32558e83c45e7df4",
    "quantizers/__init__.py": "f522b489e0e53f502200b2b52cc643c82a4381c2",
    "quantizers/fsq.py": "e3a6df5e6c34d62a12272dce36e7ee37ac6d6493",
    "quantizers/sfsq.py": "e61f5927ceac05133b6c8dd32fd6cb8c1933002e",
    "quantizers/vq.py": "83308c82d172061d1c9089d2ead80d13e84b1ce7",
    "quantizers/lfq.py": "d2408e2854379e1d725e5b3800acacb2d1427b08",
    "lpips.py": "f9a017e4ba361c77e6f3c28ae51dacc31f1890d6",
    "metric.py": "1f94d32ec8e9ba301d01bbba64f1da6886607fa7",
    "scheduler.py": "faf8e8872ea9880e5c4958e7855620e64dd40edc",
    "dataset.py": "0497c2f4c42ae33faba01a15dfcac2e3d54c551b",
}

#: The row types of the tables, narrowed: (quantizer, its arguments in arguments.py's names).
CASES = {
    "fsq_8-6-5": {"quantizer": "fsq", "levels": [8, 6, 5]},
    "fsq_7-5-5-5-5": {"quantizer": "fsq", "levels": [7, 5, 5, 5, 5]},
    "sfsq_8-8-8-5-5-5": {"quantizer": "sfsq", "levels": [8, 8, 8, 5, 5, 5]},
    "ema": {"quantizer": "ema", "n_embed": 16, "embed_dim": 8},
    "lfq": {"quantizer": "lfq", "lfq_dim": 6},
}
#: Narrowing and the schedule shortened so that four steps see lr 0, the warmup and the decay.
TRAINING = {"channel": 8, "img_size": 16, "batch_size": 4, "steps": 4, "lr": 1e-3, "warmup": 0.2, "train_iters": 10}
PERCEPTUAL_SEED = 1234
MODEL_SEED = 0
#: Scale of the encoder's last (1x1) convolution at initialisation, so that the latents span the quantizers' range.
LATENT_SPREAD = 20.0
#: The EMA codebook starts along (noisy) latents, at this fraction of their mean norm: small like the original's
#: U(-1/K, 1/K) codes, which the zero-count EMA update divides by ~0.01 at the first step.
EMA_CODE_SCALE = 0.01
#: scikit-image photographs: 16 for the training batches, 3 (saved as JPEGs) for the preprocessing check.
TRAIN_PHOTOS = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "cell.png",
    "camera.png",
    "coins.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
]
DATA_PHOTOS = ["coffee.png", "chelsea.png", "rocket.jpg"]
DATA_RESOLUTION = 128


def random_lpips_weights(state: dict[str, torch.Tensor], seed: int = PERCEPTUAL_SEED) -> dict[str, torch.Tensor]:
    """Random weights for an LPIPS(VGG16) network, given its state dict (names and shapes): He-normal convolutions,
    small biases, non-negative linear heads. Deterministic in the names, shapes and seed, so the recorder (the
    original's lpips.LPIPS) and the test (the lpips package) build the same network. The scaling layer (constants)
    and the lpips package's ``lins.*`` (aliases of its ``lin0``..``lin4``) are left out."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name in sorted(state):
        shape = state[name].shape
        if name.startswith(("scaling_layer", "lins.")):
            continue
        if name.startswith("lin"):
            weights[name] = torch.rand(shape, generator=generator) * 0.2
        elif name.endswith("bias"):
            weights[name] = torch.randn(shape, generator=generator) * 0.01
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            weights[name] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
    return weights


def photo(name: str):
    """A scikit-image photograph as an RGB PIL image (grayscale ones repeated to 3 channels)."""
    import skimage
    from PIL import Image

    return Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check_checkout(checkout: Path) -> None:
    wrong = [
        name for name, blob in BLOBS.items() if not (checkout / name).is_file() or git_blob_id(checkout / name) != blob
    ]
    if wrong:
        print(
            f"error: {checkout} is not an export of Doraemonzzz/vector-quantize at {COMMIT} "
            f"({', '.join(wrong)} differ); export it with: git -C MIRROR archive {COMMIT} | tar -x -C DIR",
            file=sys.stderr,
        )
        raise SystemExit(2)


def load_original(checkout: Path) -> types.SimpleNamespace:
    """Imports the original modules, with the stubs listed in the module docstring."""
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    sys.path.insert(0, str(checkout))
    import dataset as original_dataset
    import metric as original_metric
    import model as original_model
    import scheduler as original_scheduler

    # lpips.py would shadow the lpips package; load it under its own name.
    spec = importlib.util.spec_from_file_location("vector_quantize_lpips", checkout / "lpips.py")
    original_lpips = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original_lpips)
    import torchvision

    original_lpips.models = types.SimpleNamespace(vgg16=lambda pretrained=True: torchvision.models.vgg16(weights=None))
    return types.SimpleNamespace(
        model=original_model,
        lpips=original_lpips,
        metric=original_metric,
        scheduler=original_scheduler,
        dataset=original_dataset,
        checkout=checkout,
    )


@contextlib.contextmanager
def cpu_only():
    """``Tensor.cuda`` as the identity: model.py moves FSQ's constant zero loss with ``.cuda()``."""
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def original_args(case: dict) -> argparse.Namespace:
    """arguments.py's defaults for the model and training, narrowed, with get_args' embed_dim rule."""
    args = argparse.Namespace(
        in_channel=3,
        channel=TRAINING["channel"],
        quantizer=case["quantizer"],
        levels=case.get("levels", [8, 5, 5, 5]),
        lfq_dim=case.get("lfq_dim", 10),
        entropy_loss_weight=0.0,
        codebook_loss_weight=0.0,
        embed_dim=case.get("embed_dim", 256),
        n_embed=case.get("n_embed", 1024),
        lr=TRAINING["lr"],
        weight_decay=0.0,
        warmup=TRAINING["warmup"],
        train_iters=TRAINING["train_iters"],
        lr_decay_style="linear",
        lr_decay_ratio=0.1,
        img_size=TRAINING["img_size"],
    )
    if args.quantizer == "lfq":
        args.embed_dim = args.lfq_dim
    elif args.quantizer in ("fsq", "sfsq"):
        args.embed_dim = len(args.levels)
    return args


def perceptual_network(original: types.SimpleNamespace):
    """The original's LPIPS (eval mode, frozen, as train.py line 99), with the shared random weights."""
    previous = Path.cwd()
    try:  # LPIPS() reads its linear heads from loss/pretrained/lpips/vgg.pth relative to the working directory
        os.chdir(original.checkout)
        network = original.lpips.LPIPS().eval()
    finally:
        os.chdir(previous)
    missing, unexpected = network.load_state_dict(random_lpips_weights(network.state_dict()), strict=False)
    assert not unexpected and all(name.startswith("scaling_layer") for name in missing)
    return network


def training_batches(original: types.SimpleNamespace) -> list[torch.Tensor]:
    transform = original.dataset.get_transform(argparse.Namespace(img_size=TRAINING["img_size"]))
    images = torch.stack([transform(photo(name)) for name in TRAIN_PHOTOS])
    return list(images.split(TRAINING["batch_size"]))


def record_case(original: types.SimpleNamespace, name: str, case: dict, batches, perceptual) -> dict:
    args = original_args(case)
    torch.manual_seed(MODEL_SEED)
    model = original.model.VQVAE(args)
    with torch.no_grad():
        model.enc.blocks[6].weight.mul_(LATENT_SPREAD)
        if args.quantizer == "ema":  # small codes along the first batch's latents: its tokens spread over them
            latents = model.enc(batches[0]).permute(0, 2, 3, 1).reshape(-1, args.embed_dim)
            codes = latents[torch.randperm(latents.shape[0])[: args.n_embed]]
            codes = codes + 0.1 * codes.std() * torch.randn_like(codes)
            codes = EMA_CODE_SCALE * latents.norm(dim=1).mean() * torch.nn.functional.normalize(codes, dim=1)
            model.quantize_t.embed.weight.copy_(codes)
            model.quantize_t.embed_avg.copy_(codes)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    # train.py lines 82-105
    scaler = torch.amp.GradScaler("cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    lr_scheduler = original.scheduler.AnnealingLR(
        optimizer,
        start_lr=args.lr,
        warmup_iter=args.warmup * args.train_iters,
        num_iters=args.train_iters,
        decay_style=args.lr_decay_style,
        last_iter=-1,
        decay_ratio=args.lr_decay_ratio,
    )
    get_l1loss = torch.nn.L1Loss()
    steps, first_grads, states = [], None, []
    for input_img in batches:  # train.py lines 126-148
        lr = optimizer.param_groups[0]["lr"]
        reconstructions, codebook_loss, ids = model(input_img)
        l1loss = get_l1loss(input_img, reconstructions)
        perceptual_loss = original.metric.get_revd_perceptual(input_img, reconstructions, perceptual)
        loss = codebook_loss + l1loss + perceptual_loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lr_scheduler.step()
        if first_grads is None:  # scaler.step unscaled them in place: what Adam's first step used
            first_grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        steps.append(
            {
                "lr": lr,
                "l1": l1loss.detach().clone(),
                "perceptual": perceptual_loss.detach().clone(),
                "codebook_loss": codebook_loss.detach().reshape(()).clone(),
                "loss": loss.detach().reshape(()).clone(),
                "indices": ids.detach().clone(),
                "quantizer_state": {k: v.clone() for k, v in model.state_dict().items() if k.startswith("quantize_t.")},
            }
        )
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return {
        "commit": COMMIT,
        "case": name,
        "args": vars(args),
        "training": TRAINING,
        "perceptual_seed": PERCEPTUAL_SEED,
        "initial_state": initial,
        "steps": steps,
        "first_grads": first_grads,
        "state_after_first_step": states[0],
        "final_state": states[-1],
        "eval": evaluate(original, model, args, batches[0], perceptual),
    }


@torch.no_grad()
def evaluate(original, model, args, input_img: torch.Tensor, perceptual) -> dict:
    """eval_ddp.py lines 76-101 on one batch: model.eval(), the ids it counts, L1 and the perceptual value."""
    model.eval()
    reconstructions, _, ids = model(input_img, return_id=True)
    usage = {int(i) for i in torch.flatten(ids)}
    denominator = 1
    for level in args.levels:  # utils.multiplyList(args.levels), for every quantizer
        denominator *= level
    return {
        "reconstructions": reconstructions,
        "indices": ids,
        "l1": torch.nn.L1Loss()(input_img, reconstructions),
        "perceptual": original.metric.get_revd_perceptual(input_img, reconstructions, perceptual),
        "used_codes": len(usage),
        "usage_denominator": denominator,
        "codebook_usage": len(usage) / denominator,
    }


def record_data(original: types.SimpleNamespace, out: Path) -> dict:
    """JPEGs of three photographs and the original's evaluation/training preprocessing of them at 128 pixels."""
    from torchvision import datasets

    folder = out / "photos" / "val"  # an ImageNet-style root (photos/) whose val/ split has one class folder
    (folder / "skimage").mkdir(parents=True, exist_ok=True)
    for name in DATA_PHOTOS:
        photo(name).save(folder / "skimage" / f"{Path(name).stem}.jpg", quality=90)
    transform = original.dataset.get_transform(argparse.Namespace(img_size=DATA_RESOLUTION))
    dataset = datasets.ImageFolder(folder, transform=transform)  # dataset.py: ImageFolder + get_transform
    return {
        "commit": COMMIT,
        "resolution": DATA_RESOLUTION,
        "files": [Path(path).relative_to(out).as_posix() for path, _ in dataset.samples],
        "images": torch.stack([dataset[i][0] for i in range(len(dataset))]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help=f"an export of Doraemonzzz/vector-quantize at {COMMIT}")
    parser.add_argument("--out", type=Path, default=HERE, help="where the fixtures go (default: next to this file)")
    options = parser.parse_args()
    checkout = options.checkout.resolve()
    check_checkout(checkout)
    original = load_original(checkout)
    options.out.mkdir(parents=True, exist_ok=True)
    torch.save(record_data(original, options.out), options.out / "data.pt")
    perceptual = perceptual_network(original)
    batches = training_batches(original)
    torch.save(
        {"commit": COMMIT, "photos": TRAIN_PHOTOS, "batches": batches, "perceptual_seed": PERCEPTUAL_SEED},
        options.out / "batches.pt",
    )
    with tempfile.TemporaryDirectory() as store, cpu_only():
        torch.distributed.init_process_group("gloo", init_method=f"file://{store}/store", rank=0, world_size=1)
        for name, case in CASES.items():
            torch.save(record_case(original, name, case, batches, perceptual), options.out / f"{name}.pt")
            print(f"recorded {name}")
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
