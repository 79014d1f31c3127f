"""notebooks/sweep_results.ipynb runs, every cell, through nbclient (a Jupyter kernel), from other working
directories than the repository root: its own folder and a temporary one."""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, run_cli
from tests.test_sweeps import TINY_SWEEP

NOTEBOOK = ROOT / "notebooks" / "sweep_results.ipynb"


def execute_notebook(cwd, monkeypatch, sweep, table: str) -> str:
    """Runs every cell in a fresh kernel started in ``cwd``; returns what the cells printed."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("VQBENCH_SWEEP", str(sweep))
    monkeypatch.setenv("VQBENCH_TABLE", table)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def test_notebook_runs_from_another_folder_on_finished_jobs_without_checkpoints(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    for job, (dim, psnr) in enumerate([(4, 20.5), (16, 21.25)]):
        (sweep / str(job)).mkdir(parents=True)
        record = {
            "kind": "train+eval",
            "overrides": [f"codebook.dim={dim}", "data=sample"],
            "config": {"codebook": {"dim": dim, "size": 512}},
            "metrics": {"test/psnr": psnr, "test/codebook_usage": 0.5},
        }
        (sweep / str(job) / "metrics.json").write_text(json.dumps(record))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    printed = execute_notebook(elsewhere, monkeypatch, sweep, "celeba64_vq_dim")
    assert "2 finished jobs" in printed
    assert "| 4 | 512 | 50.00% / 100.00% (-50.00) | 20.5000 / 32.2119 (-11.7119)" in printed  # the published layout
    assert "Same in every job: kind=train+eval, data=sample" in printed  # the folded constant columns
    assert "2 figures: test/psnr, test/codebook_usage" in printed
    assert "no checkpoint to show reconstructions from" in printed


@pytest.mark.slow
def test_sweep_results_notebook_runs_on_a_tiny_sweep_from_its_own_folder(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    run_cli("-m", "+sweep=celeba64_fsq", *TINY_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    printed = execute_notebook(NOTEBOOK.parent, monkeypatch, sweep, "celeba64_fsq")
    assert "2 finished jobs" in printed
    assert "| [8,8,8] | 512 |" in printed and "30.8543" in printed  # the published layout
    assert "not comparable" in printed.lower() and "no checkpoint" not in printed
