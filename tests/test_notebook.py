"""The notebook's code cells run, top to bottom, on a tiny finished sweep (matplotlib without a display)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli
from tests.test_sweeps import TINY_SWEEP


@pytest.mark.slow
def test_sweep_results_notebook_runs_on_a_tiny_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("-m", "+sweep=celeba64_fsq", *TINY_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    notebook = json.loads((ROOT / "notebooks" / "sweep_results.ipynb").read_text())
    script = "\n\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    (tmp_path / "notebook.py").write_text(script)
    env = {**os.environ, "MPLBACKEND": "Agg", "VQBENCH_SWEEP": str(sweep), "VQBENCH_TABLE": "celeba64_fsq"}
    result = subprocess.run(
        [sys.executable, "notebook.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 finished jobs" in result.stdout
    assert "| [8,8,8] | 512 |" in result.stdout and "30.8543" in result.stdout  # the published layout
