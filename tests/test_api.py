"""The Python API: ``from vqbench import load_tokenizer``, preprocess -> encode -> decode, and a light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_config import compose_cfg
from vqbench.build import build_datamodule, build_training_module
from vqbench.data import fixtures
from vqbench.data.evaluation_transform import evaluation_transform
from vqbench.data.module import to_model_range
from vqbench.errors import CheckpointError, VqbenchError

#: A narrow SimpleCNN on 16x16 images: 4x4 tokens.
TINY_MODEL = ["model.hidden_channels=8", "model.latent_channels=16", "codebook.size=32", "codebook.dim=4"]


def save_checkpoint(cfg, path: Path, seed: int = 0) -> Path:
    """A vqbench checkpoint of an untrained module of ``cfg``, in the layout a training run writes."""
    torch.manual_seed(seed)
    module = build_training_module(cfg, for_training=False)
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint written by Lightning after 3 training steps on the sample photos (16x16 crops). Three steps leave
    the latents near 0, all on one FSQ level; a larger pre-quantization map spreads them over many codes, so that a
    wrong token shows."""
    out = tmp_path_factory.mktemp("api")
    fsq = ["quantizer=fsq", "quantizer.levels=[5,5,5]", "codebook.size=125"]
    data = ["data.resolution=16", "data.batch_size=4", "data.make_dataset.test_length=6"]
    cfg = compose_cfg([*TINY_MODEL, *fsq, *data])
    L.seed_everything(0, verbose=False)
    module = build_training_module(cfg)
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    with torch.no_grad():
        module.tokenizer.pre_quant.weight.mul_(300)
    trainer.save_checkpoint(out / "last.ckpt")
    return out / "last.ckpt", module, cfg


def test_import_vqbench_and_a_quantizer_loads_neither_lightning_nor_hydra():
    code = (
        "import sys, vqbench; from vqbench.quantizers import FSQ; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_load_tokenizer_round_trip_is_the_training_module_forward(trained):
    from vqbench import load_tokenizer

    path, module, cfg = trained
    tok = load_tokenizer(str(path), device="cpu")
    assert tok.codebook_size == 125 and tok.token_grid == (4, 4)
    test_set = build_datamodule(cfg).dataset("test")
    pixels = torch.stack([test_set[i] for i in range(len(test_set))])
    x = tok.preprocess(pixels)  # the test crops are 16x16 already: the sample data's centre crop keeps them
    torch.testing.assert_close(x, to_model_range(pixels), rtol=0, atol=0)
    ids = tok.encode(x)
    module.eval()
    with torch.no_grad():
        reconstruction, quantized = module(x)
    assert ids.shape == (len(pixels), 4, 4) and ids.dtype == torch.long
    assert torch.equal(ids, quantized.indices) and ids.unique().numel() > 4
    torch.testing.assert_close(tok.decode(ids), reconstruction.clamp(-1, 1))
    assert tok.to_uint8(tok.decode(ids)).dtype == torch.uint8


def test_preprocess_takes_pil_uint8_and_unit_floats_alike(tmp_path):
    root = fixtures.write_imagenet(tmp_path / "imagenet")
    cfg = compose_cfg([*TINY_MODEL, "data=imagenet", f"data.root={root}", "data.resolution=16"])
    from vqbench import load_tokenizer

    tok = load_tokenizer(save_checkpoint(cfg, tmp_path / "tok.ckpt"))
    files = build_datamodule(cfg).dataset("test").files
    pil = [Image.open(f) for f in files]
    uint8 = [torch.from_numpy(np.array(p.convert("RGB"))).permute(2, 0, 1) for p in pil]
    from_pil = tok.preprocess(pil)
    assert from_pil.shape == (len(files), 3, 16, 16)
    torch.testing.assert_close(tok.preprocess(uint8), from_pil, rtol=0, atol=0)
    torch.testing.assert_close(tok.preprocess([u.float() / 255 for u in uint8]), from_pil, rtol=0, atol=0)
    torch.testing.assert_close(tok.preprocess(pil[0]), from_pil[:1], rtol=0, atol=0)
    with pytest.raises(VqbenchError, match=r"float images must have values in \[0, 1\]"):
        tok.preprocess(uint8[0].float())
    with pytest.raises(VqbenchError, match="expected B x 3 x H x W images"):
        tok.encode(from_pil[0])


@pytest.mark.parametrize("data", ["imagenet", "celeba", "ffhq", "folder", "folder_squash", "fashion_mnist"])
def test_preprocess_is_the_evaluation_preprocessing_of_every_dataset(tmp_path, data):
    """What ``preprocess`` does to a file is what the dataset's evaluation split does to it."""
    writers = {
        "imagenet": lambda r: fixtures.write_imagenet(r),
        "celeba": lambda r: fixtures.write_celeba(r),
        "ffhq": lambda r: fixtures.write_png_folder(r, 8, 64),
        "folder": lambda r: fixtures.write_png_folder(r, 8, 48),
        "folder_squash": lambda r: fixtures.write_png_folder(r, 8, 48),
        "fashion_mnist": lambda r: fixtures.write_fashion_mnist(r),
    }
    root = writers[data](tmp_path / data)
    overrides = [f"data={data.removesuffix('_squash')}", f"data.root={root}", "data.resolution=32"]
    overrides += ["data.make_dataset.center_crop=false"] if data == "folder_squash" else []
    overrides += ["data.channels=1"] if data == "fashion_mnist" else []
    cfg = compose_cfg([*TINY_MODEL, *overrides])
    dataset = build_datamodule(cfg).dataset("test")
    if data == "fashion_mnist":  # in memory: compare pixels (the raw 28x28 images resized as the dataset does)
        from vqbench.data.fashion_mnist import read_idx_images

        raw = read_idx_images(root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte")
        transform = evaluation_transform(cfg.data)
        for i in range(3):
            ours = torch.from_numpy(np.array(transform(Image.fromarray(raw[i]))))
            assert torch.equal(ours, dataset[i][0])
    else:
        assert dataset.transform == evaluation_transform(cfg.data)


def test_use_ema_without_an_ema_is_refused(trained):
    from vqbench import load_tokenizer

    with pytest.raises(CheckpointError, match="holds no weight EMA"):
        load_tokenizer(str(trained[0]), use_ema=True)
