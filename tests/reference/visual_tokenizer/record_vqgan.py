"""Records what xyfJASON/visual-tokenizer-pytorch computes for its ImageNet-256 VQGAN table, on narrow networks.

Recorded from commit 351d29ddf8f41d8ac41224025023668ed4ad0de0 of https://github.com/xyfJASON/visual-tokenizer-pytorch
(``train_vqgan.py``, ``evaluate.py``, ``configs/imagenet256/vqgan-{taming,llamagen}.yaml``, ``utils/data.py``, and
the models and losses they load). The fixtures it writes carry the commit in their names and in a ``commit`` entry:

    mkdir -p /tmp/vt && git -C CLONE archive 351d29ddf8f41d8ac41224025023668ed4ad0de0 | tar -x -C /tmp/vt
    python tests/reference/visual_tokenizer/record_vqgan.py /tmp/vt

(CLONE: a clone of the repository; the environment needs its requirements: omegaconf, lpips, scikit-image,
torch-fidelity, tensorboard, tqdm.)

The original code runs unmodified: ``train_vqgan.main()`` and ``evaluate.main()`` themselves, on the CPU, on a small
ImageNet-layout folder of real photographs (scikit-image's, saved as JPEGs). What differs from a real run:

- the published configs are narrowed (``NARROWING``: widths, codebook, 32-pixel crops, batch 2, 4 steps, the
  adversarial start step at 2, a loader without worker processes, no sampling or intermediate checkpoints);
- ``GroupNorm(32, C)`` is built as ``GroupNorm(4, C)``: the narrow networks have fewer than 32 channels;
- the LPIPS trunks (VGG16 for the loss, AlexNet for the metric) get seeded random weights (``vqgan_common``), since
  the ImageNet weights cannot be downloaded here; the LPIPS heads are the real ones;
- rFID is not computed (no Inception weights offline): the PNG pairs ``evaluate.py`` writes for it are recorded;
- CUDA is reported unavailable, so that the recording is the CPU's wherever it runs; ``requests``, which
  ``losses/lpips.py`` imports only to download the ``vgg.pth`` the checkout already holds, is stubbed if missing.

Everything else is recorded by observers: patched methods that call the original one and keep copies of what passes
through (inputs, each loss term, the discriminator's logits call by call, gradients and weights at each optimizer
step, the order of the operations).

Writes ``vqgan_taming_351d29d.pt``, ``vqgan_llamagen_351d29d.pt`` (training steps and evaluation) and
``vqgan_data_351d29d.pt`` (crops of the photographs, initialisation, LPIPS, PSNR/SSIM) beside this file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import random
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.reference.visual_tokenizer.vqgan_common import (  # noqa: E402
    COMMIT,
    alexnet_trunk,
    fixture_path,
    load_trunk,
    vgg16_trunk,
)

#: How the published configs are narrowed, per recipe. The test builds vqbench from the same numbers.
NARROWING = {
    "common": {
        "dim": 8,
        "dim_mults": [1, 2],
        "num_res_blocks": 1,
        "z_channels": 16,
        "norm_groups": 4,
        "disc_dim": 4,
        "disc_layers": 3,
        "img_size": 32,
        "batch_size": 2,
        "n_steps": 4,
        "start_adv": 2,
    },
    "taming": {"config": "configs/imagenet256/vqgan-taming.yaml", "codebook_num": 32, "codebook_dim": 16},
    "llamagen": {"config": "configs/imagenet256/vqgan-llamagen.yaml", "codebook_num": 64, "codebook_dim": 4},
}
#: Steps whose gradients are recorded, as the optimizers receive them (after clipping): the first step (discriminator
#: trained, no adversarial generator term) and the first adversarial step. The discriminator's weights are recorded
#: after every step, the tokenizer's after the first and the last.
GRADIENT_STEPS = (0, 2)
#: Random crops, and centre crops of this size, are stored as SHA-256 digests of their pixels (the fixture stays
#: small); the small centre crops in full.
DIGEST_SIZE = 256

#: (name in the fixture, scikit-image photograph, how it is reshaped): several sizes and aspect ratios.
PHOTOS = [
    ("astronaut_512x512", "astronaut.png", None),
    ("coffee_400x600", "coffee.png", None),
    ("chelsea_300x451", "chelsea.png", None),
    ("rocket_640x427_portrait", "rocket.jpg", "transpose"),
    ("coffee_45x68", "coffee.png", (68, 45)),
    ("chelsea_37x56", "chelsea.png", (56, 37)),
]
CROP_SIZES = (256, 32)
#: Python seeds of the random train crops: enough draws that another short-side range or crop offset shows up
CROP_SEEDS = tuple(range(32))
JPEG_QUALITY = 90


def photo_jpegs() -> dict[str, bytes]:
    """The photographs as JPEG files (bytes), as ImageNet stores its images."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    jpegs = {}
    for name, source, reshape in PHOTOS:
        image = Image.open(folder / source).convert("RGB")
        if reshape == "transpose":
            image = image.transpose(Image.Transpose.TRANSPOSE)
        elif reshape is not None:
            image = image.resize(reshape, Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        jpegs[name] = buffer.getvalue()
    return jpegs


def decode(jpeg: bytes) -> Image.Image:
    """As the original's ``datasets/imagenet.py`` opens an image."""
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def write_imagenet_tree(root: Path, jpegs: dict[str, bytes]) -> None:
    """train/ (the four large photographs in two class folders) and val/ (all six, one class folder)."""
    names = list(jpegs)
    for i, name in enumerate(names[:4]):
        folder = root / "train" / f"n0000000{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.JPEG").write_bytes(jpegs[name])
    for name in names:
        folder = root / "val" / "n00000000"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.JPEG").write_bytes(jpegs[name])


def seeded_vgg16(trunk: dict[str, torch.Tensor]) -> torch.nn.Module:
    """torchvision's VGG16 with the seeded trunk: what the original's ``losses/lpips.py`` slices for LPIPS."""
    from torchvision.models.vgg import vgg16  # not torchvision.models.vgg16, which the recorder replaces by this

    network = vgg16()
    network.features.load_state_dict(trunk)
    return network


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an H x W x 3 uint8 array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def stored(image: Image.Image) -> torch.Tensor | str:
    """A crop as the fixture keeps it: the H x W x 3 uint8 pixels, or their digest from DIGEST_SIZE pixels on."""
    pixels = np.asarray(image)
    return pixel_digest(pixels) if min(pixels.shape[:2]) >= DIGEST_SIZE else torch.from_numpy(pixels.copy())


def seeded_lpips_alex(lpips_class):
    """A stand-in for ``lpips.LPIPS`` that builds the package's AlexNet LPIPS with the seeded trunk."""
    alexnet = alexnet_trunk()

    def build(net="alex", **kwargs):
        metric = lpips_class(net=net, pnet_rand=True, verbose=False)
        load_trunk(metric.net, alexnet)
        return metric

    return build


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class NarrowGroupNorm(torch.nn.GroupNorm):
    """GroupNorm(32, C) built with ``norm_groups`` groups instead (narrow networks have fewer than 32 channels)."""

    groups = 4

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, **kwargs):
        num_groups = self.groups if num_groups == 32 else num_groups
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, **kwargs)


def narrowed_config(checkout: Path, recipe: str, root: Path, out: Path) -> Path:
    """The published config with ``NARROWING`` applied, written to ``out``."""
    from omegaconf import OmegaConf

    common, own = NARROWING["common"], NARROWING[recipe]
    conf = OmegaConf.load(checkout / own["config"])
    for side in ("encoder", "decoder"):
        conf[side].params.update(
            dim=common["dim"],
            dim_mults=common["dim_mults"],
            num_res_blocks=common["num_res_blocks"],
            z_channels=common["z_channels"],
        )
    conf.quantizer.params.update(codebook_num=own["codebook_num"], codebook_dim=own["codebook_dim"])
    conf.disc.params = {"dim": common["disc_dim"], "n_layers": common["disc_layers"]}
    conf.data.update(root=str(root), img_size=common["img_size"])
    conf.dataloader = {"num_workers": 0, "pin_memory": False}
    conf.train.update(
        n_steps=common["n_steps"],
        batch_size=common["batch_size"],
        start_adv=common["start_adv"],
        print_freq=0,
        sample_freq=0,
        save_freq=1000,
    )
    OmegaConf.save(conf, out)
    return out


class Recording:
    """What one training (and its evaluation) passed through."""

    def __init__(self):
        self.model = None
        self.disc = None
        self.step = 0
        self.events: list[tuple[int, str]] = []
        self.inputs: list[torch.Tensor] = []
        self.status: list[dict[str, float]] = []
        self.generator_adversarial: dict[int, float] = {}
        self.last_layer_gradients: dict[int, list[torch.Tensor]] = {}
        self.disc_logits: list[tuple[int, str, torch.Tensor]] = []
        self.gradients: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        self.clip_norms: dict[int, dict[str, float]] = {}
        self.model_after: dict[int, dict[str, torch.Tensor]] = {}
        self.disc_after: dict[int, dict[str, torch.Tensor]] = {}
        self.model_init = None
        self.disc_init = None
        self.evaluation = {"indices": [], "psnr": [], "ssim": [], "lpips": [], "log": []}

    def event(self, what: str) -> None:
        self.events.append((self.step, what))

    def owner(self, parameters) -> str:
        first = parameters[0]
        if any(first is p for p in self.model.parameters()):
            return "model"
        if any(first is p for p in self.disc.parameters()):
            return "disc"
        raise RuntimeError("an optimizer over unknown parameters")


def observed_classes(rec: Recording):
    """Recording subclasses of the original VQModel and PatchGANDiscriminator, and the observers of the methods."""
    from losses.adversarial import AdversarialLoss
    from models.discriminator.patchgan import PatchGANDiscriminator
    from models.vqmodel import VQModel

    class ObservedVQModel(VQModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.model = self
            rec.model_init = clone_state(self)

        def forward(self, x):
            rec.event("model forward")
            rec.inputs.append(x.detach().clone())
            return super().forward(x)

    class ObservedDiscriminator(PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.disc = self
            rec.disc_init = clone_state(self)

        def forward(self, x):
            logits = super().forward(x)
            # train_vqgan.py turns the discriminator's gradients off for the generator step and on for its own
            kind = "discriminator" if self.seq[0].weight.requires_grad else "generator"
            rec.event(f"disc forward ({kind})")
            rec.disc_logits.append((rec.step, kind, logits.detach().clone()))
            return logits

    original_forward_g = AdversarialLoss.forward_G

    def forward_g(self, fake_data, *args, **kwargs):
        loss = original_forward_g(self, fake_data, *args, **kwargs)
        rec.generator_adversarial[rec.step] = loss.item()
        return loss

    original_adam_step = torch.optim.Adam.step

    def adam_step(self, *args, **kwargs):
        owner = rec.owner(self.param_groups[0]["params"])
        rec.event(f"optimizer step ({owner})")
        module = rec.model if owner == "model" else rec.disc
        if rec.step in GRADIENT_STEPS:
            rec.gradients.setdefault(rec.step, {})[owner] = {
                name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None
            }
        result = original_adam_step(self, *args, **kwargs)
        if owner == "model" and rec.step in (0, NARROWING["common"]["n_steps"] - 1):
            rec.model_after[rec.step] = clone_state(module)
        if owner == "disc":
            rec.disc_after[rec.step] = clone_state(module)
        return result

    original_clip = torch.nn.utils.clip_grad_norm_

    def clip_grad_norm(parameters, *args, **kwargs):
        parameters = list(parameters)
        owner = rec.owner(parameters)
        rec.event(f"clip ({owner})")
        norm = original_clip(parameters, *args, **kwargs)
        rec.clip_norms.setdefault(rec.step, {})[owner] = float(norm)
        return norm

    original_grad = torch.autograd.grad

    def autograd_grad(outputs, inputs, *args, **kwargs):
        grads = original_grad(outputs, inputs, *args, **kwargs)
        if inputs is rec.model.last_layer:  # calc_adaptive_weight: the reconstruction's, then the adversarial's
            rec.last_layer_gradients.setdefault(rec.step, []).append(grads[0].detach().clone())
        return grads

    def track_status(self, name, status, step):
        rec.status.append(dict(status))
        rec.step = step + 1

    return ObservedVQModel, ObservedDiscriminator, forward_g, adam_step, clip_grad_norm, autograd_grad, track_status


def run_training(checkout: Path, recipe: str, root: Path, work: Path, vgg: dict) -> tuple[Recording, Path]:
    import losses.lpips
    import models.discriminator
    import train_vqgan
    from losses.adversarial import AdversarialLoss
    from utils.tracker import StatusTracker

    rec = Recording()
    model_cls, disc_cls, forward_g, adam_step, clip, autograd_grad, track = observed_classes(rec)
    config = narrowed_config(checkout, recipe, root, work / f"{recipe}.yaml")
    exp_dir = work / f"exp-{recipe}"
    NarrowGroupNorm.groups = NARROWING["common"]["norm_groups"]
    with (
        mock.patch.object(sys, "argv", ["train_vqgan.py", "-c", str(config), "-e", str(exp_dir)]),
        mock.patch("torch.cuda.is_available", return_value=False),  # the CPU, also where a GPU is present
        mock.patch("torch.nn.GroupNorm", NarrowGroupNorm),
        mock.patch.object(losses.lpips.models, "vgg16", lambda pretrained=True, **kwargs: seeded_vgg16(vgg)),
        mock.patch.object(train_vqgan, "VQModel", model_cls),
        mock.patch.object(models.discriminator, "PatchGANDiscriminator", disc_cls),
        mock.patch.object(AdversarialLoss, "forward_G", forward_g),
        mock.patch.object(torch.optim.Adam, "step", adam_step),
        mock.patch("torch.nn.utils.clip_grad_norm_", clip),
        mock.patch("torch.autograd.grad", autograd_grad),
        mock.patch.object(StatusTracker, "track_status", track),
    ):
        train_vqgan.main()
    checkpoints = sorted((exp_dir / "ckpt").iterdir())
    return rec, checkpoints[-1] / "model.pt"


def run_evaluation(checkout: Path, recipe: str, root: Path, work: Path, weights: Path, rec: Recording) -> None:
    import evaluate
    import lpips
    import torch_fidelity
    from metrics.lpips import LPIPS as LPIPSMetric
    from metrics.psnr import PSNR
    from metrics.ssim import SSIM

    def observe(cls, key):
        original = cls.__call__

        def call(self, img1, img2):
            values = original(self, img1, img2)
            rec.evaluation[key].append(values.detach().clone())
            return values

        return call

    def fidelity(input1, input2, **kwargs):
        def read(folder):
            files = sorted(Path(folder).glob("*.png"), key=lambda p: int(p.stem))
            return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()) for f in files])

        rec.evaluation["png_original"] = read(input1)
        rec.evaluation["png_reconstructed"] = read(input2)
        return {"frechet_inception_distance": float("nan")}

    class Lines(logging.Handler):
        """The metric lines evaluate.py logs (usage and perplexity are printed, not returned)."""

        def emit(self, record):
            if record.getMessage().startswith(("PSNR", "SSIM", "LPIPS", "Codebook usage", "Perplexity")):
                rec.evaluation["log"].append(record.getMessage())

    handler = Lines()
    logging.getLogger("exp").addHandler(handler)
    config = narrowed_config(checkout, recipe, root, work / f"{recipe}-eval.yaml")
    save_dir = work / f"eval-{recipe}"
    argv = ["evaluate.py", "-c", str(config), "--weights", str(weights), "--bspp", "2", "--save_dir", str(save_dir)]
    from models.vqmodel import VQModel

    class ObservedVQModel(VQModel):
        def forward(self, x):
            out = super().forward(x)
            rec.evaluation["indices"].append(out["indices"].detach().clone())
            return out

    NarrowGroupNorm.groups = NARROWING["common"]["norm_groups"]
    try:
        with (
            mock.patch.object(sys, "argv", argv),
            mock.patch("torch.cuda.is_available", return_value=False),
            mock.patch("torch.nn.GroupNorm", NarrowGroupNorm),
            mock.patch.object(lpips, "LPIPS", seeded_lpips_alex(lpips.LPIPS)),
            mock.patch.object(evaluate, "VQModel", ObservedVQModel),
            mock.patch.object(PSNR, "__call__", observe(PSNR, "psnr")),
            mock.patch.object(SSIM, "__call__", observe(SSIM, "ssim")),
            mock.patch.object(LPIPSMetric, "__call__", observe(LPIPSMetric, "lpips")),
            mock.patch.object(torch_fidelity, "calculate_metrics", fidelity),
        ):
            evaluate.main()
    finally:
        logging.getLogger("exp").removeHandler(handler)


def training_fixture(recipe: str, rec: Recording) -> dict:
    steps = NARROWING["common"]["n_steps"]
    evaluation = rec.evaluation
    return {
        "commit": COMMIT,
        "recipe": recipe,
        "narrowing": {**NARROWING["common"], **NARROWING[recipe]},
        "model_init": rec.model_init,
        "disc_init": rec.disc_init,
        "inputs": torch.stack(rec.inputs),
        "status": rec.status,
        "generator_adversarial": rec.generator_adversarial,
        "last_layer_gradients": rec.last_layer_gradients,
        "disc_logits": rec.disc_logits,
        "events": rec.events,
        "gradients": rec.gradients,
        "clip_norms": rec.clip_norms,
        "model_after": rec.model_after,
        "disc_after": rec.disc_after,
        "steps": steps,
        "evaluation": {
            "indices": torch.cat(evaluation["indices"]),
            "psnr": torch.cat(evaluation["psnr"]),
            "ssim": torch.cat(evaluation["ssim"]),
            "lpips": torch.cat(evaluation["lpips"]),
            "png_original": evaluation["png_original"],
            "png_reconstructed": evaluation["png_reconstructed"],
            "log": evaluation["log"],
        },
    }


def photo_crops(jpegs: dict[str, bytes]) -> dict:
    """Each photo's eval crop (``utils/data.py`` ``center_crop_arr``) and seeded train crops (``random_crop_arr``)."""
    from utils.data import center_crop_arr, random_crop_arr

    photos = {}
    for name, jpeg in jpegs.items():
        image = decode(jpeg)
        entry = {"jpeg": jpeg, "decoded_sha256": pixel_digest(np.asarray(image)), "center": {}, "random": {}}
        for size in CROP_SIZES:
            if min(image.size) < size:
                continue
            entry["center"][size] = stored(center_crop_arr(image, size))
            for seed in CROP_SEEDS:
                random.seed(seed)
                entry["random"][(size, seed)] = pixel_digest(np.asarray(random_crop_arr(image, size)))
        photos[name] = entry
    return photos


def pipeline_items(root: Path) -> dict:
    """Every item of ``load_data``'s ImageNet train and valid datasets (crop, flip, ToTensor, Normalize), with
    Python's and torch's generators seeded per item, and the crop alone under the same Python seed."""
    from omegaconf import OmegaConf
    from utils.data import center_crop_arr, load_data, random_crop_arr

    size = NARROWING["common"]["img_size"]
    pipeline = {"train": [], "valid": []}
    for split, crop_fn in (("train", random_crop_arr), ("valid", center_crop_arr)):
        conf = OmegaConf.create({"name": "imagenet", "root": str(root), "img_size": size, "crop": "random"})
        dataset = load_data(conf, split=split)
        for index, path in enumerate(dataset.img_paths):
            random.seed(100 + index)
            torch.manual_seed(100 + index)
            x, _ = dataset[index]
            random.seed(100 + index)
            crop = torch.from_numpy(np.asarray(crop_fn(decode(Path(path).read_bytes()), size)).copy())
            pipeline[split].append({"file": Path(path).name, "seed": 100 + index, "x": x, "crop": crop})
    return pipeline


def initialisations() -> dict:
    """The narrow encoder, decoder and discriminator, each built right after ``torch.manual_seed(0 | 1 | 2)``, and
    the encoder's and decoder's GroupNorm epsilons."""
    from models.autoencoder.vqgan_net import Decoder, Encoder
    from models.discriminator.patchgan import PatchGANDiscriminator

    common = NARROWING["common"]
    NarrowGroupNorm.groups = common["norm_groups"]
    arch = {"dim": common["dim"], "dim_mults": common["dim_mults"], "num_res_blocks": common["num_res_blocks"]}
    with mock.patch("torch.nn.GroupNorm", NarrowGroupNorm):
        torch.manual_seed(0)
        encoder = Encoder(in_channels=3, z_channels=common["z_channels"], **arch)
        torch.manual_seed(1)
        decoder = Decoder(out_channels=3, z_channels=common["z_channels"], **arch)
    torch.manual_seed(2)
    disc = PatchGANDiscriminator(in_channels=3, dim=common["disc_dim"], n_layers=common["disc_layers"])
    return {
        "encoder_seed0": clone_state(encoder),
        "decoder_seed1": clone_state(decoder),
        "disc_seed2": clone_state(disc),
        # the epsilon of every GroupNorm in module order (not part of the weights)
        "norm_eps": {
            part: [m.eps for m in network.modules() if isinstance(m, torch.nn.GroupNorm)]
            for part, network in (("encoder", encoder), ("decoder", decoder))
        },
    }


def metric_pairs(photos: dict, vgg: dict) -> dict:
    """The LPIPS loss (``losses/lpips.py``, VGG16), the evaluation's LPIPS (``metrics/lpips.py``, AlexNet), PSNR and
    SSIM (``metrics/``) of real 32-pixel crops against noisy copies; and the LPIPS heads the loss loaded."""
    import losses.lpips
    import lpips
    from metrics.lpips import LPIPS as LPIPSMetric
    from metrics.psnr import PSNR
    from metrics.ssim import SSIM

    size = NARROWING["common"]["img_size"]
    originals = torch.stack([photos[n]["center"][size].permute(2, 0, 1).float() / 255 for n in list(photos)[:3]])
    noise = torch.randn(originals.shape, generator=torch.Generator().manual_seed(0))
    distorted = (originals + 0.1 * noise).clamp(0, 1)
    with mock.patch.object(losses.lpips.models, "vgg16", lambda pretrained=True, **kwargs: seeded_vgg16(vgg)):
        lpips_loss = losses.lpips.LPIPS().eval()
    with mock.patch.object(lpips, "LPIPS", seeded_lpips_alex(lpips.LPIPS)):
        lpips_metric = LPIPSMetric(reduction="none")
    with torch.no_grad():
        return {
            "originals": originals,
            "distorted": distorted,
            "lpips_vgg_loss": lpips_loss(distorted * 2 - 1, originals * 2 - 1).flatten(),
            "lpips_alex_metric": lpips_metric(distorted, originals),
            "psnr": PSNR(reduction="none")(distorted, originals),
            "ssim": SSIM(reduction="none")(distorted, originals),
            "lpips_heads": {k: v.clone() for k, v in lpips_loss.state_dict().items() if k.startswith("lin")},
        }


def data_fixture(jpegs: dict[str, bytes], root: Path, vgg: dict) -> dict:
    photos = photo_crops(jpegs)
    return {
        "commit": COMMIT,
        "photos": photos,
        "pipeline": pipeline_items(root),
        "init": initialisations(),
        "metrics": metric_pairs(photos, vgg),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="an export of xyfJASON/visual-tokenizer-pytorch at COMMIT")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write the fixtures (default: beside me)")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    if not (checkout / "train_vqgan.py").is_file():
        parser.error(f"{checkout} has no train_vqgan.py; export visual-tokenizer-pytorch at {COMMIT} there")
    git = checkout / ".git"
    if git.exists():
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.stdout.strip() != COMMIT:
            parser.error(f"{checkout} is at {head.stdout.strip()}, the fixtures name {COMMIT}")
    sys.path.insert(0, str(checkout))
    try:
        import requests  # noqa: F401
    except ImportError:  # losses/lpips.py imports it only to download vgg.pth, which the checkout already holds
        sys.modules["requests"] = types.ModuleType("requests")

    jpegs = photo_jpegs()
    vgg = vgg16_trunk()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "imagenet"
        write_imagenet_tree(root, jpegs)
        fixtures = {}
        for recipe in ("taming", "llamagen"):
            rec, weights = run_training(checkout, recipe, root, work, vgg)
            run_evaluation(checkout, recipe, root, work, weights, rec)
            fixtures[recipe] = training_fixture(recipe, rec)
        fixtures["data"] = data_fixture(jpegs, root, vgg)
    for name, fixture in fixtures.items():
        path = fixture_path(name) if args.out_dir is None else args.out_dir / fixture_path(name).name
        torch.save(fixture, path)
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
