"""Records what xyfJASON/visual-tokenizer-pytorch computed for its older ImageNet-256 VQGAN table, on narrow networks.

Recorded from commit 07352b46e9ecbf1efcf43bdf474db5a05630f17c of https://github.com/xyfJASON/visual-tokenizer-pytorch
(``train_vqgan.py``, unchanged from eba0294, with ``configs/vqgan-imagenet.yaml`` and
``configs/vqgan-imagenet-llamagen.yaml``; ``evaluate.py`` with piqa's metrics; the models and losses they load): the
code behind ``docs/benchmark-imagenet256.md`` as it stood from 6fb0cc9 to 07352b4. The fixtures carry the commit in
their names and in a ``commit`` entry:

    mkdir -p /tmp/vt07 && git -C CLONE archive 07352b46e9ecbf1efcf43bdf474db5a05630f17c | tar -x -C /tmp/vt07
    python tests/reference/visual_tokenizer/record_vqgan_07352b4.py /tmp/vt07

(CLONE: a clone of the repository; the environment needs its requirements: accelerate, omegaconf, lpips, piqa, tqdm,
scikit-image for the photographs.)

The original code runs unmodified, ``train_vqgan.main()`` and ``evaluate.main()`` themselves, on the CPU, with the
narrowing, photographs and observers of ``record_vqgan.py`` (the recorder of 351d29d; see there). What differs here:

- the LPIPS loss of 07352b4 is the ``lpips`` package's ``LPIPS(net='vgg')``: its VGG16 trunk gets the seeded random
  weights (``vqgan_common``), its heads are the package's own;
- ``evaluate.py`` scores with piqa 1.3.2 (PSNR, SSIM with the Gaussian window, LPIPS): piqa's AlexNet trunk gets the
  seeded AlexNet weights and its heads are the ``lpips`` package's v0.1 AlexNet heads (piqa downloads the same file);
- 07352b4's ``evaluate.py`` computes no rFID; the PNGs it writes for it are recorded;
- ``train_vqgan.py`` logs two status dicts per step (generator, then discriminator); they are merged into one per
  step, with the generator's ``loss_adv_g`` (the adaptive weight times L_G) stored as ``loss_adv``;
- the discriminator's calls are labelled by the loss that makes them (``HingeLoss.forward_G`` / ``forward_D``): at this
  commit the generator step does not switch the discriminator's gradients off.

Writes ``vqgan_taming_07352b4.pt`` and ``vqgan_llamagen_07352b4.pt`` beside this file.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.reference.visual_tokenizer import record_vqgan  # noqa: E402
from tests.reference.visual_tokenizer.record_vqgan import (  # noqa: E402
    NarrowGroupNorm,
    Recording,
    clone_state,
    photo_jpegs,
    write_imagenet_tree,
)
from tests.reference.visual_tokenizer.vqgan_common import (  # noqa: E402
    COMMIT_07352B4,
    alexnet_trunk,
    fixture_path,
    load_trunk,
    vgg16_trunk,
)

#: The narrowing of ``record_vqgan.py`` (the same networks, batch, steps and start step), applied to this commit's
#: configs.
NARROWING = {
    "common": record_vqgan.NARROWING["common"],
    "taming": {**record_vqgan.NARROWING["taming"], "config": "configs/vqgan-imagenet.yaml"},
    "llamagen": {**record_vqgan.NARROWING["llamagen"], "config": "configs/vqgan-imagenet-llamagen.yaml"},
}
GRADIENT_STEPS = record_vqgan.GRADIENT_STEPS


def seeded_lpips_vgg(lpips_class, vgg: dict):
    """A stand-in for ``lpips.LPIPS`` that builds the package's VGG LPIPS (its own heads) with the seeded trunk."""

    def build(net="vgg", **kwargs):
        metric = lpips_class(net=net, pnet_rand=True, verbose=False, **kwargs)
        load_trunk(metric.net, vgg)
        return metric

    return build


def lpips_alex_heads() -> list[torch.Tensor]:
    """The ``lpips`` package's v0.1 AlexNet heads, flattened as piqa's ``get_weights`` returns them."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    return [w.flatten() for w in torch.load(path, map_location="cpu", weights_only=True).values()]


def seeded_alexnet(weights=None, **kwargs):
    """torchvision's AlexNet with the seeded trunk (what piqa's LPIPS slices)."""
    from torchvision.models.alexnet import alexnet

    network = alexnet()
    network.features.load_state_dict(alexnet_trunk())
    return network


def observed_classes(rec: Recording):
    from losses.adversarial import HingeLoss
    from models.discriminator.patchgan import PatchGANDiscriminator
    from models.vqmodel import VQModel

    class ObservedVQModel(VQModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.model = self
            rec.model_init = clone_state(self)

        def forward(self, x):
            rec.event("model forward")
            if len(rec.inputs) == rec.step:  # the batch once per step (the D step runs the model on it again)
                rec.inputs.append(x.detach().clone())
            return super().forward(x)

    class ObservedDiscriminator(PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rec.disc = self
            rec.disc_init = clone_state(self)

        def forward(self, x):
            logits = super().forward(x)
            rec.event(f"disc forward ({rec.phase})")
            rec.disc_logits.append((rec.step, rec.phase, logits.detach().clone()))
            return logits

    original_forward_g, original_forward_d = HingeLoss.forward_G, HingeLoss.forward_D

    def forward_g(self, fake_data):
        rec.phase = "generator"
        loss = original_forward_g(self, fake_data)
        rec.generator_adversarial[rec.step] = loss.item()
        return loss

    def forward_d(self, fake_data, real_data):
        rec.phase = "discriminator"
        rec.disc_fake_inputs[rec.step] = fake_data.detach().clone()
        return original_forward_d(self, fake_data, real_data)

    original_adam_step = torch.optim.Adam.step  # AdamW inherits it

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

    original_grad = torch.autograd.grad

    def autograd_grad(outputs, inputs, *args, **kwargs):
        grads = original_grad(outputs, inputs, *args, **kwargs)
        if inputs is rec.model.last_layer:  # calc_adaptive_weight: the reconstruction's, then the adversarial's
            rec.last_layer_gradients.setdefault(rec.step, []).append(grads[0].detach().clone())
        return grads

    def track_status(self, name, status, step):
        status = dict(status)
        if "loss_rec" in status:  # run_step (the generator)
            status["loss_adv"] = status.pop("loss_adv_g")
            rec.status.append(status)
        else:  # run_step_d (the discriminator), the step's last call
            rec.status[-1].update(status)
            rec.step = step + 1

    patches = (ObservedVQModel, ObservedDiscriminator, forward_g, forward_d, adam_step, autograd_grad, track_status)
    return patches


def run_training(checkout: Path, recipe: str, root: Path, work: Path, vgg: dict) -> tuple[Recording, Path]:
    import losses.lpips
    import lpips
    import train_vqgan
    from losses.adversarial import HingeLoss
    from utils.tracker import StatusTracker

    rec = Recording()
    rec.phase = "generator"
    rec.disc_fake_inputs = {}
    model_cls, disc_cls, forward_g, forward_d, adam_step, autograd_grad, track = observed_classes(rec)
    record_vqgan.NARROWING = NARROWING  # narrowed_config reads the config path and sizes from it
    config = record_vqgan.narrowed_config(checkout, recipe, root, work / f"{recipe}.yaml")
    exp_dir = work / f"exp-{recipe}"
    NarrowGroupNorm.groups = NARROWING["common"]["norm_groups"]
    with (
        mock.patch.object(sys, "argv", ["train_vqgan.py", "-c", str(config), "-e", str(exp_dir), "-ni"]),
        mock.patch("torch.cuda.is_available", return_value=False),  # the CPU, also where a GPU is present
        mock.patch("torch.nn.GroupNorm", NarrowGroupNorm),
        mock.patch.object(losses.lpips.lpips, "LPIPS", seeded_lpips_vgg(lpips.LPIPS, vgg)),
        mock.patch.object(train_vqgan, "VQModel", model_cls),
        mock.patch("models.discriminator.patchgan.PatchGANDiscriminator", disc_cls),
        mock.patch.object(HingeLoss, "forward_G", forward_g),
        mock.patch.object(HingeLoss, "forward_D", forward_d),
        mock.patch.object(torch.optim.Adam, "step", adam_step),
        mock.patch("torch.autograd.grad", autograd_grad),
        mock.patch.object(StatusTracker, "track_status", track),
    ):
        train_vqgan.main()
    checkpoints = sorted((exp_dir / "ckpt").iterdir())
    return rec, checkpoints[-1] / "model.pt"


def run_evaluation(checkout: Path, recipe: str, root: Path, work: Path, weights: Path, rec: Recording) -> None:
    import evaluate
    import piqa
    import piqa.lpips

    rec.evaluation = {"indices": [], "psnr": [], "ssim": [], "lpips": [], "log": []}

    def observe(cls, key):
        original = cls.forward

        def forward(self, x, y):
            values = original(self, x, y)
            rec.evaluation[key].append(values.detach().clone())
            return values

        return forward

    class Lines(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith(("PSNR", "SSIM", "LPIPS", "Codebook usage", "Perplexity")):
                rec.evaluation["log"].append(record.getMessage())

    handler = Lines()
    logging.getLogger("exp").addHandler(handler)
    config = record_vqgan.narrowed_config(checkout, recipe, root, work / f"{recipe}-eval.yaml")
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
            mock.patch.object(piqa.lpips.torchvision.models, "alexnet", seeded_alexnet),
            mock.patch.object(piqa.lpips, "get_weights", lambda network="alex", version="v0.1": lpips_alex_heads()),
            mock.patch.object(evaluate, "VQModel", ObservedVQModel),
            mock.patch.object(piqa.PSNR, "forward", observe(piqa.PSNR, "psnr")),
            mock.patch.object(piqa.SSIM, "forward", observe(piqa.SSIM, "ssim")),
            mock.patch.object(piqa.LPIPS, "forward", observe(piqa.LPIPS, "lpips")),
        ):
            evaluate.main()
    finally:
        logging.getLogger("exp").removeHandler(handler)

    def read(folder):
        files = sorted(Path(folder).glob("*.png"), key=lambda p: int(p.stem))
        return torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()) for f in files])

    rec.evaluation["png_original"] = read(save_dir / "original")
    rec.evaluation["png_reconstructed"] = read(save_dir / "reconstructed")


def training_fixture(recipe: str, rec: Recording) -> dict:
    fixture = record_vqgan.training_fixture(recipe, rec)
    fixture.update(
        commit=COMMIT_07352B4,
        narrowing={**NARROWING["common"], **{k: v for k, v in NARROWING[recipe].items() if k != "config"}},
        disc_fake_inputs=rec.disc_fake_inputs,
    )
    return fixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="an export of xyfJASON/visual-tokenizer-pytorch at COMMIT")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write the fixtures (default: beside me)")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    if not (checkout / "configs" / "vqgan-imagenet.yaml").is_file():
        parser.error(f"{checkout} has no configs/vqgan-imagenet.yaml; export the repository at {COMMIT_07352B4}")
    if (checkout / ".git").exists():
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.stdout.strip() != COMMIT_07352B4:
            parser.error(f"{checkout} is at {head.stdout.strip()}, the fixtures name {COMMIT_07352B4}")
    sys.path.insert(0, str(checkout))
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
    for name, fixture in fixtures.items():
        path = fixture_path(name, COMMIT_07352B4)
        path = path if args.out_dir is None else args.out_dir / path.name
        torch.save(fixture, path)
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
