import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

import vqbench.sweep_configs  # noqa: F401  (the `sweep` group for every test that composes a config)

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


def run_cli(*args: str, cwd: Path, check: bool = True, preexec_fn=None) -> subprocess.CompletedProcess:
    """Runs ``python run.py ARGS`` from the repository in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"run.py {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def run_in_process(*overrides: str, out: Path, multirun: bool = False) -> tuple[int, str]:
    """What ``python run.py OVERRIDES hydra.run.dir=OUT`` does (or one job of ``-m``), in this process: no
    interpreter start-up, but also no Hydra log file. Returns (exit status, printed output)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    from vqbench.cli import run

    printed = io.StringIO()
    status = 0
    with redirect_stdout(printed), redirect_stderr(printed):
        try:
            run(task)
        except SystemExit as exit_:
            status = exit_.code
    return status, printed.getvalue()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny default training, shared by the tests that inspect what a training writes."""
    out = tmp_path_factory.mktemp("train")
    run_cli(*TINY, f"hydra.run.dir={out}", cwd=out)
    return out
