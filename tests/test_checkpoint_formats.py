"""Checkpoints of every earlier format load and compute what the version that wrote them computed.

The fixtures (tests/fixtures/checkpoints/format_N/) were written by the commits of main named in
``vqbench.checkpoint.FORMAT_COMMITS``, with that commit's own training, evaluation and tokenizer
(tests/fixtures/checkpoints/record.py documents how). Today's code must reproduce their tokens exactly and their
reconstructions and evaluation metrics within float32 rounding.
"""

from __future__ import annotations

import importlib.util
import json

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import ROOT, run_cli
from tests.test_config import compose_cfg
from vqbench import load_tokenizer
from vqbench.build import build_tokenizer, check_config
from vqbench.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_COMMITS,
    RESUMABLE_FROM,
    check_resumable_format,
    evaluation_config,
    load_checkpoint,
)
from vqbench.errors import CheckpointError
from vqbench.evaluate import evaluate_checkpoint
from vqbench.quantizer_settings import reconcile_codebook_size
from vqbench.resume import RESUME_MAY_CHANGE, config_differences

FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints"
FORMATS = sorted(FORMAT_COMMITS)


def _record_script():
    """tests/fixtures/checkpoints/record.py, the script that wrote the fixtures (its TRAIN overrides, FORMATS)."""
    spec = importlib.util.spec_from_file_location("record_fixture_checkpoints", FIXTURES / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN = _record_script().TRAIN

#: Reconstructions: float32 (eps 1.2e-7) through 8 convolutions of at most 4*4*16 = 256 products each, activations
#: of magnitude <= 1: 1.2e-7 * 256 * 8 ~ 2.5e-4, whatever kernels (oneDNN, AVX2/512, thread count) sum them.
RECONSTRUCTION_ATOL = 2.5e-4
#: PSNR / SSIM / L1 on [0, 1] from those reconstructions (half the error after x * 0.5 + 0.5, 1.25e-4): MSE ~ 0.05
#: here, so dPSNR <= 10 / ln 10 * 2 * sqrt(MSE) * 1.25e-4 / MSE ~ 5e-3 dB; SSIM moves by at most ~2 * 1.25e-4 / 0.2.
METRIC_ATOL = {"test/psnr": 1e-2, "test/ssim": 2e-3, "test/l1": 2e-4}
#: Token statistics are functions of identical tokens: equal up to float32 rounding of a log/exp.
TOKEN_METRIC_RTOL = 1e-5


def _fixture(version: int):
    folder = FIXTURES / f"format_{version}"
    return folder / "last.ckpt", json.loads((folder / "expected.json").read_text()), folder / "expected.pt"


@pytest.mark.parametrize("version", FORMATS)
def test_an_earlier_format_loads_with_a_one_line_notice(version, capsys):
    ckpt, expected, _ = _fixture(version)
    assert expected["commit"].startswith(FORMAT_COMMITS[version])
    payload = load_checkpoint(str(ckpt))
    assert payload["vqbench_format"] == version < CHECKPOINT_FORMAT
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and f"checkpoint format {version}" in notice[0] and FORMAT_COMMITS[version] in notice[0]


@pytest.mark.parametrize("version", FORMATS)
def test_tokens_and_reconstructions_are_those_its_version_computed(version):
    ckpt, _, recorded = _fixture(version)
    expected = torch.load(recorded, weights_only=True)
    tokenizer = load_tokenizer(str(ckpt))
    indices = tokenizer.tokenizer.encode(expected["images"]).indices
    assert torch.equal(indices, expected["indices"])
    with torch.no_grad():
        reconstruction = tokenizer.tokenizer.decode_indices(indices)
    torch.testing.assert_close(reconstruction, expected["reconstruction"], rtol=0, atol=RECONSTRUCTION_ATOL)


def test_the_residual_upgrade_is_what_reproduces_format_2():
    """Built with today's default residual block (relu(x) + f(x)) instead of the upgrade's x + f(x), the format-2
    checkpoint reconstructs differently: the fixture can tell the two apart."""
    ckpt, _, recorded = _fixture(2)
    expected = torch.load(recorded, weights_only=True)
    payload = load_checkpoint(str(ckpt))
    config = OmegaConf.create(payload["vqbench_config"])
    assert config.model.residual_skip == "identity"
    config.model.residual_skip = "relu"
    tokenizer, _ = build_tokenizer(config)
    tokenizer.load_state_dict({k[10:]: v for k, v in payload["state_dict"].items() if k.startswith("tokenizer.")})
    with torch.no_grad():
        reconstruction = tokenizer.eval().decode_indices(expected["indices"])
    assert (reconstruction - expected["reconstruction"]).abs().max() > 10 * RECONSTRUCTION_ATOL


@pytest.mark.parametrize("version", FORMATS)
def test_evaluation_reproduces_the_metrics_its_version_recorded(version, tmp_path):
    ckpt, expected, _ = _fixture(version)
    payload = load_checkpoint(str(ckpt))
    overrides = ["metrics.lpips=false", "metrics.rfid=false"]
    live = compose_cfg(["+eval=true", f"ckpt={ckpt}", *overrides])
    eval_cfg = evaluation_config(OmegaConf.create(payload["vqbench_config"]), live, overrides)
    check_config(eval_cfg)
    reconcile_codebook_size(eval_cfg)
    L.seed_everything(eval_cfg.seed, workers=True, verbose=False)
    metrics, _, _ = evaluate_checkpoint(eval_cfg, payload, str(ckpt), tmp_path)
    for key, value in expected["metrics"].items():
        if key in METRIC_ATOL:
            assert metrics[key] == pytest.approx(value, abs=METRIC_ATOL[key]), key
        else:
            assert metrics[key] == pytest.approx(value, rel=TOKEN_METRIC_RTOL), key


@pytest.mark.parametrize("version", FORMATS)
def test_tokenize_exports_every_format(version, tmp_path, capsys):
    from vqbench.tokenize import main

    ckpt, _, _ = _fixture(version)
    out = tmp_path / "tokens"
    assert main([f"ckpt={ckpt}", f"out={out}", "split=test"]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["complete"] and metadata["rows"] == 12


@pytest.mark.parametrize("version", FORMATS)
def test_resume_takes_the_exact_resume_formats_and_names_the_version_of_the_others(version):
    ckpt, _, _ = _fixture(version)
    payload = load_checkpoint(str(ckpt), purpose="resume training from")
    if version < RESUMABLE_FROM:
        with pytest.raises(CheckpointError, match=f"checkpoint format {version}, main up to {FORMAT_COMMITS[version]}"):
            check_resumable_format(payload, str(ckpt))
        return
    check_resumable_format(payload, str(ckpt))
    live = compose_cfg([*TRAIN, f"ckpt={ckpt}"])
    assert config_differences(OmegaConf.create(payload["vqbench_config"]), live, RESUME_MAY_CHANGE) == []


@pytest.mark.slow
def test_run_py_evaluates_resumes_and_refuses_earlier_formats(tmp_path):
    old, _, _ = _fixture(1)
    result = run_cli("+eval=true", f"ckpt={old}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert "checkpoint format 1" in result.stderr and (tmp_path / "eval" / "metrics.json").is_file()
    refused = run_cli(*TRAIN, f"ckpt={old}", f"hydra.run.dir={tmp_path / 'old'}", cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "checkpoint format 1, main up to 07ec3bc" in refused.stderr and "Traceback" not in refused.stderr
    resumable, _, _ = _fixture(RESUMABLE_FROM)
    more = [o for o in TRAIN if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=20"]
    run_cli(*more, f"ckpt={resumable}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    record = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert record["step"] == 20  # the fixture stopped at 16
    written = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert written["vqbench_format"] == CHECKPOINT_FORMAT


def test_a_format_from_a_newer_vqbench_is_refused_naming_it(tmp_path):
    payload = torch.load(_fixture(5)[0], weights_only=True)
    payload["vqbench_format"] = CHECKPOINT_FORMAT + 1
    torch.save(payload, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match=f"newer vqbench \\(checkpoint format {CHECKPOINT_FORMAT + 1}\\)"):
        load_checkpoint(str(tmp_path / "newer.ckpt"))


def test_every_earlier_format_has_a_fixture_recorded_by_its_commit():
    assert _record_script().FORMATS == FORMAT_COMMITS
    assert sorted(FORMAT_COMMITS) == list(range(1, CHECKPOINT_FORMAT))


@pytest.mark.parametrize(
    "model, remove, named",
    [
        ("lattice_cnn", "model.encoder.code_dim", "lattice_cnn"),
        ("vqgan", "model.norm_groups", "vqgan"),
        ("fsq_cnn", "model.decoder.in_channels", "fsq_cnn"),
    ],
)
def test_an_earlier_architecture_that_cannot_be_rebuilt_is_refused_naming_the_format(model, remove, named, tmp_path):
    """A format-4 checkpoint (no vqbench_overrides) whose model lacks a key today's architecture has."""
    payload = torch.load(_fixture(4)[0], weights_only=True)
    config = compose_cfg([f"model={model}"])
    OmegaConf.set_struct(config, False)
    node, key = remove.rsplit(".", 1)
    del OmegaConf.select(config, node)[key]
    payload["vqbench_config"] = OmegaConf.to_yaml(config)
    torch.save(payload, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match=rf"checkpoint format 4, main up to 0d82b99\) whose model {named}"):
        load_checkpoint(str(tmp_path / "old.ckpt"))


def test_the_api_and_tokenize_read_checkpoints_through_vqbench_checkpoint_not_the_cli():
    import ast

    for name in ("api.py", "tokenize.py", "checkpoint.py"):
        tree = ast.parse((ROOT / "src" / "vqbench" / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "vqbench.cli" not in imported, name
        if name != "checkpoint.py":
            assert "vqbench.checkpoint" in imported, name


@pytest.mark.parametrize("version", [5, CHECKPOINT_FORMAT])
@pytest.mark.parametrize("removed", ["metrics", "optimizer.grad_clip", "performance"])
def test_a_config_without_a_key_added_since_loads_in_evaluation_and_the_api(version, removed, tmp_path):
    payload = torch.load(_fixture(5)[0], weights_only=True)
    config = OmegaConf.create(payload["vqbench_config"])
    node, _, key = removed.rpartition(".")
    del (OmegaConf.select(config, node) if node else config)[key]
    payload["vqbench_config"] = OmegaConf.to_yaml(config)
    if version == CHECKPOINT_FORMAT:
        payload["vqbench_format"] = version
    torch.save(payload, tmp_path / "old.ckpt")
    loaded = load_checkpoint(str(tmp_path / "old.ckpt"))
    overrides = ["+eval=true", f"ckpt={tmp_path / 'old.ckpt'}"]
    eval_cfg = evaluation_config(OmegaConf.create(loaded["vqbench_config"]), compose_cfg(overrides), overrides)
    check_config(eval_cfg)
    assert load_tokenizer(str(tmp_path / "old.ckpt")).codebook_size == 32


def test_a_config_without_a_model_is_refused_in_one_line(tmp_path):
    payload = torch.load(_fixture(5)[0], weights_only=True)
    config = OmegaConf.create(payload["vqbench_config"])
    del config["model"]
    payload["vqbench_config"] = OmegaConf.to_yaml(config)
    torch.save(payload, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="its config has no model node"):
        load_checkpoint(str(tmp_path / "bare.ckpt"))
