"""Issue 20, item 7: files vqbench writes respect the umask (0o666 & ~umask), like any file a program creates;
mkstemp's 0o600 must not leak through the atomic writers (vqbench.permissions)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from vqbench.convert import _save
from vqbench.permissions import current_umask
from vqbench.results import write_failure, write_metrics
from vqbench.tokenize import _create_once, _write_json
from vqbench.training.checkpoints import AtomicCheckpointIO


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_results_exports_checkpoints_and_conversions_respect_the_umask(umask, tmp_path):
    expected = 0o666 & ~umask
    written = [
        write_metrics(tmp_path / "run", {"metrics": {"psnr": 20.0}}),
        write_failure(tmp_path / "run", {"error": "x"}),
    ]
    _create_once(tmp_path / "index.jsonl", lambda tmp: tmp.write_text("{}\n"))
    _write_json(tmp_path / "metadata.json", {"complete": True})
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, tmp_path / "checkpoints" / "last.ckpt")
    _save({"state_dict": {}}, tmp_path / "converted.ckpt")
    written += [tmp_path / name for name in ("index.jsonl", "metadata.json", "checkpoints/last.ckpt", "converted.ckpt")]
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in written} == {
        str(p.relative_to(tmp_path)): oct(expected) for p in written
    }
