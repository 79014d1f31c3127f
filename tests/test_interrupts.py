"""Issue 20: SIGTERM, SIGUSR1 and SIGINT end a training at the next step boundary with an atomic checkpoint and
interrupted.json, exit 128 + signal and never look finished; the same command resumes to the uninterrupted result.

The fast tests send real signals to this process (the handlers are the ones a training installs) from inside a
training step or a validation batch, so the moment is exact; the slow ones send them to a real ``python run.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli, run_in_process
from tests.test_resume import SHORT, _assert_identical
from vqbench.training.checkpoints import AtomicCheckpointIO
from vqbench.training.module import TokenizerModule


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> Path:
    """test_resume's default SHORT run, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    status, output = run_in_process(*SHORT, out=out)
    assert status == 0, output
    return out


def _checkpoint_step(out: Path) -> int:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]


def _assert_interrupted(out: Path, signum: int, step: int) -> dict:
    record = json.loads((out / "interrupted.json").read_text())
    assert record["signal"] == signal.Signals(signum).name
    assert record["exit_status"] == 128 + signum
    assert record["step"] == step == _checkpoint_step(out)
    assert "run.py" in record["resume_command"] or "pytest" in record["resume_command"]
    assert not (out / "metrics.json").exists() and not (out / "failed.json").exists()
    return record


def test_sigterm_in_a_step_saves_that_step_and_the_same_command_resumes_bit_identical(
    uninterrupted_run, tmp_path, monkeypatch
):
    original = TokenizerModule.training_step

    def signalled_in_step_7(self, images, batch_idx):
        if self.global_step == 6:  # training step 7 (not a checkpoint step: every_n_steps=3)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # forwarded twice (srun and the batch shell): ignored
        return original(self, images, batch_idx)

    monkeypatch.setattr(TokenizerModule, "training_step", signalled_in_step_7)
    status, output = run_in_process(*SHORT, out=tmp_path)
    assert status == 128 + signal.SIGTERM, output
    _assert_interrupted(tmp_path, signal.SIGTERM, 7)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the training's handlers are gone with it
    monkeypatch.setattr(TokenizerModule, "training_step", original)

    status, output = run_in_process(*SHORT, out=tmp_path)  # the same command again
    assert status == 0, output
    assert not (tmp_path / "interrupted.json").exists()
    _assert_identical(tmp_path, uninterrupted_run)


def test_sigusr1_during_a_validation_abandons_it_and_saves_the_step_before_it(
    uninterrupted_run, tmp_path, monkeypatch, caplog
):
    original = TokenizerModule.validation_step

    def signalled_in_validation(self, images, batch_idx):
        if self.global_step == 5:  # the validation after step 5 (val_check_interval=5)
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, images, batch_idx)

    monkeypatch.setattr(TokenizerModule, "validation_step", signalled_in_validation)
    status, output = run_in_process(*SHORT, out=tmp_path)
    assert status == 128 + signal.SIGUSR1, output
    assert "validation after step 5 abandoned" in caplog.text
    _assert_interrupted(tmp_path, signal.SIGUSR1, 5)
    monkeypatch.setattr(TokenizerModule, "validation_step", original)

    status, output = run_in_process(*SHORT, out=tmp_path)
    assert status == 0, output
    _assert_identical(tmp_path, uninterrupted_run)


def test_sigint_while_the_checkpoint_is_written_keeps_that_checkpoint(tmp_path, monkeypatch):
    original = AtomicCheckpointIO.save_checkpoint

    def signalled_while_saving(self, checkpoint, path, storage_options=None):
        if checkpoint["global_step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the write: noted, the write completes
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", signalled_while_saving)
    status, output = run_in_process(*SHORT, out=tmp_path)
    assert status == 128 + signal.SIGINT, output
    _assert_interrupted(tmp_path, signal.SIGINT, 3)  # that checkpoint ends the run: nothing to redo


def _train(args: list[str], out: Path, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        command, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the training ended before it was signalled"
        assert time.monotonic() < deadline, "the training did not get there in time"
        time.sleep(0.02)


def _log_has(out: Path, text: str):
    def check() -> bool:
        try:
            return text in (out / "run.log").read_text()
        except FileNotFoundError:
            return False

    return check


LONG = [*SHORT, "trainer.max_steps=40", "trainer.val_check_interval=20", "checkpoint.every_n_steps=2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signals", "where"),
    [
        ([signal.SIGTERM], "step"),
        ([signal.SIGTERM, signal.SIGTERM], "step"),
        ([signal.SIGUSR1], "step"),
        ([signal.SIGINT], "step"),
        ([signal.SIGTERM], "validation"),
        ([signal.SIGTERM], "process group"),
    ],
    ids=[
        "sigterm",
        "double-sigterm",
        "sigusr1-slurm-requeue",
        "sigint",
        "sigterm-in-validation",
        "sigterm-to-every-process-with-a-loader-worker",
    ],
)
def test_a_signalled_run_py_saves_says_so_and_resumes_to_the_uninterrupted_result(signals, where, tmp_path):
    args = {
        "validation": [*LONG, "data.make_dataset.val_length=512"],
        "process group": [*LONG, "data.num_workers=1"],  # as srun signals every process of the job step
    }.get(where, LONG)
    run_cli(*args, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    # A stand-in scontrol records the requeue that SIGUSR1 under SLURM asks for.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol.args"}\n')
    (fake_bin / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    out = tmp_path / "run"
    process = _train(args, out, env=slurm)
    try:
        if where == "validation":  # logged by the training when the validation after step 20 starts
            _wait_for(_log_has(out, "validating after step 20"), process)
        else:
            _wait_for(lambda: (out / "checkpoints" / "last.ckpt").is_file() and _checkpoint_step(out) >= 6, process)
        for signum in signals:
            if where == "process group":
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        _, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 128 + signals[0], stderr.decode()[-3000:]
    step = _checkpoint_step(out)
    record = _assert_interrupted(out, signals[0], step)
    if where == "validation":
        assert step == 20 and "validation after step 20 abandoned" in (out / "run.log").read_text()
    else:
        assert step >= 6
    if signals[0] == signal.SIGUSR1:
        assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
        assert record["slurm"] == "requeued SLURM job 4242"
    else:
        assert not (tmp_path / "scontrol.args").exists()
    run_cli(*args, f"hydra.run.dir={out}", cwd=tmp_path)  # the same command again
    assert "resuming the interrupted job" in (out / "run.log").read_text()
    assert not (out / "interrupted.json").exists()
    _assert_identical(out, tmp_path / "reference", steps=40)
