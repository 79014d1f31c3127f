"""Issue 12: every bad input (config value, data, checkpoint, output folder) ends with exit status 2 and one `error:`
line naming the value and the fix, no traceback, before the first training step, and no finished result lost or
overwritten. The cases run in this process (``run_in_process``: what run.py does, without an interpreter start each);
tests/test_sweep_failures.py runs the ones that need run.py itself (Hydra's own folder handling, a real write limit).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, TINY_TRAINING, run_in_process
from tests.test_config import compose_cfg
from vqbench.build import build_datamodule, build_quantizer, build_training_module, check_config, check_shapes
from vqbench.data.fixtures import write_celeba, write_fashion_mnist, write_imagenet, write_png_folder
from vqbench.errors import ConfigError
from vqbench.quantizer_settings import reconcile_codebook_size

#: TINY's data and steps, for another model.
TINY_DATA = [o for o in TINY if not o.startswith("model.")]
#: The narrow model and three steps on a dataset fixture: batches of 2, no loader workers.
ON_FIXTURE = [*TINY_TRAINING, "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=0"]


class Shared:
    """Inputs the cases corrupt copies of: a trained checkpoint and one fixture per dataset format."""

    def __init__(self, root: Path):
        self.root = root
        self.trained = root / "trained"
        status, output = run_in_process(*TINY, out=self.trained)
        assert status == 0, output
        self.ckpt = self.trained / "checkpoints" / "last.ckpt"
        self.celeba = write_celeba(root / "celeba", partitions=(4, 2, 2))
        self.imagenet = write_imagenet(root / "imagenet")
        self.ffhq = write_png_folder(root / "ffhq", count=8, size=32)
        self.fashion = write_fashion_mnist(root / "fashion")

    def copy(self, name: str, to: Path) -> Path:
        target = to / name
        shutil.copytree(getattr(self, name), target)
        return target


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    return Shared(tmp_path_factory.mktemp("shared"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Malicious:
    """Pickles as a call to os.system: what a weights_only load must refuse to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# Each case: (overrides, fragment of the error line). `s` is the Shared inputs, `t` a fresh folder for the case.
Setup = Callable[[Shared, Path], tuple[list[str], str]]


def _celeba(*extra: str) -> Setup:
    return lambda s, t: (["data=celeba", f"data.root={s.celeba}", *ON_FIXTURE, *extra], "")


def _corrupt_celeba(file: str, how: Callable[[Path], None]) -> Setup:
    def setup(s: Shared, t: Path):
        root = s.copy("celeba", t)
        how(root / "img_align_celeba" / file)
        return [
            "data=celeba",
            f"data.root={root}",
            *ON_FIXTURE,
        ], f"cannot decode image {root / 'img_align_celeba' / file}"

    return setup


def _celeba_layout(change: Callable[[Path], None], fragment: str) -> Setup:
    def setup(s: Shared, t: Path):
        root = s.copy("celeba", t)
        change(root)
        return ["data=celeba", f"data.root={root}", *ON_FIXTURE], fragment

    return setup


def _imagenet(change: Callable[[Path], None], fragment: Callable[[Path], str]) -> Setup:
    def setup(s: Shared, t: Path):
        root = s.copy("imagenet", t)
        change(root)
        return ["data=imagenet", f"data.root={root}", "data.resolution=32", *ON_FIXTURE], fragment(root)

    return setup


def _ffhq(change: Callable[[Path], None], fragment: Callable[[Path], str]) -> Setup:
    def setup(s: Shared, t: Path):
        root = s.copy("ffhq", t)
        change(root)
        return ["data=ffhq", f"data.root={root}", "data.resolution=32", *ON_FIXTURE], fragment(root)

    return setup


def _fashion(change: Callable[[Path], None], fragment: str, *extra: str) -> Setup:
    def setup(s: Shared, t: Path):
        root = s.copy("fashion", t)
        change(root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
        return ["data=fashion_mnist", f"data.root={root}", *ON_FIXTURE, *extra], fragment

    return setup


def _resume(ckpt: Callable[[Shared, Path], Path], fragment: str, *extra: str) -> Setup:
    return lambda s, t: ([*TINY, f"ckpt={ckpt(s, t)}", *extra], fragment)


def _evaluate(ckpt: Callable[[Shared, Path], Path], fragment: str, *extra: str) -> Setup:
    return lambda s, t: (["+eval=true", f"ckpt={ckpt(s, t)}", *extra], fragment)


def _text_file(s: Shared, t: Path) -> Path:
    (t / "notes.txt").write_text("learning rate 4e-4 worked best\n")
    return t / "notes.txt"


def _truncated_ckpt(s: Shared, t: Path) -> Path:
    shutil.copy(s.ckpt, t / "cut.ckpt")
    _truncate(t / "cut.ckpt")
    return t / "cut.ckpt"


def _foreign_ckpt(s: Shared, t: Path) -> Path:
    torch.save({"model": {"weight": torch.zeros(3)}, "epoch": 4}, t / "foreign.ckpt")
    return t / "foreign.ckpt"


def _malicious_ckpt(s: Shared, t: Path) -> Path:
    torch.save({"state_dict": {}, "vqbench_config": "seed: 0", "payload": Malicious(t / "PWNED")}, t / "evil.ckpt")
    return t / "evil.ckpt"


def _own_checkpoint(change: Callable[[Shared, Path], None], fragment: str, *extra: str) -> Setup:
    """The run folder (t / "run") already holds a checkpoints/last.ckpt."""

    def setup(s: Shared, t: Path):
        (t / "run" / "checkpoints").mkdir(parents=True)
        shutil.copy(s.ckpt, t / "run" / "checkpoints" / "last.ckpt")
        change(s, t / "run" / "checkpoints" / "last.ckpt")
        return [*TINY, *extra], fragment

    return setup


def _into_finished_folder(overrides: Callable[[Shared], list[str]], fragment: str) -> Setup:
    """The run folder (t / "run") holds the finished results of the trained run (other overrides)."""

    def setup(s: Shared, t: Path):
        (t / "run").mkdir()
        shutil.copy(s.trained / "metrics.json", t / "run" / "metrics.json")
        return overrides(s), fragment

    return setup


CASES: dict[str, Setup] = {
    # --- config values -----------------------------------------------------------------------------------------
    "codebook.size=0": lambda s, t: ([*TINY, "codebook.size=0"], "codebook.size must be a positive integer, got 0"),
    "codebook.dim=-3": lambda s, t: ([*TINY, "codebook.dim=-3"], "codebook.dim must be a positive integer, got -3"),
    "batch_size=0": lambda s, t: ([*TINY, "data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
    "resolution=7": lambda s, t: (
        [*TINY, "data.resolution=7"],
        "data.resolution=7 does not fit the model (SimpleCNNEncoder/SimpleCNNDecoder): it encodes 7x7 images into "
        "1x1 tokens and decodes those into 4x4 images; use a multiple of its downsampling factor 4, e.g. "
        "data.resolution=8",
    ),
    "vqgan resolution=60": lambda s, t: (
        ["model=vqgan", "model.channels=32", "data.resolution=60", "data.batch_size=2"],
        "data.resolution=60 does not fit the model (VQGANEncoder/VQGANDecoder): it encodes 60x60 images into 3x3 "
        "tokens and decodes those into 48x48 images; use a multiple of its downsampling factor 16, e.g. "
        "data.resolution=64 (or 48)",
    ),
    "lattice_cnn resolution=30": lambda s, t: (
        [*TINY_DATA, "model=lattice_cnn", "model.hidden_channels=[8,8]", "data.resolution=30"],
        "use a multiple of its downsampling factor 4, e.g. data.resolution=32 (or 28)",
    ),
    "channels=5 on RGB": lambda s, t: (
        [*TINY, "data.channels=5"],
        "data.channels=5, but the train images have 3 channels (3x16x16); set data.channels=3",
    ),
    "discriminator too deep": lambda s, t: (
        [
            *TINY,
            "loss=vqgan",
            "loss.perceptual.weight=0",
            "loss.discriminator.channels=4",
            "loss.discriminator.layers=4",
        ],
        "data.resolution=16 is too small for the discriminator (PatchDiscriminator)",
    ),
    "perceptual network too deep": lambda s, t: (
        [*TINY, "loss=perceptual", "loss.perceptual.pretrained=false", "data.resolution=8"],
        "data.resolution=8 is too small for the perceptual network (LPIPS) (PerceptualLoss)",
    ),
    "lr=-1": lambda s, t: ([*TINY, "optimizer.lr=-1"], "optimizer.lr must be a positive number (e.g. 4e-4), got -1"),
    "lr=0": lambda s, t: ([*TINY, "optimizer.lr=0"], "optimizer.lr must be a positive number"),
    "lr=fast": lambda s, t: (
        [*TINY, "optimizer.lr=fast"],
        "optimizer.lr must be a positive number (e.g. 4e-4), got 'fast'",
    ),
    "betas": lambda s, t: ([*TINY, "optimizer.betas=[1.5,0.9]"], "optimizer.betas must be two numbers in [0, 1)"),
    "weight_decay": lambda s, t: (
        [*TINY, "optimizer.weight_decay=-0.1"],
        "optimizer.weight_decay must be a number >= 0",
    ),
    "grad_clip=0": lambda s, t: ([*TINY, "optimizer.grad_clip=0"], "optimizer.grad_clip must be a positive gradient"),
    "warmup_fraction": lambda s, t: ([*TINY, "optimizer.warmup_fraction=1.5"], "optimizer.warmup_fraction must be in"),
    "schedule": lambda s, t: (
        [*TINY, "optimizer.schedule=cosine"],
        "optimizer.schedule must be one of constant, linear, annealing_linear, exponential",
    ),
    "ema_decay": lambda s, t: ([*TINY, "ema_decay=1.5"], "ema_decay must be in (0, 1) (e.g. 0.9999) or null, got 1.5"),
    "reconstruction loss": lambda s, t: ([*TINY, "loss.reconstruction=huber"], "loss.reconstruction must be one of"),
    "adversarial loss": lambda s, t: (
        [*TINY, "loss=vqgan", "loss.adversarial.loss=wgan"],
        "loss.adversarial.loss must be hinge or non_saturating, got 'wgan'",
    ),
    "start_step": lambda s, t: (
        [*TINY, "loss=vqgan", "loss.adversarial.start_step=-5"],
        "loss.adversarial.start_step must be a step number >= 0, got -5",
    ),
    "lecam_decay": lambda s, t: ([*TINY, "loss=vqgan", "loss.adversarial.lecam_decay=2"], "lecam_decay must be in"),
    "usage_window": lambda s, t: ([*TINY, "metrics.usage_window=0"], "metrics.usage_window must be a positive number"),
    "rfid protocol": lambda s, t: (
        [*TINY, "metrics.rfid.protocol=adm"],
        "metrics.rfid.protocol=adm is not an rFID protocol; choose one of torch_fidelity, torchmetrics_normalize",
    ),
    "health_steps": lambda s, t: ([*TINY, "metrics.health_steps=0"], "metrics.health_steps must be a positive number"),
    "usage_warning_fraction": lambda s, t: (
        [*TINY, "metrics.usage_warning_fraction=2"],
        "metrics.usage_warning_fraction must be in [0, 1]",
    ),
    "gradient_clip_val": lambda s, t: ([*TINY, "+trainer.gradient_clip_val=1.0"], "set optimizer.grad_clip=1.0"),
    "precision": lambda s, t: ([*TINY, "trainer.precision=17"], "trainer: "),
    "every_n_steps": lambda s, t: (
        [*TINY, "checkpoint.every_n_steps=0"],
        "checkpoint.every_n_steps must be a positive",
    ),
    "seed": lambda s, t: ([*TINY, "seed=-1"], "seed must be a non-negative integer, got -1"),
    "weight type": lambda s, t: ([*TINY, "quantizer.commitment_weight=lots"], "quantizer.commitment_weight must be a"),
    "weight of no loss": lambda s, t: (
        [*TINY, "+quantizer.comitment_weight=0.25"],
        "quantizer.comitment_weight weighs no loss: VectorQuantizer returns the losses codebook, commitment, entropy",
    ),
    "train split < batch": lambda s, t: (
        [*TINY, "data.make_dataset.train_length=3"],
        "the train split has 3 images, fewer than one batch (data.batch_size=4 x 1 processes); lower data.batch_size",
    ),
    "resolution > photos": lambda s, t: ([*TINY, "data.resolution=1000"], "data.resolution=1000 is larger than"),
    # --- data: layouts and corrupt files, for each dataset -------------------------------------------------------
    "celeba without root": lambda s, t: (["data=celeba", *ON_FIXTURE], "data=celeba needs data.root=PATH"),
    "celeba missing root": lambda s, t: (
        ["data=celeba", f"data.root={t / 'nowhere'}", *ON_FIXTURE],
        f"data.root={t / 'nowhere'} is not a directory",
    ),
    "celeba no image folder": _celeba_layout(
        lambda root: shutil.rmtree(root / "img_align_celeba"), "has no img_align_celeba/ folder"
    ),
    "celeba no partition file": _celeba_layout(
        lambda root: (root / "list_eval_partition.txt").unlink(), "has no list_eval_partition.txt"
    ),
    "celeba bad partition line": _celeba_layout(
        lambda root: (root / "list_eval_partition.txt").write_text("000001.jpg train\n"),
        "line 1 is '000001.jpg train'; expected 'FILE.jpg 0|1|2'",
    ),
    "celeba listed image missing": _celeba_layout(
        lambda root: (root / "img_align_celeba" / "000003.jpg").unlink(), "(first: 000003.jpg)"
    ),
    "celeba third train image garbage": _corrupt_celeba("000003.jpg", lambda p: p.write_bytes(b"<html>404</html>")),
    "celeba last train image truncated": _corrupt_celeba("000004.jpg", _truncate),
    "celeba second val image truncated": _corrupt_celeba("000006.jpg", _truncate),
    "celeba unknown crop": lambda s, t: (
        ["data=celeba", f"data.root={s.celeba}", *ON_FIXTURE, "data.make_dataset.crop=square"],
        "data.make_dataset.crop must be 'seed'",
    ),
    "celeba cache folder in a file": lambda s, t: (
        ["data=celeba", f"data.root={s.celeba}", *ON_FIXTURE, "data.cache=true", f"data.cache_dir={s.ckpt}/cache"],
        f"data.cache_dir={s.ckpt}/cache: {s.ckpt} is a file, not a folder",
    ),
    "ffhq too few images": _ffhq(
        lambda root: [p.unlink() for p in sorted(root.rglob("*.png"))[1:]], lambda root: "holds 1 PNG files"
    ),
    "ffhq fifth image truncated": _ffhq(
        lambda root: _truncate(sorted(root.rglob("*.png"))[4]),
        lambda root: f"cannot decode image {sorted(root.rglob('*.png'))[4]}",
    ),
    "ffhq image bit flip": _ffhq(
        lambda root: _flip_byte(sorted(root.rglob("*.png"))[6]),
        lambda root: f"cannot decode image {sorted(root.rglob('*.png'))[6]}",
    ),
    "imagenet no train folder": _imagenet(lambda root: shutil.rmtree(root / "train"), lambda root: "has no train/"),
    "imagenet empty val": _imagenet(
        lambda root: [p.unlink() for p in (root / "val").iterdir()], lambda root: "holds no image files"
    ),
    "imagenet second train image garbage": _imagenet(
        lambda root: sorted((root / "train").rglob("*.JPEG"))[1].write_bytes(b"\xff\xd8\xff garbage"),
        lambda root: f"cannot decode image {sorted((root / 'train').rglob('*.JPEG'))[1]}",
    ),
    "imagenet val image truncated": _imagenet(
        lambda root: _truncate(sorted((root / "val").glob("*.JPEG"))[2]),
        lambda root: f"cannot decode image {sorted((root / 'val').glob('*.JPEG'))[2]}",
    ),
    "folder empty": lambda s, t: (
        ["data=folder", f"data.root={(t / 'empty').mkdir() or t / 'empty'}", *ON_FIXTURE],
        "holds 0 image files",
    ),
    "folder holdout_fraction": lambda s, t: (
        ["data=folder", f"data.root={s.imagenet}", *ON_FIXTURE, "data.make_dataset.holdout_fraction=2"],
        "data.make_dataset.holdout_fraction must be in (0, 1), got 2",
    ),
    "folder channels=2": lambda s, t: (
        ["data=folder", f"data.root={s.imagenet}", *ON_FIXTURE, "data.channels=2"],
        "data.channels must be 1 or 3 for image files, got 2",
    ),
    "fashion_mnist channels=3": _fashion(
        lambda p: None, "FashionMNIST is grayscale; set data.channels=1", "data.channels=3"
    ),
    "fashion_mnist truncated": _fashion(_truncate, "bytes; its header (24 x 28 x 28) needs 18832"),
    "fashion_mnist bad magic": _fashion(
        lambda p: p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:]), "not the IDX image magic"
    ),
    "fashion_mnist corrupt gzip": _fashion(
        lambda p: (p.with_name(p.name + ".gz").write_bytes(b"\x1f\x8b broken"), p.unlink()),
        "re-extract or re-download the file",
    ),
    # --- checkpoints -------------------------------------------------------------------------------------------
    "resume missing": _resume(lambda s, t: t / "no.ckpt", "does not exist or is not a file"),
    "resume folder": _resume(lambda s, t: t, "does not exist or is not a file"),
    "resume text file": _resume(
        _text_file, "cannot be read as a checkpoint (Unsupported operand 108); it is truncated or not a"
    ),
    "resume truncated": _resume(_truncated_ckpt, "cannot be read as a checkpoint (RuntimeError: PytorchStreamReader"),
    "resume foreign": _resume(_foreign_ckpt, "is not a vqbench checkpoint (no state_dict or embedded config)"),
    "resume malicious": _resume(
        _malicious_ckpt, "is not a tensors-only checkpoint (Trying to load unsupported GLOBAL posix.system"
    ),
    "resume other quantizer": _resume(
        lambda s, t: s.ckpt,
        "was trained with another config: quantizer._target_ (vqbench.quantizers.VectorQuantizer -> "
        "vqbench.quantizers.FSQ). Resume it with its own settings",
        "quantizer=fsq",
    ),
    "resume other seed and lr": _resume(
        lambda s, t: s.ckpt,
        "another config: optimizer.lr (0.0004 -> 0.001), seed (0 -> 3)",
        "seed=3",
        "optimizer.lr=1e-3",
    ),
    "evaluate missing": _evaluate(lambda s, t: t / "no.ckpt", "does not exist or is not a file"),
    "evaluate truncated": _evaluate(_truncated_ckpt, "it is truncated or not a checkpoint"),
    "evaluate malicious": _evaluate(_malicious_ckpt, "vqbench never runs code from a checkpoint"),
    "evaluate EMA of a run without one": _evaluate(lambda s, t: s.ckpt, "holds no weight EMA", "metrics.use_ema=true"),
    "evaluate without ckpt": lambda s, t: (["+eval=true"], "+eval=true needs a checkpoint: add ckpt="),
    # --- the run folder ----------------------------------------------------------------------------------------
    "own checkpoint of another job": _own_checkpoint(lambda s, p: None, "belongs to another job", "seed=1"),
    "own checkpoint truncated": _own_checkpoint(lambda s, p: _truncate(p), "Delete ", "seed=1"),
    "own checkpoint without skip_finished": _own_checkpoint(
        lambda s, p: None, "holds the checkpoint of an unfinished run", "skip_finished=false"
    ),
    "resuming into another run's folder": lambda s, t: (
        _own_checkpoint(lambda s_, p: None, "")(s, t)[0] + [f"ckpt={s.ckpt}"],
        "holds the checkpoint of another unfinished run",
    ),
    "finished results of another job": _into_finished_folder(
        lambda s: [*TINY, "trainer.max_steps=2"], "holds the finished results of another job"
    ),
    "finished results, skip_finished=false": _into_finished_folder(
        lambda s: [*TINY, "skip_finished=false"], "already holds the finished results of a run"
    ),
    "evaluation into a finished run": _into_finished_folder(
        lambda s: ["+eval=true", f"ckpt={s.ckpt}"], "holds the finished results of another job"
    ),
    "output folder inside a file": lambda s, t: ([*TINY], "cannot write into the output folder"),
}

#: Issue 20, item 7: every remaining value gets one clear line (types, negative counts, files where folders are
#: expected and the reverse, FSQ levels); tests/test_bad_inputs.py::test_fsq_level_errors_suggest_valid_fixes applies
#: each FSQ suggestion.
VALUE_CASES: dict[str, Setup] = {
    "max_steps=abc": lambda s, t: (
        [*TINY, "trainer.max_steps=abc"],
        "trainer.max_steps must be a whole number of optimizer steps >= 1 (e.g. 10000), or -1 to stop by "
        "trainer.max_epochs; got 'abc'",
    ),
    "max_steps=2.5": lambda s, t: ([*TINY, "trainer.max_steps=2.5"], "trainer.max_steps must be a whole number"),
    "max_steps=-5": lambda s, t: ([*TINY, "trainer.max_steps=-5"], "or -1 to stop by trainer.max_epochs; got -5"),
    "max_epochs=0": lambda s, t: ([*TINY, "trainer.max_epochs=0"], "trainer.max_epochs must be >= 1"),
    "log_every_n_steps=0": lambda s, t: ([*TINY, "trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be"),
    "val_check_interval=abc": lambda s, t: (
        [*TINY, "trainer.val_check_interval=abc"],
        "trainer.val_check_interval must be a number of training steps >= 1",
    ),
    "val_check_interval=0": lambda s, t: ([*TINY, "trainer.val_check_interval=0"], "got 0"),
    "limit_val_batches=-1": lambda s, t: ([*TINY, "trainer.limit_val_batches=-1"], "trainer.limit_val_batches must"),
    "num_workers=-1": lambda s, t: (
        [*TINY, "data.num_workers=-1"],
        "data.num_workers must be an integer >= 0 (loader processes; 0: load in the main one), got -1",
    ),
    "num_workers=two": lambda s, t: ([*TINY, "data.num_workers=two"], "data.num_workers must be an integer >= 0"),
    "num_workers=1.5": lambda s, t: ([*TINY, "data.num_workers=1.5"], "got 1.5"),
    "eval_batch_size=-1": lambda s, t: ([*TINY, "data.eval_batch_size=-1"], "data.eval_batch_size must be an integer"),
    "flip=maybe": lambda s, t: ([*TINY, "data.flip=maybe"], "data.flip must be true or false, got 'maybe'"),
    "train_length=-3": lambda s, t: ([*TINY, "data.make_dataset.train_length=-3"], "train_length must be an integer"),
    "grid_images=-1": lambda s, t: (
        [*TINY, "metrics.grid_images=-1"],
        "metrics.grid_images must be an integer >= 0 (images in the reconstruction grid), got -1",
    ),
    "grid_images=abc": lambda s, t: ([*TINY, "metrics.grid_images=abc"], "metrics.grid_images must be an integer"),
    "lpips=maybe": lambda s, t: ([*TINY, "metrics.lpips=maybe"], "metrics.lpips must be true or false"),
    "reconstructions_dir is a file": lambda s, t: (
        [*TINY, f"metrics.reconstructions_dir={_text_file(s, t)}"],
        f"metrics.reconstructions_dir={t / 'notes.txt'}: {t / 'notes.txt'} is a file, not a folder",
    ),
    "evaluation reconstructions_dir inside a file": lambda s, t: (
        [
            "+eval=true",
            f"ckpt={s.ckpt}",
            "metrics.save_reconstructions=true",
            f"metrics.reconstructions_dir={_text_file(s, t)}/pngs",
        ],
        f"{t / 'notes.txt'} is a file, not a folder; give a folder path",
    ),
    "cache_dir is a file": lambda s, t: (
        [*TINY, f"data.cache_dir={_text_file(s, t)}"],
        f"data.cache_dir={t / 'notes.txt'}: {t / 'notes.txt'} is a file",
    ),
    "data.root is a file": lambda s, t: (
        ["data=folder", f"data.root={_text_file(s, t)}", *ON_FIXTURE],
        f"data.root={t / 'notes.txt'} is not a directory",
    ),
    "inception_weights is a folder": lambda s, t: (
        [*TINY, f"metrics.inception_weights={t}"],
        "metrics.inception_weights must be the path of the file",
    ),
    "model width abc": lambda s, t: (
        [*TINY, "model.hidden_channels=abc"],
        "model.hidden_channels must be an integer, got 'abc'",
    ),
    "model latent channels -3": lambda s, t: (
        [*TINY, "model.latent_channels=-3"],
        "model.latent_channels must be a positive integer, got -3",
    ),
    "ema dead_code_threshold=abc": lambda s, t: (
        [*TINY, "quantizer=ema", "quantizer.dead_code_threshold=abc"],
        "quantizer.dead_code_threshold must be a number, got 'abc'",
    ),
    "lfq entropy_temperature=abc": lambda s, t: (
        [*TINY, "quantizer=lfq", "codebook.size=16", "quantizer.entropy_temperature=abc"],
        "quantizer.entropy_temperature must be a number, got 'abc'",
    ),
    "perceptual weight=abc": lambda s, t: (
        [*TINY, "loss=perceptual", "loss.perceptual.weight=abc"],
        "loss.perceptual.weight must be a number, got 'abc'",
    ),
    "evaluate_after_training=maybe": lambda s, t: (
        [*TINY, "evaluate_after_training=maybe"],
        "evaluate_after_training must be true or false, got 'maybe'",
    ),
    "logger save_dir is a file": lambda s, t: (
        [*TINY, "logger=csv", f"logger.save_dir={_text_file(s, t)}"],
        f"logger.save_dir={t / 'notes.txt'}: {t / 'notes.txt'} is a file, not a folder",
    ),
    "fsq level 1": lambda s, t: (
        [*TINY, "quantizer=fsq", "quantizer.levels=[1,5]"],
        "every level must be an integer >= 2; e.g. quantizer.levels=[2,5]",
    ),
    "fsq levels not a list": lambda s, t: ([*TINY, "quantizer=fsq", "quantizer.levels=abc"], "non-empty list"),
    "fsq size without table levels": lambda s, t: (
        [*TINY, "quantizer=fsq", "codebook.size=7"],
        "set codebook.size=256, or give the levels with their product, e.g. quantizer.levels=[8,5,5,5] "
        "codebook.size=1000",
    ),
    "fsq levels and size disagree": lambda s, t: (
        [*TINY, "quantizer=fsq", "quantizer.levels=[8,5]", "codebook.size=7"],
        "set codebook.size=40 (the levels define the codebook), or drop codebook.size=7",
    ),
}
CASES.update(VALUE_CASES)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _digests(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_battery_has_at_least_forty_cases():
    assert len(CASES) >= 40


def test_the_shape_check_leaves_every_network_untouched():
    cfg = compose_cfg([*TINY, "loss=vqgan", "loss.perceptual.pretrained=false", "loss.discriminator.layers=2"])
    module = build_training_module(cfg)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    check_shapes(cfg, module, build_datamodule(cfg))
    after = module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line(name, shared, tmp_path):
    overrides, fragment = CASES[name](shared, tmp_path)
    out = tmp_path / "run"
    if name == "output folder inside a file":
        (tmp_path / "a_file").write_text("")
        out = tmp_path / "a_file" / "run"
    before = {folder: _digests(folder) for folder in (shared.root, out) if folder.is_dir()}
    status, output = run_in_process(*overrides, out=out)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert status == 2, output
    assert len(errors) == 1 and fragment in errors[0], output
    assert "Traceback" not in output
    for folder, digests in before.items():  # nothing that was there is lost or changed
        after = _digests(folder)
        assert {k: after.get(k) for k in digests} == digests
    for result in ("metrics.json", "checkpoints/last.ckpt"):  # and no training or evaluation result appeared
        assert (out / result).exists() == (result in before.get(out, {}))
    assert not (tmp_path / "PWNED").exists()


#: FSQ level errors, each with its overrides: every fix the message suggests must itself be valid.
FSQ_ERRORS = {
    "level 1": ["quantizer=fsq", "quantizer.levels=[1,5]"],
    "level 1 with a size": ["quantizer=fsq", "quantizer.levels=[1,5]", "codebook.size=5"],
    "fractional level": ["quantizer=fsq", "quantizer.levels=[7.5,5]"],
    "not a list": ["quantizer=fsq", "quantizer.levels=abc"],
    "empty": ["quantizer=sfsq", "quantizer.levels=[]", "codebook.size=64"],
    "size without table levels": ["quantizer=fsq", "codebook.size=7"],
    "large size without table levels": ["quantizer=sfsq", "codebook.size=100000"],
    "levels and size disagree": ["quantizer=fsq", "quantizer.levels=[8,5]", "codebook.size=7"],
}
#: A suggestion: "e.g." / "set" / "drop", then override words (a list value is one word: [8,5,5,5]).
OVERRIDE_WORD = r"[\w.]+=(?:\[[\d,]*\]|[^\s,;()\[]+)"
SUGGESTION = re.compile(rf"\b(e\.g\.|set|drop) ({OVERRIDE_WORD}(?: {OVERRIDE_WORD})*)")


def _checked(overrides: list[str]) -> None:
    """What run.py checks before building anything, then the quantizer itself."""
    cfg = compose_cfg(overrides)
    check_config(cfg)
    reconcile_codebook_size(cfg, overrides)
    build_quantizer(cfg.quantizer)


def _applied(overrides: list[str], verb: str, words: list[str]) -> list[str]:
    keys = {word.split("=", 1)[0] for word in words}
    kept = [o for o in overrides if o.split("=", 1)[0] not in keys]
    return kept if verb == "drop" else kept + words


@pytest.mark.parametrize("name", list(FSQ_ERRORS))
def test_fsq_level_errors_suggest_valid_fixes(name):
    overrides = FSQ_ERRORS[name]
    with pytest.raises(ConfigError) as error:
        _checked(overrides)
    suggestions = SUGGESTION.findall(str(error.value))
    assert suggestions, str(error.value)
    for verb, words in suggestions:
        fixed = _applied(overrides, verb, words.split())
        _checked(fixed)  # composes, passes the checks, builds: raises otherwise


def test_reconstructions_go_to_metrics_reconstructions_dir(shared, tmp_path):
    folder = tmp_path / "elsewhere" / "pngs"
    overrides = ["+eval=true", f"ckpt={shared.ckpt}", "metrics.save_reconstructions=true", "metrics.lpips=false"]
    status, output = run_in_process(
        *overrides, "metrics.rfid=false", f"metrics.reconstructions_dir={folder}", out=tmp_path / "eval"
    )
    assert status == 0, output
    assert len(list(folder.glob("*_reconstruction.png"))) == 12 and not (tmp_path / "eval" / "reconstructions").exists()
