"""Issue 12: a training interrupted at any step and resumed from its checkpoint ends exactly where the uninterrupted
one ends (metrics and every tensor of the final checkpoint), on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_in_process
from vqbench.training.module import TokenizerModule

#: 16 training crops at batch 4: an epoch is 4 steps, so 10 steps cross two epoch boundaries.
SHORT = [
    "data.resolution=16",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.make_dataset.train_length=16",
    "data.make_dataset.val_length=8",
    "model.hidden_channels=8",
    "model.latent_channels=16",
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "checkpoint.every_n_steps=3",
]
#: A tiny GAN recipe: the adversarial part starts at step 3, LeCam, a weight EMA and a warmup + linear decay schedule.
TINY_GAN = [
    "loss=vqgan",
    "loss.perceptual.weight=0",
    "loss.adversarial.start_step=3",
    "loss.adversarial.lecam_weight=0.1",
    "loss.adversarial.lecam_decay=0.9",
    "loss.discriminator.channels=8",
    "loss.discriminator.layers=2",
    "ema_decay=0.9",
    "optimizer.schedule=linear",
    "optimizer.warmup_fraction=0.2",
]
CASES = {
    "default": [],
    "ema_with_restarts": ["quantizer=ema", "quantizer.dead_code_threshold=0.5"],
    "gan": TINY_GAN,
}


class SimulatedCrash(RuntimeError):
    pass


def _final(out: Path) -> tuple[dict, dict]:
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics, state


def _assert_identical(resumed: Path, uninterrupted: Path) -> None:
    (metrics, state), (expected_metrics, expected_state) = _final(resumed), _final(uninterrupted)
    assert metrics == expected_metrics
    assert state["global_step"] == expected_state["global_step"] == 10
    weights, expected = state["state_dict"], expected_state["state_dict"]
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    optimizers = zip(state["optimizer_states"], expected_state["optimizer_states"], strict=True)
    for optimizer, expected_optimizer in optimizers:
        for key, moments in expected_optimizer["state"].items():
            assert all(torch.equal(optimizer["state"][key][m], v) for m, v in moments.items()), key
    assert state["lr_schedulers"] == expected_state["lr_schedulers"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for name, overrides in CASES.items():
        runs[name] = tmp_path_factory.mktemp(f"full_{name}")
        status, output = run_in_process(*SHORT, *overrides, out=runs[name])
        assert status == 0, output
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_a_crashed_run_resumed_from_its_last_checkpoint_ends_bit_identical(name, uninterrupted, tmp_path, monkeypatch):
    # Crash while training step 8 (mid-epoch, after the adversarial start step); the last checkpoint is step 6's,
    # written by checkpoint.every_n_steps=3 in the middle of the second epoch.
    original = TokenizerModule.training_step

    def crash_at_step_7(self, images, batch_idx):
        if self.global_step == 7:
            raise SimulatedCrash("the node went away")
        return original(self, images, batch_idx)

    monkeypatch.setattr(TokenizerModule, "training_step", crash_at_step_7)
    with pytest.raises(SimulatedCrash):
        run_in_process(*SHORT, *CASES[name], out=tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert json.loads((tmp_path / "failed.json").read_text())["step"] == 7
    monkeypatch.setattr(TokenizerModule, "training_step", original)

    status, output = run_in_process(*SHORT, *CASES[name], out=tmp_path)  # the same command again resumes the job
    assert status == 0, output
    assert not (tmp_path / "failed.json").exists()
    _assert_identical(tmp_path, uninterrupted[name])


@pytest.mark.parametrize("stop", [6, 8])
def test_a_shorter_run_continued_with_ckpt_ends_like_the_long_one(stop, uninterrupted, tmp_path):
    # The recipe: trainer.max_steps=STOP, then ckpt=.../last.ckpt trainer.max_steps=10 in a new folder.
    # 8 ends an epoch exactly; 6 is mid-epoch.
    status, output = run_in_process(*SHORT, f"trainer.max_steps={stop}", out=tmp_path / "first")
    assert status == 0, output
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    status, output = run_in_process(*SHORT, f"ckpt={ckpt}", out=tmp_path / "continued")
    assert status == 0, output
    _assert_identical(tmp_path / "continued", uninterrupted["default"])
