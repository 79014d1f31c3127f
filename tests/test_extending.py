"""docs/extending.md, followed literally: its example files, copied into a copy of the tree, train and pass the
contract tests without any other file being edited."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
#: A fenced block whose first line is ``# file: PATH``: an example file, PATH relative to the repository root.
BLOCK = re.compile(r"```(?:python|yaml)\n# file: (?P<path>\S+)\n(?P<body>.*?)```", re.DOTALL)
EXAMPLES = ["src/vqbench/quantizers/toy.py", "conf/quantizer/toy.yaml", "src/vqbench/data/toy.py", "conf/data/toy.yaml"]
EXAMPLES += ["sweeps/imagenet64_vq_example.yaml"]
#: The example table (a sweep and its published numbers in one file).
TABLE = "imagenet64_vq_example"
#: What a copy of the tree needs to train and to run the contract tests.
COPIED = ["conf", "src", "sweeps", "run.py", "pyproject.toml"]
CONTRACT_TESTS = ["tests/__init__.py", "tests/conftest.py", "tests/test_quantizer_contract.py"]
CONTRACT_TESTS += ["tests/test_dataset_contract.py", "tests/test_tables.py"]


def example_files() -> dict[str, str]:
    """{path: content} of every example file of docs/extending.md (the ``# file:`` line included, as users copy it)."""
    return {m["path"]: f"# file: {m['path']}\n{m['body']}" for m in BLOCK.finditer(DOC.read_text())}


def test_the_doc_gives_each_example_as_a_complete_file_that_is_not_in_the_tree():
    files = example_files()
    assert sorted(files) == sorted(EXAMPLES)
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")
        assert not (ROOT / path).exists(), f"{path} is in the tree: the doc's example would not be what is tested"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.mark.slow
def test_the_toy_quantizer_and_dataset_of_the_doc_train_and_pass_the_contract_tests(tmp_path):
    tree = tmp_path / "vqbench"
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, tree / name)
    for name in CONTRACT_TESTS:
        (tree / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    for path, text in example_files().items():
        (tree / path).write_text(text)

    out = tmp_path / "run"
    tiny = ["codebook.size=64", "codebook.dim=8", "model.hidden_channels=8", "model.latent_channels=16"]
    tiny += ["data.resolution=16", "data.batch_size=4", "data.eval_batch_size=8", "data.make_dataset.length=8"]
    tiny += ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"]
    tiny += ["metrics.lpips=false", "metrics.rfid=false"]
    _run(["run.py", "quantizer=toy", "data=toy", *tiny, f"hydra.run.dir={out}"], cwd=tree)
    record = json.loads((out / "metrics.json").read_text())
    assert record["kind"] == "train" and record["step"] == 2
    assert math.isfinite(record["metrics"]["val/psnr"])
    assert 0 < record["metrics"]["val/codebook_usage"] <= 1

    tests = ["-m", "pytest", "-p", "no:cacheprovider", "-v", *CONTRACT_TESTS[2:], "-k", f"toy or {TABLE}"]
    result = _run(tests, cwd=tree)
    assert re.search(r"\b\d+ passed\b", result.stdout) and "SKIPPED" not in result.stdout, result.stdout
    assert f"test_every_table_is_reproduced_by_its_sweep[{TABLE}] PASSED" in result.stdout

    # the table: its sweep at tiny scale (every row a job), then the report in the table's layout
    sweep = tmp_path / "sweep"
    tiny = ["data=sample", "data.resolution=16", "data.batch_size=2", "data.eval_batch_size=8"]
    tiny += ["data.make_dataset.train_length=8", "data.make_dataset.val_length=4", "data.make_dataset.test_length=4"]
    tiny += ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    tiny += ["trainer.enable_progress_bar=false", "metrics.lpips=false", "metrics.rfid=false"]
    tiny += ["performance.compile=false"]
    _run(["run.py", "-m", f"+sweep={TABLE}", *tiny, f"hydra.sweep.dir={sweep}"], cwd=tree)
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert sorted((r["config"]["codebook"]["dim"], r["config"]["codebook"]["size"]) for r in records) == [
        (8, 2048),
        (64, 512),
    ]
    assert all("published" not in r["config"] and "rows" not in r["config"] for r in records)
    report = _run(["-m", "vqbench.report", str(sweep), "--table", TABLE], cwd=tree).stdout
    assert "**VQVAE (ImageNet 64x64), two of its rows**" in report
    for record in records:  # each job is its published row, its measured PSNR beside the published one
        dim, size = record["config"]["codebook"]["dim"], record["config"]["codebook"]["size"]
        published = {64: "26.8890", 8: "27.6575"}[dim]
        psnr = f"{record['metrics']['test/psnr']:.4f} / {published}"
        assert re.search(rf"^\| {dim} \| {size} \| [^|]+ \| {re.escape(psnr)} ", report, re.MULTILINE), report


def test_the_table_of_the_doc_is_found_in_a_sweeps_folder_and_passes_the_table_contract(tmp_path):
    """The doc's table file, alone in a sweeps folder: discovered, registered, and its contract holds (the sweep
    composes, every job; its key columns are config keys; its published rows are the jobs)."""
    from tests.test_tables import config_store_restored, contract_problems, sweep_jobs
    from vqbench.published import table_names
    from vqbench.sweep_configs import register_sweeps

    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / f"{TABLE}.yaml").write_text(example_files()[f"sweeps/{TABLE}.yaml"])
    assert table_names(folder) == [TABLE]
    with config_store_restored():  # the doc's sweep is registered for this test only
        assert f"sweep/{TABLE}_rows/d8_k2048" in register_sweeps(folder)
        assert len(sweep_jobs(TABLE)) == 2
        assert contract_problems(TABLE, folder) == []
