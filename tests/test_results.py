"""What a researcher sees of the results: compression figures, console, TensorBoard names and HParams, the report's
folded columns, efficiency columns, comparability marks and figures, the weights-only export, and --help."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, TINY, run_cli
from tests.test_api import TINY_MODEL, save_checkpoint
from tests.test_config import compose_cfg
from tests.test_loggers import hparams_of
from tests.test_tables import has_sweep
from vqbench.build import build_logger, build_tokenizer
from vqbench.compression import compression_figures
from vqbench.console import ADVERTISEMENT_PREFIX, tidy_console
from vqbench.published import load_table
from vqbench.report import collect, markdown_table, not_comparable
from vqbench.report import main as report_main
from vqbench.training.hparams import compared_overrides, log_final, run_name, swept_keys

# --- compression: from each quantizer's code space ---------------------------------------------------------------

#: (overrides, bits of one token position by the quantizer's definition, ids per position)
CODE_SPACES = {
    "vq": (["quantizer=vq", "codebook.size=512"], math.log2(512), 1),
    "ema": (["quantizer=ema", "codebook.size=1024"], math.log2(1024), 1),
    "fsq": (["quantizer=fsq", "quantizer.levels=[8,5,5,5]", "codebook.size=1000"], 3 * math.log2(5) + 3, 1),
    "lfq": (["quantizer=lfq", "codebook.size=512"], 9.0, 1),
    "rvq": (["quantizer=rvq", "codebook.size=256", "quantizer.num_stages=3"], 3 * 8.0, 3),
}


@pytest.mark.parametrize("name", CODE_SPACES)
def test_compression_figures_follow_the_code_space(name):
    overrides, bits, ids = CODE_SPACES[name]
    cfg = compose_cfg(["model.hidden_channels=8", "model.latent_channels=16", *overrides])  # 64x64 RGB, factor 4
    tokenizer = build_tokenizer(cfg)[0]
    figures, reason = compression_figures(tokenizer, cfg, {}, "val")
    assert reason is None
    h = w = 64 // 4
    assert figures["token_grid"] == f"{h}x{w}" and figures["tokens_per_image"] == h * w * ids
    assert figures["bits_per_token"] == pytest.approx(bits, rel=1e-12)  # the same formula, a different summation
    assert figures["bits_per_image"] == pytest.approx(h * w * bits, rel=1e-12)
    assert figures["bits_per_pixel"] == pytest.approx(h * w * bits / (64 * 64), rel=1e-12)
    assert figures["compression_ratio"] == pytest.approx(8 * 3 * 64 * 64 / (h * w * bits), rel=1e-12)


def test_a_lattice_is_charged_log2_of_its_observed_distinct_vectors_or_nothing():
    cfg = compose_cfg(["model=lattice_cnn", "quantizer=lattice", "data.resolution=32"])
    tokenizer = build_tokenizer(cfg)[0]
    assert tokenizer.quantizer.bits_per_position is None  # no finite codebook
    figures, reason = compression_figures(tokenizer, cfg, {"test/effective_codebook_size": 300.0}, "test")
    assert reason is None and figures["bits_per_token"] == pytest.approx(math.log2(300), rel=1e-12)
    assert "300 distinct token vectors" in figures["code_space"]
    figures, reason = compression_figures(tokenizer, cfg, {}, "test")
    assert figures == {} and "effective codebook size" in reason


# --- console -------------------------------------------------------------------------------------------------------


def test_tidy_console_leaves_one_handler_path_and_drops_the_tips(caplog):
    import lightning  # noqa: F401
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    root = logging.getLogger()
    added = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  (stands for Hydra's console handler)
    root.addHandler(added)
    lightning_logger = logging.getLogger("lightning")
    own = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  (what `import lightning` installs)
    lightning_logger.addHandler(own)
    try:
        tidy_console()
        assert own not in lightning_logger.handlers  # its messages now reach the console once, through the root
        with caplog.at_level(logging.INFO):
            rank_zero_info(f"{ADVERTISEMENT_PREFIX} For seamless cloud logging, try installing [something]")
            rank_zero_info("GPU available: False, used: False")
        messages = [record.getMessage() for record in caplog.records]
        assert messages == ["GPU available: False, used: False"]
    finally:
        root.removeHandler(added)
        lightning_logger.removeHandler(own)


# --- TensorBoard names and HParams ---------------------------------------------------------------------------------


def test_swept_keys_come_from_the_sweeps_multirun_yaml(tmp_path):
    multirun = {
        "hydra": {
            "overrides": {"task": ["quantizer=vq,ema,fsq", "codebook.dim=4,16,64", "data=sample", "+sweep=x"]},
            "sweeper": {"params": {"codebook.size": "512,1024", "seed": "0"}},
        }
    }
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    assert swept_keys(tmp_path) == ["quantizer", "codebook.dim", "codebook.size"]
    assert swept_keys(tmp_path / "nowhere") is None
    job = ["quantizer=ema", "codebook.dim=16", "data=sample", "+sweep=x", "codebook.size=512", "seed=0"]
    compared = compared_overrides(job, swept_keys(tmp_path))
    assert run_name(compared) == "quantizer=ema,codebook.dim=16,codebook.size=512"
    single = ["data=sample", "hydra.run.dir=x", "ckpt=a.ckpt", "+eval=true", "trainer.max_steps=3"]
    assert compared_overrides(single, None) == ["data=sample", "trainer.max_steps=3"]
    assert run_name([]) == "default"
    long = run_name([f"key{i}=value{i}" for i in range(40)])
    assert len(long.encode()) <= 200 and long != run_name([f"key{i}=value{i}" for i in range(41)])


def test_log_final_puts_the_compared_keys_and_final_metrics_in_hparams_and_the_config_in_hparams_yaml(tmp_path):
    cfg = compose_cfg([])
    logger = build_logger(cfg, tmp_path, (tmp_path, "quantizer=ema,codebook.dim=16"))
    run = tmp_path / "tensorboard" / "quantizer=ema,codebook.dim=16"
    config = {"codebook": {"size": 512, "dim": 16}, "quantizer": {"_target_": "x.EMA"}}
    log_final(logger, {"quantizer": "ema", "codebook.dim": 16}, {"val/psnr": 21.5}, step=200, config=config)
    values, metric_tags = hparams_of(run)
    assert values == {"quantizer": "ema", "codebook.dim": 16.0} and metric_tags == {"final/val/psnr"}
    events = EventAccumulator(str(run))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("final/val/psnr")] == [(200, 21.5)]
    assert yaml.safe_load((run / "hparams.yaml").read_text()) == config


@pytest.mark.slow
def test_a_sweep_names_its_tensorboard_runs_by_the_swept_values_and_aligns_validation(tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.val_check", "trainer.enable_progress"))]
    result = run_cli(
        "-m", "quantizer=vq,fsq", *tiny, "trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    console = result.stdout + result.stderr
    assert ADVERTISEMENT_PREFIX not in console
    assert console.count("GPU available:") == 2  # once per job, not twice
    assert "Training (steps)" in console and "4/4" in console  # the bar counts steps
    assert f"results: {sweep / '0'}" in console and f"results: {sweep / '1'}" in console
    assert "GPU available:" in (sweep / "0" / "run.log").read_text()  # Lightning's lines reach Hydra's log too
    for job, quantizer in enumerate(["vq", "fsq"]):
        run = sweep / "tensorboard" / f"quantizer={quantizer}"
        values, metric_tags = hparams_of(run)
        record = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert values == {"quantizer": quantizer}
        assert metric_tags == {f"final/{name}" for name in record["metrics"]}
        events = EventAccumulator(str(run))
        events.Reload()
        assert [s.step for s in events.Scalars("train/loss/total")] == [1, 2, 3, 4]
        psnr = events.Scalars("val/psnr")
        assert [s.step for s in psnr] == [2, 4]  # at the steps they follow, and the last one only once
        assert psnr[-1].value == pytest.approx(record["metrics"]["val/psnr"], rel=1e-6)
        assert [i.step for i in events.Images("val/reconstructions")] == [2, 4]
        config = yaml.safe_load((run / "hparams.yaml").read_text())
        assert config == record["config"]
        assert record["compression"]["tokens_per_image"] == 16.0  # 16x16 crops, downsampling 4
        assert record["cost"]["train"]["steps"] == 4 and record["cost"]["train"]["images_per_second"] > 0


# --- the report ----------------------------------------------------------------------------------------------------


def _job(directory: Path, overrides: list[str], metrics: dict, **extra) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    record = {"kind": "train+eval", "overrides": overrides, "metrics": metrics, **extra}
    (directory / "metrics.json").write_text(json.dumps(record))


def test_report_folds_constant_columns_and_shows_efficiency_on_request(tmp_path, capsys):
    efficiency = {"compression": {"tokens_per_image": 256.0, "bits_per_pixel": 0.5625, "compression_ratio": 42.5}}
    _job(tmp_path / "0", ["quantizer=vq", "data=sample"], {"val/psnr": 20.0, "val/l1": 0.25}, **efficiency)
    _job(tmp_path / "1", ["quantizer=fsq", "data=sample"], {"val/psnr": 21.0, "val/l1": 0.25}, **efficiency)
    lines = markdown_table(collect(tmp_path)).splitlines()
    assert lines[0] == "Same in every job: kind=train+eval, data=sample, val/l1=0.2500"
    assert lines[2:] == [
        "| job | quantizer | val/psnr |",
        "|---|---|---|",
        "| 0 | vq | 20.0000 |",
        "| 1 | fsq | 21.0000 |",
    ]
    assert report_main([str(tmp_path), "--efficiency"]) == 0
    printed = capsys.readouterr().out
    assert "tokens/image=256.0000, bits/pixel=0.5625, compression ratio=42.5000" in printed


def test_report_marks_rows_that_ran_fewer_steps_or_on_other_data_as_not_comparable(tmp_path, capsys):
    table = load_table("celeba64_vq_dim")
    data = {"make_dataset": {"_target_": "vqbench.data.sample.sample_split"}}
    celeba = {"make_dataset": {"_target_": "vqbench.data.celeba.celeba_split"}}
    metrics = {"test/psnr": 30.0}
    _job(tmp_path / "toy", [], metrics, step=3, config={"codebook": {"dim": 4, "size": 512}, "data": data})
    _job(tmp_path / "full", [], metrics, step=500_000, config={"codebook": {"dim": 8, "size": 512}, "data": celeba})
    rows = {row["job"]: row for row in collect(tmp_path)}
    assert not_comparable(rows["toy"], table) == [
        "data=sample, the table's data is celeba",
        "3 training steps, the recipe's 500,000",
    ]
    assert not_comparable(rows["full"], table) == []
    assert report_main([str(tmp_path), "--table", "celeba64_vq_dim"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith("| Comparable |")
    assert lines[4].startswith("| 4 | 512 |") and lines[4].endswith("| no (1) |")
    assert lines[5].startswith("| 8 | 512 |") and lines[5].endswith("| yes |")
    assert "(1) job toy: data=sample, the table's data is celeba; 3 training steps, the recipe's 500,000" in lines
    assert report_main([str(tmp_path), "--table", "celeba64_vq_dim", "--efficiency"]) == 0
    assert "Same in every job: kind=train+eval, test/psnr=30.0000" in capsys.readouterr().out  # the job table below
    llvq = load_table("llvq")
    epochs = {"choices": {"experiment": "llvq_celeba"}, "config": {"trainer": {"max_steps": 3, "max_epochs": 5}}}
    assert not_comparable(epochs, llvq) == ["stopped by trainer.max_steps=3, the recipe trains 5 epochs"]


def test_plot_draws_each_metric_against_the_swept_value_with_the_published_markers(tmp_path):
    from vqbench.plots import plot_results

    sweep = tmp_path / "sweep"
    measured = {(4, "vq"): 30.0, (64, "vq"): 31.0, (4, "ema"): 32.0, (64, "ema"): 33.0}
    for i, ((dim, quantizer), psnr) in enumerate(measured.items()):
        overrides = [f"quantizer={quantizer}", f"codebook.dim={dim}", "data=sample"]
        _job(sweep / str(i), overrides, {"test/psnr": psnr, "test/codebook_usage": 0.5})
    figures = plot_results(collect(sweep), load_table("celeba64_vq_ema"), tmp_path / "figures")
    assert set(figures) == {"test/psnr", "test/codebook_usage"}
    for name in ("test_psnr", "test_codebook_usage"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0
        assert (tmp_path / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    axis = figures["test/psnr"].axes[0]
    assert axis.get_xlabel() == "codebook.dim" and axis.get_xscale() == "log"  # 4 to 64: a factor of 16
    lines = {line.get_label(): line for line in axis.get_lines()}
    assert list(lines["quantizer=vq"].get_xdata()) == [4, 64] and list(lines["quantizer=vq"].get_ydata()) == [30, 31]
    assert list(lines["quantizer=ema"].get_ydata()) == [32, 33]
    table = load_table("celeba64_vq_ema")
    psnr = [c.label for c in table.metrics].index("PSNR↑")
    published = sorted(values[psnr] for _, values in table.rows)
    markers = [line for line in axis.get_lines() if line.get_marker() == "D"]
    assert sorted(float(line.get_ydata()[0]) for line in markers) == published
    usage = figures["test/codebook_usage"].axes[0]  # in the table's unit: percent
    assert list(usage.get_lines()[0].get_ydata()) == [50.0, 50.0]


def test_report_plot_writes_png_and_svg_and_draws_words_as_categories(tmp_path, capsys):
    _job(tmp_path / "0", ["quantizer=vq"], {"val/psnr": 20.0})
    _job(tmp_path / "1", ["quantizer=fsq"], {"val/psnr": 21.0})
    assert report_main([str(tmp_path), "--plot", str(tmp_path / "figures")]) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["val_psnr.png", "val_psnr.svg"]
    from vqbench.plots import plot_results

    axis = plot_results(collect(tmp_path))["val/psnr"].axes[0]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["vq", "fsq"]
    assert list(axis.get_lines()[0].get_xdata()) == [0, 1] and list(axis.get_lines()[0].get_ydata()) == [20, 21]


# --- the weights-only export ---------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    cfg = compose_cfg([*TINY_MODEL, "data.resolution=16"])
    return save_checkpoint(cfg, tmp_path / "last.ckpt")


def test_export_writes_safetensors_and_json_that_load_tokenizer_loads(checkpoint, tmp_path):
    from safetensors.torch import load_file

    from vqbench import load_tokenizer
    from vqbench.export import main as export_main

    out = tmp_path / "export"
    assert export_main([f"ckpt={checkpoint}", f"out={out}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    record = json.loads((out / "config.json").read_text())
    original = load_tokenizer(str(checkpoint))
    assert record["format"] == "vqbench-tokenizer" and record["config"] == OmegaConf.to_container(
        original.config, resolve=True
    )
    weights = load_file(out / "model.safetensors")
    assert set(weights) == set(original.tokenizer.state_dict())  # the tokenizer only: no optimizer, no EMA
    exported = load_tokenizer(str(out))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    ids = original.encode(images)
    assert torch.equal(exported.encode(images), ids)  # the same weights in the same network: bit for bit
    assert torch.equal(exported.decode(ids), original.decode(ids))
    assert export_main([f"ckpt={checkpoint}", f"out={out}"]) == 0  # an earlier export is replaced


def test_an_export_loads_from_the_hugging_face_hub_cache_offline(checkpoint, tmp_path, monkeypatch):
    """The export folder is the Hub repository: a snapshot of it in huggingface_hub's cache (what
    ``upload_folder`` then ``snapshot_download`` leave) loads with hf://OWNER/NAME without network access."""
    from vqbench import load_tokenizer
    from vqbench.export import export_tokenizer

    revision = "0" * 40
    repository = tmp_path / "hub" / "models--someone--tiny-tokenizer"
    export_tokenizer(str(checkpoint), repository / "snapshots" / revision)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    tokenizer = load_tokenizer("hf://someone/tiny-tokenizer")
    assert torch.equal(
        tokenizer.tokenizer.state_dict()["quantizer.codebook"], load_tokenizer(str(checkpoint)).tokenizer.state_dict()
        ["quantizer.codebook"]
    )  # fmt: skip


def test_export_refuses_bad_input_with_one_line(checkpoint, tmp_path, capsys):
    from vqbench.export import main as export_main

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        ([f"ckpt={checkpoint}", f"out={foreign}"], "is not empty and holds no vqbench export"),
        ([f"ckpt={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'a'}"], "does not exist"),
        ([f"ckpt={checkpoint}"], "out=... is required"),
        ([f"ckpt={checkpoint}", f"out={tmp_path / 'b'}", "use_ema=maybe"], "use_ema=maybe"),
        (["--weights"], "is not one of ckpt=PATH"),
    ]
    for arguments, message in cases:
        assert export_main(arguments) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# --- --help everywhere ---------------------------------------------------------------------------------------------


def _entry_points() -> list[str]:
    source = ROOT / "src" / "vqbench"
    modules = [
        ".".join(path.relative_to(source.parent).with_suffix("").parts).removesuffix(".__main__")
        for path in source.rglob("*.py")
        if 'if __name__ == "__main__"' in path.read_text()
    ]
    return sorted(modules)


def test_every_entry_point_answers_help_with_usage_and_status_0(capsys):
    modules = _entry_points()
    assert {"vqbench.report", "vqbench.tokenize", "vqbench.convert", "vqbench.bench", "vqbench.export"} <= set(modules)
    for name in modules:
        module = importlib.import_module(name if not name.endswith("bench") else "vqbench.bench.__main__")
        try:
            status = module.main(["--help"])
        except SystemExit as exit_:  # argparse
            status = exit_.code
        printed = capsys.readouterr().out
        assert status in (0, None), name
        assert "usage" in printed.lower() or "python -m vqbench" in printed, name


def test_run_py_help_lists_the_config_groups_their_options_and_the_common_keys():
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for group in ("quantizer", "model", "data", "loss", "logger", "experiment", "sweep"):
        folder = ROOT / "sweeps" if group == "sweep" else ROOT / "conf" / group  # the sweep group is sweeps/
        options = sorted(p.stem for p in folder.glob("*.yaml") if group != "sweep" or has_sweep(p.stem))
        assert f"{group}: {', '.join(options)}" in lines
    for key in ("trainer.max_steps=", "data.root=", "codebook.size=", "ckpt=", "hydra.run.dir="):
        assert any(line.strip().startswith(key) for line in lines), key
