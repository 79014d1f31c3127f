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
#: What a copy of the tree needs to train and to run the contract tests.
COPIED = ["conf", "src", "sweeps", "run.py", "pyproject.toml"]
CONTRACT_TESTS = ["tests/__init__.py", "tests/conftest.py", "tests/test_quantizer_contract.py"]
CONTRACT_TESTS += ["tests/test_dataset_contract.py"]


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

    tests = ["-m", "pytest", "-p", "no:cacheprovider", "-q", *CONTRACT_TESTS[2:], "-k", "toy"]
    result = _run(tests, cwd=tree)
    assert re.search(r"\b\d+ passed\b", result.stdout) and "skipped" not in result.stdout, result.stdout
