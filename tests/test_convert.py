"""``python -m vqbench.convert``: released taming and LlamaGen checkpoints compute, after conversion, what the
original code computes.

taming: the original modules come from the ``taming-transformers-rom1504`` package (test extra), built narrow with
random weights in the layout of taming's ``VQModel``. LlamaGen: ``tests/reference/llamagen/vq_model_random.pt``
holds random weights and the outputs that LlamaGen's ``vq_model.py`` computed from them
(``tests/reference/llamagen/record.py`` wrote it from a checkout of FoundationVision/LlamaGen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import run_cli
from vqbench import load_tokenizer
from vqbench.convert import main as convert_main
from vqbench.data import fixtures

REFERENCE = Path(__file__).parent / "reference" / "llamagen" / "vq_model_random.pt"


class FakeModelCheckpoint:
    """Stands for the Lightning callback class that taming's checkpoints use as a dict key (PL 1.x)."""

    def __setstate__(self, state):
        raise AssertionError("the converter must not run code from the checkpoint")


def _randomize(module: nn.Module) -> None:
    """Random values everywhere (norm scales around 1), rounded to float16 like the LlamaGen reference."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn_like(parameter))
            elif name.endswith("embedding.weight"):
                parameter.copy_(torch.randn_like(parameter))
            parameter.copy_(parameter.half().float())


@pytest.fixture(scope="module")
def taming_vqmodel():
    """taming's VQModel parts (encoder, decoder, quantize, quant_conv, post_quant_conv), narrow: 3 levels, attention
    at the middle level (16 px of 32), so the attention is not at the last level."""
    model_module = pytest.importorskip("taming.modules.diffusionmodules.model", reason="pip install -e '.[test]'")
    quantize_module = pytest.importorskip("taming.modules.vqvae.quantize", reason="pip install -e '.[test]'")
    ddconfig = dict(
        ch=32, out_ch=3, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=[16], dropout=0.0,
        in_channels=3, resolution=32, z_channels=16, double_z=False,
    )  # fmt: skip
    model = nn.Module()
    model.encoder = model_module.Encoder(**ddconfig)
    model.decoder = model_module.Decoder(**ddconfig)
    model.quantize = quantize_module.VectorQuantizer2(64, 8, beta=0.25)
    model.quant_conv = nn.Conv2d(16, 8, 1)
    model.post_quant_conv = nn.Conv2d(8, 16, 1)
    _randomize(model)
    return model.eval()


def write_taming_checkpoint(model: nn.Module, path: Path, extra: dict | None = None, drop=()) -> Path:
    """A taming VQGAN Lightning checkpoint: its state dict with the training loss, callbacks keyed by class."""
    state = {k: v for k, v in model.state_dict().items() if k not in drop}
    state |= {"loss.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4), "loss.logvar": torch.zeros(())}
    state |= extra or {}
    checkpoint = {
        "epoch": 3,
        "global_step": 1234,
        "state_dict": state,
        "callbacks": {FakeModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [{"state": {}, "param_groups": []}],
    }
    torch.save(checkpoint, path)
    return path


def test_taming_conversion_computes_what_taming_computes(taming_vqmodel, tmp_path, capsys):
    model = taming_vqmodel
    source = write_taming_checkpoint(model, tmp_path / "last.ckpt")
    assert convert_main(["taming", str(source), str(tmp_path / "taming.ckpt")]) == 0
    assert "+eval=true ckpt=" in capsys.readouterr().out
    tok = load_tokenizer(str(tmp_path / "taming.ckpt"))
    torch.manual_seed(2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latent = model.quant_conv(model.encoder(x))
        quantized, _, (_, _, indices) = model.quantize(latent)
        decoded = model.decoder(model.post_quant_conv(quantized))
        ours = tok.tokenizer.pre_quant(tok.tokenizer.encoder(x))
    torch.testing.assert_close(ours, latent, rtol=1e-4, atol=1e-5)
    ids = tok.encode(x)
    assert ids.shape == (2, 8, 8) and torch.equal(ids, indices.reshape(2, 8, 8))
    assert ids.unique().numel() > 4  # several codes: a wrong code would show
    with torch.no_grad():
        torch.testing.assert_close(tok.tokenizer.decode_indices(ids), decoded, rtol=1e-4, atol=1e-4)
    cfg = tok.config
    assert list(cfg.model.channel_mult) == [1, 2, 2] and list(cfg.model.attention_levels) == [1]
    assert (cfg.model.channels, cfg.model.num_res_blocks, cfg.model.z_channels) == (32, 2, 16)
    assert (cfg.codebook.size, cfg.codebook.dim, cfg.codebook.l2_norm) == (64, 8, False)
    assert cfg.optimizer.lr == 5e-4 and cfg.loss.adversarial.adaptive  # the taming recipe (07352b4)


def _llamagen_checkpoint(path: Path, reference: dict, extra: dict | None = None, drop=()) -> Path:
    """LlamaGen's training-checkpoint layout: {"model": state dict, "optimizer": ..., "steps": ..., "args": ...}."""
    state = {k: v.float() for k, v in reference["state_dict"].items() if k not in drop}
    state["quantize.codebook_used"] = torch.zeros(65536)  # VQModel's usage buffer, part of every saved state dict
    state |= extra or {}
    torch.save({"model": state, "optimizer": {}, "steps": 10, "args": argparse.Namespace(vq_model="VQ-16")}, path)
    return path


def test_llamagen_conversion_reproduces_the_recorded_outputs(tmp_path):
    reference = torch.load(REFERENCE, weights_only=True)
    source = _llamagen_checkpoint(tmp_path / "vq.pt", reference)
    assert convert_main(["llamagen", str(source), str(tmp_path / "llamagen.ckpt")]) == 0
    tok = load_tokenizer(str(tmp_path / "llamagen.ckpt"))
    x = reference["input"]
    with torch.no_grad():
        latent = tok.tokenizer.pre_quant(tok.tokenizer.encoder(x))
    torch.testing.assert_close(latent, reference["latent"], rtol=1e-4, atol=1e-5)
    ids = tok.encode(x)
    assert torch.equal(ids, reference["indices"]) and ids.unique().numel() > 4
    with torch.no_grad():
        torch.testing.assert_close(tok.tokenizer.decode_indices(ids), reference["decoded"], rtol=1e-4, atol=1e-4)
    cfg = tok.config
    assert (cfg.codebook.size, cfg.codebook.dim, cfg.codebook.l2_norm) == (64, 8, True)
    assert cfg.quantizer.l2_norm_mode == "llamagen" and list(cfg.model.attention_levels) == [1]
    assert cfg.optimizer.lr == 1e-4 and not cfg.loss.adversarial.adaptive  # the LlamaGen recipe


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_unknown_missing_and_misshapen_keys_are_one_line_errors_naming_them(taming_vqmodel, tmp_path, capsys):
    out = str(tmp_path / "out.ckpt")
    bad = write_taming_checkpoint(
        taming_vqmodel, tmp_path / "a.ckpt", extra={"encoder.down.0.block.0.temb_proj.weight": torch.zeros(1)}
    )
    assert convert_main(["taming", str(bad), out]) == 2
    assert "unknown taming keys: encoder.down.0.block.0.temb_proj.weight" in _error(capsys)
    bad = write_taming_checkpoint(taming_vqmodel, tmp_path / "b.ckpt", drop={"decoder.up.1.block.2.norm2.bias"})
    assert convert_main(["taming", str(bad), out]) == 2
    assert "missing keys: decoder.up.1.block.2.norm2.bias" in _error(capsys)
    bad = write_taming_checkpoint(taming_vqmodel, tmp_path / "c.ckpt", extra={"quant_conv.weight": torch.zeros(8, 16)})
    assert convert_main(["taming", str(bad), out]) == 2
    assert "shape mismatches: quant_conv.weight (8, 16) (expected (8, 16, 1, 1))" in _error(capsys)
    reference = torch.load(REFERENCE, weights_only=True)
    llamagen = _llamagen_checkpoint(tmp_path / "vq.pt", reference)
    assert convert_main(["taming", str(llamagen), out]) == 2  # the wrong format
    assert "has no state dict under state_dict (top-level keys: ['args', 'model'" in _error(capsys)
    torch.save(torch.load(llamagen, weights_only=False)["model"], tmp_path / "bare.pt")
    assert convert_main(["taming", str(tmp_path / "bare.pt"), out]) == 2
    assert "is not a taming VQGAN checkpoint: no encoder.down.0.block.0.* weights" in _error(capsys)
    assert convert_main(["vqgan", str(llamagen), out]) == 2
    assert "unknown format 'vqgan'; the formats are: taming, llamagen" in _error(capsys)
    assert not (tmp_path / "out.ckpt").exists()
    (tmp_path / "out.ckpt").write_bytes(b"keep me")
    assert convert_main(["llamagen", str(llamagen), out]) == 2
    assert "exists" in _error(capsys) and (tmp_path / "out.ckpt").read_bytes() == b"keep me"


@pytest.mark.slow
def test_a_converted_checkpoint_evaluates_with_run_py(tmp_path):
    reference = torch.load(REFERENCE, weights_only=True)
    source = _llamagen_checkpoint(tmp_path / "vq.pt", reference)
    assert convert_main(["llamagen", str(source), str(tmp_path / "llamagen.ckpt")]) == 0
    root = fixtures.write_imagenet(tmp_path / "imagenet")
    run_cli(
        "+eval=true",
        f"ckpt={tmp_path / 'llamagen.ckpt'}",
        "data=imagenet",
        f"data.root={root}",
        "data.resolution=32",
        "data.num_workers=0",
        "metrics.lpips=false",
        "metrics.rfid=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["kind"] == "eval" and record["protocol"]["images"] == 4
    assert 0 < record["metrics"]["test/codebook_usage"] <= 1 and record["config"]["codebook"]["size"] == 64


def test_the_report_puts_an_evaluation_of_released_weights_beside_the_authors_numbers(tmp_path, capsys):
    from vqbench.report import main as report_main
    from vqbench.results import write_metrics

    metrics = {"test/psnr": 20.5, "test/ssim": 0.55, "test/rfid": 2.5}
    config = {"codebook": {"size": 16384, "dim": 8, "l2_norm": True}}
    write_metrics(tmp_path / "llamagen", {"kind": "eval", "metrics": metrics, "config": config})
    assert report_main([str(tmp_path), "--table", "imagenet256_pretrained"]) == 0
    table = capsys.readouterr().out
    assert (
        "| vq_ds16_c2i | 16384 | 8 | Yes | 20.50 / 20.79 (-0.29) | 0.550 / 0.675 (-0.125) | 2.50 / 2.19 (+0.31) "
        "[torch_fidelity] |" in table  # the authors' rFID is another protocol's (ADM evaluator): marked, not compared
    )
    assert "| VQGAN ImageNet (f=16), 1024 | 1024 | 256 | No | — | — | — / 7.94 |" in table
