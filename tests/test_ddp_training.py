"""Lightning DDP training through run.py (``trainer.strategy=ddp``, two CPU processes over gloo) against one process.

Every step of these runs sees the whole training split (4 images: one batch of 4, or one batch of 2 per process),
with deterministic preprocessing and no flips, so the data order does not matter. Each loss is a mean over images
and DDP averages the gradients of the two processes, so two processes at batch 2 must reach the weights one process
reaches at batch 4 (up to float rounding).

For the GAN this holds for the parts that are linear in the images: the fixed generator weight (LlamaGen's recipe),
the hinge losses, and a PatchGAN without BatchNorm (``loss.discriminator.layers=0``). Taming's discriminator
normalises each process's own batch (BatchNorm without sync), its adaptive weight is computed from each process's own
gradients, and LeCam follows each process's own logits, as in the original DDP trainings; with those, two processes
are a different computation from one, so they are left out of the comparison.
"""

from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from vqbench.data.fixtures import write_png_folder

pytestmark = pytest.mark.slow

STEPS = 3
GLOBAL_BATCH = 4

TINY_FOLDER = [
    "data=folder",
    "data.resolution=16",
    "data.flip=false",
    "data.num_workers=0",
    "data.eval_batch_size=1",
    "model.hidden_channels=8",
    "model.latent_channels=16",
    "codebook.size=32",
    "codebook.dim=8",
    f"trainer.max_steps={STEPS}",
    f"trainer.val_check_interval={STEPS}",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]

GAN = [
    "loss=vqgan",
    "loss.perceptual.weight=0",
    "loss.adversarial.start_step=1",
    "loss.adversarial.adaptive=false",
    "loss.adversarial.weight=0.5",
    "loss.discriminator.channels=8",
    "loss.discriminator.layers=0",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_png_folder(tmp_path_factory.mktemp("folder"), count=5, size=32)  # 4 train, 1 held out


def _train(root: Path, out: Path, processes: int, *extra: str) -> dict:
    run_cli(
        *TINY_FOLDER,
        f"data.root={root}",
        f"data.batch_size={GLOBAL_BATCH // processes}",
        f"trainer.devices={processes}",
        f"trainer.strategy={'ddp' if processes > 1 else 'auto'}",
        *extra,
        f"hydra.run.dir={out}",
        cwd=out.parent,
    )
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == STEPS
    return checkpoint["state_dict"]


def _assert_same_weights(one: dict, two: dict, prefix: str) -> None:
    keys = [k for k in one if k.startswith(prefix)]
    assert keys
    for key in keys:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_vqvae_on_two_processes_equals_one_process_at_the_same_global_batch(images, tmp_path):
    one = _train(images, tmp_path / "one", 1)
    two = _train(images, tmp_path / "two", 2)
    _assert_same_weights(one, two, "tokenizer.")


def test_gan_recipe_trains_on_two_processes_and_equals_one_process(images, tmp_path):
    one = _train(images, tmp_path / "one", 1, *GAN)
    two = _train(images, tmp_path / "two", 2, *GAN)
    _assert_same_weights(one, two, "tokenizer.")
    _assert_same_weights(one, two, "discriminator.")
