"""Issue 20: the first step whose loss or gradient norm is not finite is reported exactly in failed.json, also when
it is neither a logging nor a checkpoint step; no metrics.json is written, and last.ckpt stays the last good one
(byte for byte)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_in_process
from tests.test_resume import SHORT
from vqbench.training.checkpoints import AtomicCheckpointIO
from vqbench.training.module import TokenizerModule

#: 10 steps, a checkpoint every 3 (3, 6, 9 and the last), the loss read on the host every 4 steps only.
ARGS = [*SHORT, "trainer.log_every_n_steps=4"]


@pytest.fixture
def saved(monkeypatch) -> dict[int, bytes]:
    """The bytes of each checkpoint the run writes, by step."""
    written: dict[int, bytes] = {}
    original = AtomicCheckpointIO.save_checkpoint

    def recording(self, checkpoint, path, storage_options=None):
        original(self, checkpoint, path, storage_options)
        written[checkpoint["global_step"]] = Path(path).read_bytes()

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    return written


def _inject_nan_loss(monkeypatch, bad_step: int) -> None:
    original = TokenizerModule.generator_loss

    def nan_at(self, images, step):
        total, reconstruction, terms = original(self, images, step)
        if step == bad_step - 1:  # the module's step counts from 0; reported steps count updates from 1
            total = total * float("nan")
        return total, reconstruction, terms

    monkeypatch.setattr(TokenizerModule, "generator_loss", nan_at)


def _assert_failed_at(out: Path, step: int, what: str, saved: dict[int, bytes], good_step: int) -> None:
    record = json.loads((out / "failed.json").read_text())
    assert record["step"] == step
    assert f"{what} became non-finite" in record["error"] and f"step {step}" in record["error"]
    assert record["exit_status"] == 2
    assert not (out / "metrics.json").exists()
    assert max(saved) == good_step  # nothing written after the bad step
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == saved[good_step]
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


@pytest.mark.parametrize(("bad_step", "good_step"), [(7, 6), (10, 9)], ids=["mid-run", "last-step"])
def test_a_nan_loss_is_reported_at_its_step_and_keeps_the_last_good_checkpoint(
    bad_step, good_step, saved, tmp_path, monkeypatch
):
    _inject_nan_loss(monkeypatch, bad_step)
    status, output = run_in_process(*ARGS, out=tmp_path)
    assert status == 2, output
    _assert_failed_at(tmp_path, bad_step, "the training loss", saved, good_step)


def test_a_non_finite_gradient_norm_under_clipping_is_reported_at_its_step(saved, tmp_path, monkeypatch):
    original = TokenizerModule._clip

    def inf_gradient_in_step_5(self, optimizer):
        if self.global_step == 4:
            next(p for p in self.tokenizer.parameters() if p.grad is not None).grad[0] = float("inf")
        return original(self, optimizer)

    monkeypatch.setattr(TokenizerModule, "_clip", inf_gradient_in_step_5)
    status, output = run_in_process(*ARGS, "optimizer.grad_clip=1.0", out=tmp_path)
    assert status == 2, output
    _assert_failed_at(tmp_path, 5, "the gradient norm", saved, 3)
