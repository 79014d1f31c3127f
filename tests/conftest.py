import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A narrow SimpleCNN trained for 3 steps, whatever the data.
TINY_TRAINING = [
    "model.hidden_channels=8",
    "model.latent_channels=16",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]

#: Overrides that shrink a training to seconds on a CPU: 16x16 crops, narrow SimpleCNN, 3 steps.
TINY = [
    "data.resolution=16",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "data.make_dataset.train_length=16",
    "data.make_dataset.val_length=8",
    "data.make_dataset.test_length=12",
    *TINY_TRAINING,
]


def run_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``python run.py ARGS`` from the repository in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"run.py {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny default training, shared by the tests that inspect what a training writes."""
    out = tmp_path_factory.mktemp("train")
    run_cli(*TINY, f"hydra.run.dir={out}", cwd=out)
    return out
