"""Issue 20: one writer per run folder, and evaluations never in a training's folder.

A folder held by a live process (here: this test process, through vqbench.folder_lock) refuses a second run with
status 2 and one line naming the folder and the holder, and that run writes nothing there (no .hydra/, log,
failed.json)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli, run_in_process
from vqbench import folder_lock


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture
def held(tmp_path) -> Path:
    """A run folder this test process holds as a training would."""
    folder = tmp_path / "run"
    assert folder_lock.acquire(folder, "train")
    yield folder
    folder_lock.release(folder)


def test_a_run_into_a_folder_held_by_a_live_process_exits_2_and_writes_nothing(held, tmp_path):
    before = _files(held)
    result = run_cli("trainer.max_steps=1", f"hydra.run.dir={held}", cwd=tmp_path, check=False)
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert str(held) in error[0] and f"train pid {os.getpid()}" in error[0] and "started 20" in error[0]
    assert _files(held) == before  # no .hydra/, no run.log, no failed.json


HOLDER = """
import sys, time
from pathlib import Path
from vqbench import folder_lock
folder_lock.acquire(Path(sys.argv[1]), "train")
print("held", flush=True)
time.sleep(600)
"""


def test_a_job_into_a_folder_another_process_holds_writes_no_failure_record(tmp_path):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, output = run_in_process(*TINY, out=folder)
    finally:
        holder.kill()
        holder.wait()
    assert status == 2 and f"is in use by another run (train pid {holder.pid} on " in output, output
    assert sorted(p.name for p in folder.iterdir()) == [folder_lock.LOCK_FILE]  # no failed.json, checkpoints, logs


@pytest.mark.parametrize("marker", ["checkpoints", "lock"])
def test_an_evaluation_never_writes_into_a_training_folder(marker, tmp_path):
    training = tmp_path / "train"
    if marker == "checkpoints":  # e.g. an interrupted training: a checkpoint, no metrics.json
        (training / "checkpoints").mkdir(parents=True)
        (training / ".hydra").mkdir()
        (training / "checkpoints" / "last.ckpt").write_bytes(b"")
    else:  # a training that ended before its first checkpoint: its lock file says so
        folder_lock.acquire(training, "train")
        folder_lock.release(training)
    before = _files(training)
    for out in (training, training / "eval"):
        status, output = run_in_process("+eval=true", f"ckpt={training}/checkpoints/last.ckpt", out=out)
        assert status == 2 and f"is inside the training folder {training}" in output, output
    assert _files(training) == before


def test_a_checkpoints_folder_alone_does_not_make_a_training_folder(tmp_path):
    (tmp_path / "checkpoints").mkdir()  # e.g. a project root where evaluations go into outputs/...
    assert folder_lock.training_folder(tmp_path / "outputs" / "eval") is None


@pytest.mark.slow
def test_the_identical_command_started_twice_at_once_runs_once(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=100"]  # long enough to still run when the second has started
    command = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={out}"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / folder_lock.LOCK_FILE).is_file() or not (out / folder_lock.LOCK_FILE).read_text():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = run_cli(*args, f"hydra.run.dir={out}", cwd=tmp_path, check=False)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr
    assert (out / "metrics.json").is_file() and not (out / "failed.json").exists()
