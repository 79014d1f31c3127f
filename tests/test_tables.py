"""The contract of a published table, for every table found in sweeps/ (no list to edit): a ``sweeps/NAME.yaml`` with a
``published:`` block. Its sweep composes, every job (the product of ``hydra.sweeper.params``, as Hydra's basic
sweeper expands it), and no job's config holds the file's ``published:`` or ``rows:`` block; each key column of the
table names a config key (or a config group) that every job has; every published row is one of the sweep's jobs. A
table file with nothing but ``published:`` has no sweep (released weights that are only evaluated) and only its own
format is checked.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from vqbench.build import check_config
from vqbench.errors import ConfigError
from vqbench.published import SWEEPS_DIR, TABLE_KEY, load_table, table_names
from vqbench.quantizer_settings import reconcile_codebook_size
from vqbench.report import _same, key_value
from vqbench.report import main as report_main
from vqbench.results import write_metrics
from vqbench.sweep_configs import ROWS_KEY, register_sweeps

CONF = Path(__file__).resolve().parents[1] / "conf"


@contextlib.contextmanager
def config_store_restored():
    """The ``sweep`` group of Hydra's ConfigStore as it was before, afterwards: a sweeps folder registered inside is
    gone after it. (Only that group: Hydra's plugins register their own configs once, on first use.)"""
    store = ConfigStore.instance()
    saved = copy.deepcopy(store.repo["sweep"])
    try:
        yield store
    finally:
        store.repo["sweep"] = saved


@pytest.fixture
def own_config_store():
    with config_store_restored() as store:
        yield store


def has_sweep(name: str, folder: Path = SWEEPS_DIR) -> bool:
    """Whether sweeps/NAME.yaml is a sweep (anything beside its published: block)."""
    return bool(set(yaml.safe_load((folder / f"{name}.yaml").read_text())) - {TABLE_KEY})


def sweep_jobs(name: str, overrides: tuple[str, ...] = ()) -> list[list[str]]:
    """Each job's overrides of ``python run.py -m +sweep=NAME OVERRIDES``, in the order Hydra's basic sweeper gives
    them: the swept values of ``hydra.sweeper.params`` (a command-line value of a swept key replaces its list), then
    the command line's other overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    parser = OverridesParser.create()
    command_line = parser.parse_overrides([f"+sweep={name}", *overrides])
    given = {o.get_key_element() for o in command_line}
    swept = parser.parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    axes = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
        for o in [*(o for o in swept if o.get_key_element() not in given), *command_line]
    ]
    return [list(job) for job in itertools.product(*axes)]


def compose_job(overrides: list[str]) -> dict[str, Any]:
    """A job as the report sees it (``vqbench.report.collect``): its resolved config, as run.py checks and records
    it, and its config group choices."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in a sweep (llvq's data.root)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    check_config(cfg)
    reconcile_codebook_size(cfg, overrides)
    return {"config": OmegaConf.to_container(cfg, resolve=True), "choices": choices}


def _has_key(job: dict[str, Any], key: str) -> bool:
    absent = object()
    return key_value(job, key, missing=absent) is not absent


def contract_problems(name: str, folder: Path = SWEEPS_DIR) -> list[str]:
    """What breaks the contract of table NAME (sweeps/NAME.yaml in ``folder``, registered): one line each."""
    table = load_table(name, folder)  # its format: every row has every column, every document its fields
    if not has_sweep(name, folder):
        return []
    try:
        jobs = [(overrides, compose_job(overrides)) for overrides in sweep_jobs(name)]
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        return [f"{name}: the sweep does not compose: {str(error).splitlines()[0]}"]
    problems = [
        f"{name}: the job {' '.join(overrides)} holds the sweep file's {key}: block in its config"
        for overrides, job in jobs
        for key in (TABLE_KEY, ROWS_KEY)
        if key in job["config"]
    ]
    keys = [(i, column.key) for i, column in enumerate(table.keys) if column.key is not None]
    for _, key in keys:
        missing = [" ".join(overrides) for overrides, job in jobs if not _has_key(job, key)]
        if missing:
            problems.append(f"{name}: key column {key!r} is no config key (or group) of the jobs {missing}")
    for key_values, _ in table.rows:
        if not any(all(_same(key_value(job, key), key_values[i]) for i, key in keys) for _, job in jobs):
            problems.append(f"{name}: published row {key_values} is none of the sweep's {len(jobs)} jobs")
    return problems


@pytest.mark.parametrize("name", table_names())
def test_every_table_is_reproduced_by_its_sweep(name):
    assert contract_problems(name) == []


def test_every_sweep_is_a_table_and_the_tables_are_found_without_a_list():
    sweeps = {p.stem for p in SWEEPS_DIR.glob("*.yaml")} - {"common"}  # common.yaml: included by every sweep
    assert set(table_names()) == sweeps
    assert "imagenet256_pretrained" in sweeps and not has_sweep("imagenet256_pretrained")


TOY = """\
# @package _global_
defaults:
  - /sweep/common@_here_
  - /sweep/{name}_rows: small

report_table: {name}
hydra:
  sweep:
    dir: multirun/sweeps/{name}
  sweeper:
    params:
      sweep/{name}_rows: small,large
      quantizer: {quantizers}
rows:
  small:
    codebook: {{size: 16, dim: 4}}
  large:
    codebook: {{size: 64, dim: 8}}
published:
  title: A toy table
  source: nowhere, Table 1
  documents:
    - {{paper: arXiv 0000.00000, table: Table 1}}
  keys:
    - {{label: Codebook size, key: {size_key}}}
    - {{label: Update, key: "choice:quantizer"}}
  metrics:
    - {{label: PSNR, key: test/psnr}}
  rows:
    - [[16, vq], [20.0]]
    - [[{large}, ema], [21.0]]
"""


def _toy(folder: Path, name: str, quantizers="vq,ema", size_key="codebook.size", large=64) -> None:
    text = TOY.format(name=name, quantizers=quantizers, size_key=size_key, large=large)
    (folder / f"{name}.yaml").write_text(text)


def test_a_table_file_dropped_into_sweeps_is_found_registered_checked_and_reported(
    tmp_path, monkeypatch, capsys, own_config_store
):
    """One file, no list edited: discovered as a table, its sweep and rows registered, the contract checked; a
    sweep that does not compose, a key column that names no config key, or a published row no job runs fails it."""
    folder = tmp_path / "sweeps"
    folder.mkdir()
    shutil.copy2(SWEEPS_DIR / "common.yaml", folder / "common.yaml")
    _toy(folder, "toy_table")
    _toy(folder, "toy_table_bad_quantizer", quantizers="vq,no_such_quantizer")
    _toy(folder, "toy_table_bad_key", size_key="codebook.sise")
    _toy(folder, "toy_table_bad_row", large=32)
    registered = register_sweeps(folder)
    assert {"sweep/toy_table", "sweep/toy_table_rows/small", "sweep/toy_table_rows/large"} <= set(registered)
    assert [n for n in table_names(folder) if n.startswith("toy_table")] == [
        "toy_table",
        "toy_table_bad_key",
        "toy_table_bad_quantizer",
        "toy_table_bad_row",
    ]
    assert len(sweep_jobs("toy_table")) == 4  # 2 rows x 2 quantizers
    assert len(sweep_jobs("toy_table", ("quantizer=vq,ema,fsq",))) == 6
    assert sweep_jobs("toy_table", ("quantizer=ema",)) == [  # a command-line value of a swept key replaces it
        ["sweep/toy_table_rows=small", "+sweep=toy_table", "quantizer=ema"],
        ["sweep/toy_table_rows=large", "+sweep=toy_table", "quantizer=ema"],
    ]
    job = compose_job(["sweep/toy_table_rows=large", "+sweep=toy_table"])
    assert job["config"]["codebook"]["size"] == 64 and TABLE_KEY not in job["config"] and "rows" not in job["config"]
    assert contract_problems("toy_table", folder) == []
    [problem] = contract_problems("toy_table_bad_quantizer", folder)
    assert "does not compose" in problem and "no_such_quantizer" in problem
    problems = contract_problems("toy_table_bad_key", folder)  # and then no row matches a job either
    assert "'codebook.sise' is no config key" in problems[0] and len(problems) == 3
    [problem] = contract_problems("toy_table_bad_row", folder)
    assert "published row [32, 'ema'] is none of the sweep's 4 jobs" in problem

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "toy_table_list_rows.yaml").write_text("rows: [small, large]\n")
    with pytest.raises(ValueError, match="toy_table_list_rows.yaml: rows: must map each row's name to its settings"):
        register_sweeps(broken)

    # the report finds it too
    monkeypatch.setattr("vqbench.published.SWEEPS_DIR", folder)
    run = tmp_path / "run"
    write_metrics(
        run / "0", {"kind": "train+eval", "metrics": {"test/psnr": 19.5}} | job | {"choices": {"quantizer": "ema"}}
    )
    assert report_main([str(run), "--table", "toy_table"]) == 0
    assert "| 64 | ema | 19.5000 / 21.0000 (-1.5000) |" in capsys.readouterr().out


def test_a_table_needs_the_sweeps_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("vqbench.published.SWEEPS_DIR", tmp_path / "nowhere")
    (tmp_path / "run").mkdir()
    assert report_main([str(tmp_path / "run"), "--table", "celeba64_fsq"]) == 2
    assert f"sweeps/ folder, which is not at {tmp_path / 'nowhere'}" in capsys.readouterr().err
