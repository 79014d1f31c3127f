"""run.py as a user runs it: subprocesses on tiny settings, checking the files they write."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_cli
from tests.recomputed import assert_metrics_match, reference_metrics
from vqbench.report import main as report_main

pytestmark = pytest.mark.slow


def _metrics(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text())


def test_training_writes_checkpoint_tensorboard_and_metrics(trained_run):
    record = _metrics(trained_run)
    assert record["kind"] == "train" and record["step"] == 3
    assert set(record["metrics"]) == {
        "val/psnr",
        "val/ssim",
        "val/l1",
        "val/codebook_usage",
        "val/perplexity",
        "val/effective_codebook_size",
        "val/used_codes",
        "val/unused_codes",
        "train/codebook_usage_recent",
        "train/dead_codes",
    }
    # the final validation ran the weights of last.ckpt over the 8 validation crops
    assert_metrics_match(record["metrics"], reference_metrics(trained_run / "checkpoints" / "last.ckpt", "val"))
    assert record["config"]["codebook"] == {
        "size": 512,
        "dim": 64,
        "l2_norm": False,
        "ema_update_rule": "standard",
        "init": "uniform",
        "kmeans_iterations": 10,
        "kmeans_batches": 1,
    }

    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3
    embedded = yaml.safe_load(checkpoint["vqbench_config"])
    assert embedded["model"]["latent_channels"] == 16 and embedded["data"]["resolution"] == 16

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss/total", "train/loss/reconstruction", "train/loss/commitment", "train/loss/codebook"} <= set(
        tags["scalars"]
    )
    assert {"val/psnr", "val/ssim", "val/codebook_usage", "val/perplexity"} <= set(tags["scalars"])
    assert "val/reconstructions" in tags["images"]
    assert "val/code_usage" in tags["histograms"]


def test_eval_needs_only_the_checkpoint(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_cli("+eval=true", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    record = _metrics(tmp_path)
    assert record["kind"] == "eval"
    assert record["checkpoint"] == str(ckpt.resolve())
    assert record["protocol"]["images"] == 12 and record["protocol"]["split"] == "test"
    assert set(record["metrics"]) == {
        "test/psnr",
        "test/ssim",
        "test/l1",
        "test/codebook_usage",
        "test/perplexity",
        "test/effective_codebook_size",
        "test/used_codes",
        "test/unused_codes",
    }
    assert_metrics_match(record["metrics"], reference_metrics(ckpt, "test"))
    assert record["config"]["data"]["resolution"] == 16  # taken from the checkpoint, not the base config
    assert "16x16" in record["unavailable"]["lpips"]  # too small for AlexNet, said so instead of a number
    for name, value in record["metrics"].items():
        assert f"{name}" in result.stdout and f"{value:.6f}" in result.stdout
    assert result.stdout.rstrip().endswith(f"results: {tmp_path}")  # where it wrote them
    assert record["compression"]["tokens_per_image"] == 16 and record["cost"]["test"]["images"] == 12


def test_same_command_twice_gives_the_same_metrics(trained_run, tmp_path):
    run_cli(*TINY, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert _metrics(tmp_path)["metrics"] == _metrics(trained_run)["metrics"]


def test_sweep_report_and_eval_of_a_non_default_quantizer(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("-m", "quantizer=vq,ema,fsq", "codebook.dim=4", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    jobs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert [p.name for p in jobs] == ["0", "1", "2"]
    assert [_metrics(p)["config"]["quantizer"]["_target_"].rsplit(".", 1)[1] for p in jobs] == [
        "VectorQuantizer",
        "EMAVectorQuantizer",
        "FSQ",
    ]

    out = tmp_path / "table.md"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = out.read_text().splitlines()
    assert text[0].startswith("Same in every job: kind=train, codebook.dim=4, ")  # constant columns, folded
    lines = [line for line in text if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "quantizer" in header and "codebook.dim" not in header and "val/psnr" in header
    assert len(lines) == 2 + 3
    psnr_column = header.index("val/psnr")
    for line, job in zip(lines[2:], jobs, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[psnr_column]) == pytest.approx(_metrics(job)["metrics"]["val/psnr"], abs=1e-4)

    (jobs[1] / "metrics.json").unlink()  # a failed or unfinished job
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = out.read_text()
    assert len([line for line in text.splitlines() if line.startswith("|")]) == 2 + 2
    assert "- 1: not finished" in text  # listed below the table, not dropped

    eval_dir = tmp_path / "eval_fsq"
    run_cli("+eval=true", f"ckpt={jobs[2] / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={eval_dir}", cwd=tmp_path)
    # the FSQ paper's levels for 512 codes, recorded with the size they give
    config = _metrics(eval_dir)["config"]
    assert config["quantizer"]["levels"] == [8, 8, 8] and config["codebook"]["size"] == 512
    fsq_checkpoint = jobs[2] / "checkpoints" / "last.ckpt"
    assert_metrics_match(_metrics(eval_dir)["metrics"], reference_metrics(fsq_checkpoint, "test"))


def _assert_clean_error(result, *fragments):
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def test_unknown_quantizer_lists_the_choices(tmp_path):
    result = run_cli("quantizer=nope", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    _assert_clean_error(result, "quantizer/nope", "Available options", "ema", "fsq", "vq")


def test_invalid_codebook_dim_is_named(tmp_path):
    result = run_cli("codebook.dim=0", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    _assert_clean_error(result, "codebook.dim must be a positive integer, got 0")
    assert not (tmp_path / "metrics.json").exists()


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    missing = run_cli("+eval=true", "ckpt=/no/such/last.ckpt", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    _assert_clean_error(missing, "ckpt=/no/such/last.ckpt does not exist")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    result = run_cli("+eval=true", f"ckpt={corrupt}", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    _assert_clean_error(result, f"ckpt={corrupt} cannot be read")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = run_cli("+eval=true", f"ckpt={foreign}", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    _assert_clean_error(result, "is not a vqbench checkpoint")


def test_eval_refuses_to_override_the_trained_architecture(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_cli(
        "+eval=true", f"ckpt={ckpt}", "codebook.dim=8", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False
    )
    _assert_clean_error(result, "'codebook.dim=8': the codebook is fixed by the checkpoint")


def test_eval_refuses_a_training_setting(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    result = run_cli(
        "+eval=true", f"ckpt={ckpt}", "trainer.max_steps=5", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False
    )
    _assert_clean_error(result, "'trainer.max_steps=5' does not apply to evaluation", "trainer.precision")
    assert result.returncode == 2 and not (tmp_path / "metrics.json").exists()


def test_fsq_levels_and_codebook_size_given_together_must_agree(tmp_path):
    overrides = ("quantizer=fsq", "quantizer.levels=[8,5,5,5]", "codebook.size=1024", f"hydra.run.dir={tmp_path}")
    result = run_cli(*overrides, *TINY, cwd=tmp_path, check=False)
    _assert_clean_error(result, "quantizer.levels=[8,5,5,5] give 1000 codes but codebook.size=1024")
    assert result.returncode == 2 and not (tmp_path / "metrics.json").exists()


def test_every_quantizer_trains_through_run_py_and_the_lattice_evaluates(tmp_path):
    names = ["sfsq", "lfq", "simvq", "lattice", "dense_lattice", "gumbel", "rvq"]
    sweep = tmp_path / "all"
    run_cli("-m", f"quantizer={','.join(names)}", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    records = {int(p.parent.name): _metrics(p.parent) for p in sweep.rglob("metrics.json")}
    assert sorted(records) == list(range(len(names)))
    for index, name in enumerate(names):
        assert records[index]["overrides"][0] == f"quantizer={name}"
        # every quantizer's validation metrics, recomputed from its checkpoint (distinct R-vectors for the rvq,
        # distinct lattice vectors, no usage for the lattice, whose set of tokens is unbounded)
        expected = reference_metrics(sweep / str(index) / "checkpoints" / "last.ckpt", "val")
        assert_metrics_match(records[index]["metrics"], expected)
        assert ("val/codebook_usage" in expected) == (name not in ("lattice", "dense_lattice"))

    lattice_job = sweep / str(names.index("lattice"))
    eval_dir = tmp_path / "eval_lattice"
    lattice_ckpt = lattice_job / "checkpoints" / "last.ckpt"
    run_cli("+eval=true", f"ckpt={lattice_ckpt}", f"hydra.run.dir={eval_dir}", cwd=tmp_path)
    metrics = _metrics(eval_dir)["metrics"]
    assert set(metrics) == {"test/psnr", "test/ssim", "test/l1", "test/effective_codebook_size"}
    assert_metrics_match(metrics, reference_metrics(lattice_ckpt, "test"))


def test_l2_codes_in_the_seed_convention_with_entropy_regularisation(tmp_path):
    overrides = ["codebook.l2_norm=true", "quantizer.l2_norm_mode=seed", "quantizer.entropy_weight=0.1"]
    run_cli(*overrides, *TINY, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert "train/loss/entropy" in events.Tags()["scalars"]
    assert _metrics(tmp_path)["config"]["quantizer"]["l2_norm_mode"] == "seed"


def test_non_finite_loss_stops_with_a_clear_error_and_no_metrics(tmp_path):
    result = run_cli(
        "optimizer.lr=1e30", *TINY, "trainer.max_steps=6", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False
    )
    _assert_clean_error(result, "became non-finite at step", "optimizer.lr")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_issue_24_quantizers_and_options_train_through_run_py(tmp_path):
    """quantizer=ibq, ibq_seed_voken and bsq, and vq with the rotation trick, k-means init and dead-code restart:
    each trains, and its validation metrics are recomputed from its checkpoint (the k-means flag and usage counts
    are in it)."""
    sweep = tmp_path / "new"
    run_cli("-m", "quantizer=ibq,ibq_seed_voken,bsq", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    options = ["quantizer.rotation_trick=true", "codebook.init=kmeans", "quantizer.dead_code_threshold=0.5"]
    run_cli(*options, *TINY, f"hydra.run.dir={tmp_path / 'vq'}", cwd=tmp_path)
    jobs = [sweep / str(i) for i in range(3)] + [tmp_path / "vq"]
    for job in jobs:
        expected = reference_metrics(job / "checkpoints" / "last.ckpt", "val")
        assert_metrics_match(_metrics(job)["metrics"], expected)
    assert bool(
        torch.load(jobs[-1] / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"][
            "tokenizer.quantizer.kmeans.done"
        ]
    )
