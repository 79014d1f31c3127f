"""Issue 12: a training interrupted at any step and resumed from its checkpoint ends exactly where the uninterrupted
one ends (metrics and every tensor of the final checkpoint), on the CPU."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli, run_in_process
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
    # A loader worker: the main process's generators then see no item seeding, only the per-step seeds.
    "ema_with_restarts": ["quantizer=ema", "quantizer.dead_code_threshold=0.5", "data.num_workers=1"],
    "gan": TINY_GAN,
}


class SimulatedCrash(RuntimeError):
    pass


def _final(out: Path) -> tuple[dict, dict]:
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics, state


def _assert_identical(resumed: Path, uninterrupted: Path, steps: int = 10) -> None:
    (metrics, state), (expected_metrics, expected_state) = _final(resumed), _final(uninterrupted)
    assert metrics == expected_metrics
    assert state["global_step"] == expected_state["global_step"] == steps
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
def uninterrupted(tmp_path_factory) -> Callable[[str], Path]:
    """The folder of the uninterrupted run of a case, trained on first use."""
    runs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in runs:
            runs[name] = tmp_path_factory.mktemp(f"full_{name}")
            status, output = run_in_process(*SHORT, *CASES[name], out=runs[name])
            assert status == 0, output
        return runs[name]

    return run


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
    _assert_identical(tmp_path, uninterrupted(name))


@pytest.mark.parametrize("stop", [6, 8])
def test_a_shorter_run_continued_with_ckpt_ends_like_the_long_one(stop, uninterrupted, tmp_path):
    # The recipe: trainer.max_steps=STOP, then ckpt=.../last.ckpt trainer.max_steps=10 in a new folder.
    # 8 ends an epoch exactly; 6 is mid-epoch.
    status, output = run_in_process(*SHORT, f"trainer.max_steps={stop}", out=tmp_path / "first")
    assert status == 0, output
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == stop  # written at the last step
    status, output = run_in_process(*SHORT, f"ckpt={ckpt}", out=tmp_path / "continued")
    assert status == 0, output
    _assert_identical(tmp_path / "continued", uninterrupted("default"))


# --- real processes killed with SIGKILL ------------------------------------------------------------------------------

WRITER = """
import sys, torch
from vqbench.training.checkpoints import AtomicCheckpointIO
for version in range(1000):
    print(version, flush=True)
    checkpoint = {"version": version, "payload": torch.full((2**25,), float(version))}
    AtomicCheckpointIO().save_checkpoint(checkpoint, sys.argv[1])
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        while int(writer.stdout.readline()) < 2:  # versions 0 and 1 are complete once "2" is printed
            pass
        partial, deadline = tmp_path / ".last.ckpt.partial", time.monotonic() + 5
        while not (partial.is_file() and partial.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)  # while 128 MiB of version 2 are being written
    finally:
        writer.kill()
        writer.wait()
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["version"] in (1, 2)
    assert torch.equal(checkpoint["payload"], torch.full((2**25,), float(checkpoint["version"])))


@pytest.mark.slow
def test_a_training_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    args = [*SHORT, "trainer.max_steps=60", "trainer.val_check_interval=20", "checkpoint.every_n_steps=2"]
    run_cli(*args, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    out = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={out}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step, deadline = 0, time.monotonic() + 600
        while step < 6 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError):
                step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (out / "metrics.json").exists()
    run_cli(*args, f"hydra.run.dir={out}", cwd=tmp_path)  # the same command again
    assert "resuming the interrupted job" in (out / "run.log").read_text()
    _assert_identical(out, tmp_path / "reference", steps=60)
