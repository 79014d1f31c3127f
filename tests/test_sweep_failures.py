"""Issue 12: a sweep outlives its failed jobs (failed.json, a summary, a non-zero exit, retries of only the failed and
unfinished jobs on a re-run, listed by the report), and the failures that only run.py itself can show."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, run_cli, run_in_process
from vqbench.data.fixtures import write_png_folder
from vqbench.report import main as report_main
from vqbench.results import read_metrics, write_failure
from vqbench.sweep_callbacks import FailedJobsSummary
from vqbench.training.module import TokenizerModule


def _record(job: Path, name: str) -> dict:
    return json.loads((job / name).read_text())


# --- in this process: what a failing job of a multirun records ---------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "out of memory at step 2: CUDA"),
        (ValueError("a bug"), 1, "ValueError: a bug"),
    ],
)
def test_a_failing_multirun_job_records_failed_json_and_returns(failure, status, message, tmp_path, monkeypatch):
    def fail_at_step_2(self, images, batch_idx):
        if self.global_step == 2:
            raise failure
        return original(self, images, batch_idx)

    original = TokenizerModule.training_step
    monkeypatch.setattr(TokenizerModule, "training_step", fail_at_step_2)
    code, output = run_in_process(*TINY, out=tmp_path, multirun=True)
    assert code == 0  # returned: the launcher goes on with the next job
    record = _record(tmp_path, "failed.json")
    assert record["exit_status"] == status and record["step"] == 2 and record["error"].startswith(message)
    assert record["overrides"] == TINY and record["kind"] == "train"
    assert f"error: job {tmp_path} failed: {message}" in output
    assert not (tmp_path / "metrics.json").exists()


def test_the_nan_guard_records_its_step(tmp_path):
    code, output = run_in_process(*TINY, "optimizer.lr=1e30", "trainer.max_steps=6", out=tmp_path, multirun=True)
    record = _record(tmp_path, "failed.json")
    assert record["exit_status"] == 2 and "the training loss became non-finite" in record["error"]
    assert record["step"] == int(record["error"].split(" at step ")[1].split(";")[0])


def test_the_summary_lists_this_sweeps_failures_and_sets_the_exit_status(tmp_path, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    write_failure(tmp_path / "0", {"error": "old failure", "exit_status": 1, "step": 3, "overrides": ["a=0"]})
    summary = FailedJobsSummary()
    summary.on_multirun_start(config)
    summary.on_multirun_end(config)  # nothing failed during this sweep
    assert capsys.readouterr().err == ""
    write_failure(
        tmp_path / "2", {"error": "codebook.dim must be ...", "exit_status": 2, "step": None, "overrides": []}
    )
    with pytest.raises(SystemExit) as exit_:
        summary.on_multirun_end(config)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / '2'} (): codebook.dim must be ..." in err and "old failure" not in err
    write_failure(tmp_path / "0", {"error": "CUDA out of memory", "exit_status": 1, "step": 7, "overrides": ["a=0"]})
    with pytest.raises(SystemExit) as exit_:
        summary.on_multirun_end(config)
    assert exit_.value.code == 1  # not every failure is a user error
    assert f"{tmp_path / '0'} (a=0) at step 7: CUDA out of memory" in capsys.readouterr().err


# --- run.py ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    good = write_png_folder(tmp_path / "good", count=12, size=32)
    bad = write_png_folder(tmp_path / "bad", count=12, size=32)
    seventh = sorted(bad.rglob("*.png"))[6]
    seventh.write_bytes(seventh.read_bytes()[:200])
    return good, bad


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_a_sweep_outlives_its_failed_jobs_and_a_rerun_retries_only_those(launcher, folders, tmp_path):
    good, bad = folders
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "data=folder",
        f"data.root={good},{bad}",
        "optimizer.lr=4e-4,-1",
        *TINY[:3],  # 16x16 images at batch 4
        *[o for o in TINY if o.startswith(("model.", "trainer."))],
        "data.num_workers=0",
        f"hydra.sweep.dir={sweep}",
    ]
    if launcher == "parallel":
        args.append("hydra/launcher=parallel")
    result = run_cli(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    jobs = {int(p.name): p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}
    assert sorted(jobs) == [0, 1, 2, 3]  # good/4e-4, good/-1, bad/4e-4, bad/-1: every job ran
    assert (jobs[0] / "metrics.json").is_file() and not (jobs[0] / "failed.json").exists()
    errors = {n: _record(jobs[n], "failed.json")["error"] for n in (1, 2, 3)}
    assert errors[1].startswith("optimizer.lr must be a positive number") and errors[3] == errors[1]
    assert errors[2].startswith("cannot decode image") and str(sorted(bad.rglob("*.png"))[6]) in errors[2]
    assert "error: 3 job(s) of the sweep" in result.stderr
    for n in (1, 2, 3):
        assert f"{jobs[n]} (" in result.stderr and errors[n] in result.stderr
    assert report_main([str(sweep)]) == 0
    if launcher == "parallel":
        return
    finished = (jobs[0] / "metrics.json").read_text()
    again = run_cli(*args, cwd=tmp_path, check=False)  # the same command: only the failed jobs run again
    assert again.returncode == 2 and again.stdout.count("skipped (already finished)") == 1
    assert (jobs[0] / "metrics.json").read_text() == finished
    assert all((jobs[n] / "failed.json").is_file() for n in (1, 2, 3))
    assert "error: 3 job(s) of the sweep" in again.stderr


@pytest.mark.slow
def test_report_lists_failed_jobs_beside_the_table(tmp_path, capsys):
    run_cli(*TINY, f"hydra.run.dir={tmp_path / 'sweep' / '0'}", cwd=tmp_path)
    write_failure(tmp_path / "sweep" / "1", {"error": "the training loss became nan", "step": 40, "overrides": ["x=1"]})
    (tmp_path / "sweep" / "1" / ".hydra").mkdir()
    (tmp_path / "sweep" / "2" / ".hydra").mkdir(parents=True)  # started, never finished
    assert report_main([str(tmp_path / "sweep")]) == 0
    text = capsys.readouterr().out
    table, _, below = text.partition("Jobs not in the table (2):")
    assert table.count("\n| 0 |") == 1
    assert "- 1 (x=1): failed at step 40: the training loss became nan" in below
    assert "- 2: not finished" in below
    assert read_metrics(tmp_path / "sweep" / "0" / "metrics.json")["step"] == 3


@pytest.mark.slow
def test_run_py_refuses_an_unwritable_output_folder_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    for mode in ([f"hydra.run.dir={tmp_path}/a_file/run"], ["-m", f"hydra.sweep.dir={tmp_path}/a_file/sweep"]):
        result = run_cli(*mode, *TINY, cwd=tmp_path, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"error: cannot write into the output folder {tmp_path}/a_file" in result.stderr


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    # RLIMIT_FSIZE makes every write past 400 kB fail (EFBIG), as a full disk does (ENOSPC): the real write path.
    run_cli(*TINY, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    previous = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    (tmp_path / "metrics.json").rename(tmp_path / "first_metrics.json")

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    result = run_cli(
        *TINY,
        "trainer.max_steps=6",
        f"ckpt={ckpt}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert (
        f"error: cannot write the checkpoint {ckpt} (File too large); the previous checkpoint is kept" in result.stderr
    )
    assert ckpt.read_bytes() == previous and not list(tmp_path.glob("checkpoints/.*partial*"))
    assert not (tmp_path / "metrics.json").exists()
