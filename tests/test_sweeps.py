"""One sweep per published table, resuming when re-run, and the report in the published layout."""

import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import run_cli
from tests.test_config import CONF
from tests.test_tables import has_sweep, sweep_jobs
from vqbench.published import load_table, table_names
from vqbench.report import main as report_main

ROOT = CONF.parent
#: Every published table that has a sweep, found in sweeps/ (vqbench.published): no list to keep.
TABLES = [name for name in table_names() if has_sweep(name)]


def compose_sweep(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+sweep={name}", *overrides], return_hydra_config=True)


def test_one_sweep_per_published_table_and_each_cites_its_source():
    assert "celeba64_fsq" in TABLES and "common" not in TABLES  # found in sweeps/, not listed
    for name in TABLES:
        lines = (ROOT / "sweeps" / f"{name}.yaml").read_text().splitlines()
        assert lines[1].startswith("# Reproduces:"), name
        repository = load_table(name).source.split(",")[0].strip()  # owner/name of the published table's source
        assert repository in " ".join(lines[1:3]), f"{name}: the header does not name {repository}"
        cfg = compose_sweep(name)
        assert cfg.report_table == name
        assert cfg.evaluate_after_training and cfg.skip_finished
        assert cfg.hydra.sweep.dir == f"multirun/sweeps/{name}"  # fixed, so the same command resumes
        assert cfg.hydra.sweeper.params, name


def test_celeba_sweeps_run_the_full_published_recipe():
    for name in [t for t in TABLES if t.startswith("celeba64") and t != "celeba64_simvq"]:  # the 07352b4 tables
        cfg = compose_sweep(name)
        assert cfg.trainer.max_steps == 500_000 and cfg.data.batch_size == 256 and cfg.optimizer.lr == 4e-4, name
        # the table's evaluation protocol: usage over every test token, piqa's Gaussian SSIM
        assert cfg.hydra.runtime.choices.data == "celeba" and cfg.metrics.usage_window is None, name
        assert cfg.metrics.ssim_window == "gaussian" and cfg.model.residual_skip == "relu", name
    assert compose_sweep("celeba64_vq_l2").quantizer.l2_norm_mode == "seed"
    assert compose_sweep("celeba64_vq_entropy").quantizer.codebook_entropy_epsilon == 1e-5
    assert compose_sweep("celeba64_lfq").quantizer.codebook_entropy_epsilon == 1e-5
    rows = compose_sweep("celeba64_fsq").hydra.sweeper.params["sweep/celeba64_fsq_rows"].split(",")
    assert set(_row_names("celeba64_fsq")) == set(rows)
    for row in rows:  # the original maps the encoder straight to len(levels) channels: FSQ projects nothing
        # a multirun job lists the swept row before +sweep=...; the row must win over the experiment either way
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            fsq = compose(config_name="config", overrides=[f"sweep/celeba64_fsq_rows={row}", "+sweep=celeba64_fsq"])
        assert fsq.quantizer._target_.endswith("FSQ") and fsq.codebook.dim == len(fsq.quantizer.levels)
        assert "-".join(map(str, fsq.quantizer.levels)) == row
    params = compose_sweep("celeba64_vq_dim").hydra.sweeper.params
    assert params["codebook.dim"] == "4,8,16,32,64"
    imagenet = compose_sweep("imagenet128_fsq")
    assert imagenet.trainer.max_steps == 500_400 and imagenet.hydra.runtime.choices.data == "imagenet"
    rows = imagenet.hydra.sweeper.params["sweep/imagenet128_fsq_rows"].split(",")
    assert len(rows) * 2 == len(load_table("imagenet128_fsq").rows)  # x {fp32, bf16}
    assert set(_row_names("imagenet128_fsq")) == set(rows)


def test_tables_of_351d29d_run_its_full_recipe_and_measure_as_its_evaluate_py():
    """The ImageNet-64 tables and the CelebA SimVQ table (visual-tokenizer-pytorch ff3c255 .. 351d29d): the same
    SimpleCNN recipe, measured with scikit-image's SSIM (metrics/ssim.py from 541af4e on) over every test token."""
    names = [t for t in TABLES if t.startswith("imagenet64")] + ["celeba64_simvq"]
    composed = {name: compose_sweep(name) for name in names}
    for name, cfg in composed.items():
        assert cfg.trainer.max_steps == 500_000 and cfg.data.batch_size == 256 and cfg.optimizer.lr == 4e-4, name
        assert cfg.optimizer.betas == [0.9, 0.999] and cfg.optimizer.schedule == "constant", name
        assert cfg.metrics.ssim_window == "uniform" and cfg.metrics.usage_window is None, name
        assert cfg.hydra.runtime.choices.model == "simple_cnn" and cfg.model.residual_skip == "relu", name
        if name.startswith("imagenet64"):
            # utils/data.py with crop: random: random_crop_arr and flips for train, center_crop_arr for val
            assert cfg.hydra.runtime.choices.data == "imagenet" and cfg.data.resolution == 64, name
            assert cfg.data.make_dataset.crop == "adm" and cfg.data.flip, name
    choices = {name: cfg.hydra.runtime.choices.quantizer for name, cfg in composed.items()}
    assert choices == {
        "imagenet64_vq": "vq",
        "imagenet64_fsq": "fsq",
        "imagenet64_lfq": "lfq",
        "imagenet64_simvq": "simvq",
        "imagenet64_ibq": "ibq",
        "celeba64_simvq": "simvq",
    }
    vq = composed["imagenet64_vq"]
    assert vq.quantizer.l2_norm_mode == "seed" and vq.quantizer.codebook_entropy_epsilon == 1e-5
    assert composed["imagenet64_lfq"].quantizer.codebook_entropy_epsilon == 1e-5
    ibq = composed["imagenet64_ibq"].quantizer  # configs/imagenet64/ibqvae.yaml and train_vqvae.py's loss
    weights = (ibq.codebook_weight, ibq.double_quant_weight, ibq.commitment_weight, ibq.entropy_weight)
    assert weights == (1, 1, 0.25, 0.1)  # loss_vq = codebook + double quant, coef_commit 0.25, coef_entropy 0.1
    # each row file composes to its published row, whatever the order of the job's overrides
    for name in ("imagenet64_vq", "imagenet64_fsq", "imagenet64_lfq"):
        _rows_compose_to_the_published_rows(name, f"{name}_rows", composed[name])


def _row_names(name: str) -> list[str]:
    """The rows of sweeps/NAME.yaml (its ``rows:``: the options of the group sweep/NAME_rows)."""
    return list(yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())["rows"])


def _rows_compose_to_the_published_rows(name: str, group: str, sweep_cfg) -> None:
    """Each entry of the sweep's ``rows:`` composes to one published row's key cells, and the rows cover the
    published rows (a multirun job lists the row before +sweep=NAME; the first row is also composed after it: the row
    must win either way). FSQ: codebook.dim = len(levels), size = their product; LFQ: size = 2^dim."""
    rows = sweep_cfg.hydra.sweeper.params[f"sweep/{group}"].split(",")
    assert set(_row_names(name)) == set(rows), name
    table = load_table(name)
    matched = [i for i, column in enumerate(table.keys) if column.key is not None]
    published = {tuple(str(keys[i]) for i in matched) for keys, _ in table.rows}
    composed = set()
    orders = [(row, [f"sweep/{group}={row}", f"+sweep={name}"]) for row in rows]
    orders.append((rows[0], [f"+sweep={name}", f"sweep/{group}={rows[0]}"]))
    for row, overrides in orders:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
        cells = []
        for i in matched:
            value = cfg
            for part in table.keys[i].key.split("."):
                value = value[part]
            cells.append(str(value))
        composed.add(tuple(cells))
        codebook, quantizer = cfg["codebook"], cfg["quantizer"]
        if name == "imagenet64_fsq":
            assert codebook["dim"] == len(quantizer["levels"]), row
            assert codebook["size"] == math.prod(quantizer["levels"]), row
        if name == "imagenet64_lfq":
            assert codebook["size"] == 2 ** codebook["dim"], row
    assert composed == published, name


def test_launcher_configs_compose():
    slurm = compose_sweep("celeba64_lfq", ["hydra/launcher=slurm"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1
    parallel = compose_sweep("celeba64_lfq", ["hydra/launcher=parallel"]).hydra.launcher
    assert parallel._target_.endswith("JoblibLauncher") and parallel.n_jobs == 2


# --- at tiny scale through run.py ------------------------------------------------------------------------------------

TINY_SWEEP = [
    "data=sample",
    "data.resolution=16",
    "data.batch_size=2",
    "data.eval_batch_size=8",
    "data.make_dataset.train_length=16",  # the llvq sweep counts tokens over train + val
    "data.make_dataset.val_length=8",
    "data.make_dataset.test_length=8",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "metrics.lpips=false",
    "metrics.rfid=false",
    "performance.compile=false",  # the recipes compile for the GPU; on a CPU that alone takes minutes
]


def _cell(text: str, row_start: str, column: int) -> str:
    for line in text.splitlines():
        if line.startswith(row_start):
            return [c.strip() for c in line.strip("|").split("|")][column]
    raise AssertionError(f"no row starting {row_start!r} in\n{text}")


@pytest.mark.slow
def test_sweep_evaluates_reports_and_resumes_after_an_interruption(tmp_path, capsys):
    sweep = tmp_path / "ema"
    args = ["-m", "+sweep=celeba64_vq_ema", *TINY_SWEEP, f"hydra.sweep.dir={sweep}"]
    run_cli(*args, cwd=tmp_path)
    records = {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(records) == [0, 1, 2, 3]
    for record in records.values():
        assert record["kind"] == "train+eval" and record["protocol"]["split"] == "test"
        assert record["config"]["metrics"]["usage_window"] is None
        assert set(record["unavailable"]) == set()  # lpips/rfid switched off, not missing
    # the report: every measured cell is the job's metrics.json value, beside the published one
    assert report_main([str(sweep), "--table", "celeba64_vq_ema"]) == 0
    table = capsys.readouterr().out
    for record in records.values():
        update = {"ema": "EMA", "vq": "VQ loss"}[record["choices"]["quantizer"]]
        row = f"| {record['config']['codebook']['dim']} | 512 | {update} |"
        psnr = _cell(table, row, 4)
        assert psnr.startswith(f"{record['metrics']['test/psnr']:.4f} / ")
        usage = _cell(table, row, 3)
        assert usage.startswith(f"{100 * record['metrics']['test/codebook_usage']:.2f}% / ")
        assert _cell(table, row, 6).startswith("— / ")  # rFID not measured
    assert "32.0708" in _cell(table, "| 64 | 512 | EMA |", 4)
    # interrupt: job 3 never finished (no metrics.json); the others must be skipped, job 3 resumed and finished
    finished = {n: (sweep / str(n) / "metrics.json").read_text() for n in (0, 1, 2)}
    (sweep / "3" / "metrics.json").unlink()
    result = run_cli(*args, cwd=tmp_path)
    assert result.stdout.count("skipped (already finished)") == 3
    assert {n: (sweep / str(n) / "metrics.json").read_text() for n in (0, 1, 2)} == finished
    assert (sweep / "3" / "metrics.json").is_file()
    assert "resuming the interrupted job" in (sweep / "3" / "run.log").read_text()
    # a different job in a finished directory is refused, and the finished results are kept
    result = run_cli(*args[:-1], "trainer.max_steps=3", f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)
    assert result.returncode != 0 and "holds the finished results of another job" in result.stderr
    assert (sweep / "0" / "metrics.json").read_text() == finished[0]


@pytest.mark.sweeps
@pytest.mark.parametrize("name", TABLES)
def test_every_sweep_runs_at_tiny_scale(tmp_path, name):
    small_gan = ["data.resolution=32", "loss.perceptual.pretrained=false", "loss.adversarial.start_step=1"]
    extra = {
        "imagenet256_vqgan": small_gan,
        "imagenet256_vqgan_351d29d": small_gan,
        "imagenet128_fsq": [
            "data.resolution=32",
            "loss.perceptual.pretrained=false",
            "sweep/imagenet128_fsq_rows=ema,sfsq_8-8-8-5-5-5",  # two of the eight rows
            "trainer.precision=bf16-mixed",
        ],
    }
    sweep = tmp_path / name
    run_cli("-m", f"+sweep={name}", *TINY_SWEEP, *extra.get(name, []), f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    jobs = list(sweep.glob("*/metrics.json"))
    assert len(jobs) == len(sweep_jobs(name, tuple(extra.get(name, [])))), name
    assert report_main([str(sweep), "--table", name, "--out", str(tmp_path / f"{name}.md")]) == 0
    # every job is one row of the table (its published row, or appended), with its measured values
    table = load_table(name)
    lines = [line for line in (tmp_path / f"{name}.md").read_text().splitlines() if line.startswith("|")][2:]
    metric_cells = [[c.strip() for c in line.strip("|").split("|")][len(table.keys) :] for line in lines]
    measured = [cells for cells in metric_cells if any(not c.startswith("—") for c in cells)]
    assert len(measured) == len(jobs), name
