"""Issue 5: the seed architectures, the GAN losses, the adaptive weight, the start step, weight EMA, experiments."""

from __future__ import annotations

import json
import os

import pytest
import torch
from lightning import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.test_config import compose_cfg, group_options
from vqbench.build import build_tokenizer, build_training_module, check_config
from vqbench.errors import ConfigError
from vqbench.losses import (
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    last_layer_weight,
    lecam_regularizer,
    non_saturating_d_loss,
    non_saturating_g_loss,
)
from vqbench.models import (
    FSQCNNDecoder,
    FSQCNNEncoder,
    LatticeCNNDecoder,
    LatticeCNNEncoder,
    PatchDiscriminator,
    SimpleCNNDecoder,
    SimpleCNNEncoder,
    Tokenizer,
)
from vqbench.quantizers import VectorQuantizer
from vqbench.training.ema import WeightEMA
from vqbench.training.module import AdversarialSettings, OptimizerSettings, TokenizerModule, lr_factor


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameter counts, computed from the layer lists of SPEC §3 --------------------------------------------------


def conv(i: int, o: int, k: int, bias: bool = True) -> int:
    return i * o * k * k + (o if bias else 0)


def gn(c: int) -> int:
    return 2 * c


def res(i: int, o: int) -> int:
    return gn(i) + conv(i, o, 3) + gn(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)


def attn(c: int) -> int:
    return gn(c) + 4 * conv(c, c, 1)


def vqgan_count(codebook_size: int, dim: int) -> int:
    """taming: ch 128, ch_mult (1,1,2,2,4), 2 res blocks (3 in the decoder), attention at 16x16 and in the middle."""
    widths = [128 * m for m in (1, 1, 2, 2, 4)]
    middle = 2 * res(512, 512) + attn(512)
    encoder, width = conv(3, 128, 3), 128
    for level, w in enumerate(widths):
        for _ in range(2):
            encoder += res(width, w) + (attn(w) if level == 4 else 0)
            width = w
        encoder += conv(w, w, 3) if level < 4 else 0  # stride-2 downsample
    encoder += middle + gn(512) + conv(512, 256, 3)
    decoder, width = conv(256, 512, 3) + middle, 512
    for level in reversed(range(5)):
        for _ in range(3):
            decoder += res(width, widths[level]) + (attn(widths[level]) if level == 4 else 0)
            width = widths[level]
        decoder += conv(width, width, 3) if level > 0 else 0  # upsample conv
    decoder += gn(128) + conv(128, 3, 3)
    return encoder + decoder + conv(256, dim, 1) + conv(dim, 256, 1) + codebook_size * dim


def test_vqgan_has_the_taming_parameter_count():
    cfg = compose_cfg(["model=vqgan", "codebook.size=1024", "codebook.dim=256"])
    tokenizer, _ = build_tokenizer(cfg)
    assert count(tokenizer) == vqgan_count(1024, 256) == 72_141_699  # "about 72.1M" (SPEC §3)
    assert tokenizer(torch.randn(1, 3, 64, 64))[1].indices.shape == (1, 4, 4)  # downsampling 16


def test_patch_discriminator_count_and_init():
    disc = PatchDiscriminator()
    expected = conv(3, 64, 4) + conv(64, 128, 4, False) + 2 * 128 + conv(128, 256, 4, False) + 2 * 256
    expected += conv(256, 512, 4, False) + 2 * 512 + conv(512, 1, 4)
    assert count(disc) == expected == 2_765_633
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.mean()) < 1e-3 and abs(weights.std() - 0.02) < 1e-3  # N(0, 0.02)
    bn = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.bias == 0) for m in bn) and abs(torch.cat([m.weight for m in bn]).mean() - 1) < 0.01
    assert disc(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 70x70 PatchGAN logits


@pytest.mark.parametrize("hidden", [(16, 32), (64,)])
def test_lattice_cnn_layers_and_count(hidden):
    encoder, decoder = LatticeCNNEncoder(3, hidden), LatticeCNNDecoder(3, hidden)
    h = hidden[-1]
    widths = [3, *hidden]
    expected_enc = sum(conv(a, b, 4) for a, b in zip(widths, widths[1:], strict=False)) + conv(h, h, 3)
    expected_enc += 2 * (conv(h, h, 3, False) + conv(h, h, 1, False))
    expected_dec = conv(h, h, 3) + 2 * (conv(h, h, 3, False) + conv(h, h, 1, False))
    back = [*reversed(hidden), 3]
    expected_dec += sum(conv(a, b, 4) for a, b in zip(back, back[1:], strict=False))  # ConvT has the same count
    assert (count(encoder), count(decoder)) == (expected_enc, expected_dec)
    x = torch.randn(1, 3, 64, 64)
    assert encoder(x).shape[-1] == 64 // 2 ** len(hidden)
    assert decoder(encoder(x)).shape == x.shape


def test_fsq_cnn_gives_16x16_tokens_at_128():
    encoder, decoder = FSQCNNEncoder(), FSQCNNDecoder()
    assert count(encoder) == conv(3, 512, 4) + 2 * conv(512, 512, 4)
    assert count(decoder) == 2 * conv(512, 512, 4) + conv(512, 3, 4)
    z = encoder(torch.randn(1, 3, 128, 128))
    assert z.shape == (1, 512, 16, 16) and decoder(z).shape == (1, 3, 128, 128)


def test_one_channel_data_gives_one_channel_models():
    for model in ("simple_cnn", "lattice_cnn", "fsq_cnn", "vqgan"):
        cfg = compose_cfg([f"model={model}", "data=fashion_mnist", "codebook.dim=8"])
        tokenizer, _ = build_tokenizer(cfg)
        assert tokenizer(torch.randn(1, 1, 32, 32))[0].shape == (1, 1, 32, 32), model


# --- losses --------------------------------------------------------------------------------------------------------


def test_hinge_and_non_saturating_losses_match_their_formulas():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1, 6, 6) * 2, torch.randn(4, 1, 6, 6) * 2
    hinge_d = 0.5 * (torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    assert torch.allclose(hinge_d_loss(real, fake), hinge_d)
    assert torch.allclose(hinge_g_loss(fake), -fake.mean())
    ns_d = 0.5 * (-torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean())
    assert torch.allclose(non_saturating_d_loss(real, fake), ns_d, atol=1e-6)
    assert torch.allclose(non_saturating_g_loss(fake), -torch.log(torch.sigmoid(fake)).mean(), atol=1e-6)
    ema_real, ema_fake = torch.tensor(0.3), torch.tensor(-0.2)
    lecam = ((real - ema_fake) ** 2).mean() + ((fake - ema_real) ** 2).mean()
    assert torch.allclose(lecam_regularizer(real, fake, ema_real, ema_fake), lecam)


def test_adaptive_weight_against_a_hand_computation():
    # decoder output = w * x with a scalar weight w; L_rec = mean((w x - y)^2), L_G = -mean(a * w x)
    x, y, a = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, 1.0, 0.0]), torch.tensor([0.3, -0.1, 0.2])
    w = torch.tensor(0.7, requires_grad=True)
    rec, gan = ((w * x - y) ** 2).mean(), -(a * w * x).mean()
    d_rec = (2 * (0.7 * x - y) * x).mean().abs()
    d_gan = (a * x).mean().abs()
    assert torch.allclose(adaptive_weight(rec, gan, w), d_rec / (d_gan + 1e-4))
    flat = -(torch.zeros(3) * w).mean()  # no adversarial gradient: clamped to 1e4
    assert adaptive_weight(((w * x - y) ** 2).mean(), flat, w) == 1e4


@pytest.mark.parametrize("model", ["simple_cnn", "vqgan", "lattice_cnn", "fsq_cnn"])
def test_adaptive_weight_uses_the_output_layer_of_every_decoder(model):
    decoder = build_tokenizer(compose_cfg([f"model={model}"]))[0].decoder
    output_layers = [m for m in decoder.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert last_layer_weight(decoder) is output_layers[-1].weight


def test_lr_schedule_warmup_then_linear_decay():
    settings = OptimizerSettings(schedule="linear", warmup_fraction=0.01)
    factors = [lr_factor(step, 1000, settings) for step in (0, 9, 10, 505, 999)]
    assert factors == [0.1, 1.0, 1.0, pytest.approx(0.5), pytest.approx(1 / 990)]
    assert lr_factor(5, 1000, OptimizerSettings()) == 1.0


def test_weight_ema_update_formula():
    model = nn.Linear(3, 2)
    ema = WeightEMA(model, decay=0.9)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)
    assert not ema.module.weight.requires_grad


# --- the start step and global_step under manual optimization ------------------------------------------------------


def _gan_module(start_step: int) -> TokenizerModule:
    torch.manual_seed(0)
    tokenizer = Tokenizer(SimpleCNNEncoder(3, 8, 16), VectorQuantizer(32, 8), SimpleCNNDecoder(3, 8, 16))
    return TokenizerModule(
        tokenizer,
        {"codebook": 1.0, "commitment": 0.25},
        reconstruction_loss="l1",
        discriminator=PatchDiscriminator(3, channels=8, layers=2),
        adversarial=AdversarialSettings(start_step=start_step, adaptive=True, lecam_weight=0.1),
        optimizer=OptimizerSettings(lr=1e-3, grad_clip=1.0),
    )


def _fit(module: TokenizerModule, steps: int, tmp_path) -> Trainer:
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    loader = DataLoader(
        TensorDataset(images), batch_size=4, collate_fn=lambda items: torch.stack([i[0] for i in items])
    )
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(module, loader)
    return trainer


def test_start_step_gates_the_discriminator_and_the_generator_term(tmp_path):
    module = _gan_module(start_step=3)
    disc_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    tok_before = {k: v.clone() for k, v in module.tokenizer.state_dict().items()}
    trainer = _fit(module, 3, tmp_path)
    assert trainer.global_step == 3 == trainer.fit_loop.epoch_loop.batch_progress.total.completed
    disc_after = module.discriminator.state_dict()
    assert all(torch.equal(disc_before[k], disc_after[k]) for k in disc_before)  # weights and BatchNorm statistics
    assert any(not torch.equal(tok_before[k], v) for k, v in module.tokenizer.state_dict().items())
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert "generator_adversarial" not in module.generator_loss(images, step=2)[2]
    assert "generator_adversarial" in module.generator_loss(images, step=3)[2]

    module = _gan_module(start_step=3)
    trainer = _fit(module, 5, tmp_path)
    # two G steps and two D steps after the start still count as 2: global_step = batches = 5
    assert trainer.global_step == 5 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 5
    assert any(not torch.equal(disc_before[k], v) for k, v in module.discriminator.state_dict().items())
    assert module.lecam_real != 0


def test_manual_optimization_clips_generator_gradients(tmp_path, monkeypatch):
    module = _gan_module(start_step=100)
    norms = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    _fit(module, 2, tmp_path)
    assert norms and max(norms) <= 1.0 + 1e-4


# --- configs -------------------------------------------------------------------------------------------------------

EXPERIMENTS = {
    "celeba64_vqvae": {
        "data.batch_size": 256,
        "optimizer.lr": 4e-4,
        "trainer.max_steps": 500_000,
        "codebook.size": 512,
        "codebook.dim": 64,
        "loss.reconstruction": "mse",
    },
    "imagenet256_vqgan_taming": {
        "data.batch_size": 12,
        "optimizer.lr": 5.4e-5,
        "optimizer.betas": [0.5, 0.9],
        "trainer.max_steps": 1_000_000,
        "codebook.size": 1024,
        "codebook.dim": 256,
        "loss.reconstruction": "l1",
        "loss.perceptual.weight": 1.0,
        "loss.adversarial.weight": 0.8,
        "loss.adversarial.adaptive": True,
        "loss.adversarial.start_step": 250_000,
        "loss.adversarial.loss": "hinge",
        "quantizer.commitment_weight": 0.25,
        "quantizer.codebook_weight": 1.0,
    },
    "imagenet256_vqgan_llamagen": {
        "data.batch_size": 128,
        "optimizer.lr": 1e-4,
        "optimizer.betas": [0.9, 0.95],
        "optimizer.grad_clip": 1.0,
        "trainer.max_steps": 400_000,
        "codebook.size": 16384,
        "codebook.dim": 8,
        "codebook.l2_norm": True,
        "loss.reconstruction": "mse",
        "loss.adversarial.weight": 0.5,
        "loss.adversarial.adaptive": False,
        "loss.adversarial.start_step": 20_000,
    },
    "llvq_ffhq1024": {
        "data.batch_size": 32,
        "optimizer.lr": 1e-3,
        "trainer.max_epochs": 5,
        "model.hidden_channels": [16, 32],
        "data.resolution": 1024,
        "codebook.dim": 64,
    },
    "llvq_celeba": {
        "data.batch_size": 64,
        "optimizer.lr": 1e-3,
        "trainer.max_epochs": 5,
        "model.hidden_channels": [64],
        "data.make_dataset.crop": "llvq",
        "data.resolution": 148,
    },
    "llvq_fashion_mnist": {
        "data.batch_size": 64,
        "optimizer.lr": 1e-3,
        "trainer.max_epochs": 5,
        "model.hidden_channels": [64],
        "data.channels": 1,
    },
    "imagenet128_fsq": {
        "data.batch_size": 256,
        "optimizer.lr": 1e-4,
        "optimizer.schedule": "linear",
        "optimizer.warmup_fraction": 0.01,
        "data.resolution": 128,
        "loss.reconstruction": "l1",
        "loss.perceptual.weight": 1.0,
        "codebook.size": 1024,  # -> the FSQ paper's levels for 2^10: 8-5-5-5
    },
}


def test_every_experiment_file_has_its_recipe_and_cites_its_table():
    assert set(group_options("experiment")) == set(EXPERIMENTS)
    from omegaconf import OmegaConf

    for name, recipe in EXPERIMENTS.items():
        cfg = compose_cfg([f"+experiment={name}"])
        check_config(cfg)
        for key, value in recipe.items():
            found = OmegaConf.select(cfg, key)
            found = OmegaConf.to_container(found) if OmegaConf.is_config(found) else found
            assert found == value, f"{name}: {key} = {found}, recipe says {value}"
        header = (compose_cfg.__globals__["CONF"] / "experiment" / f"{name}.yaml").read_text().splitlines()[1]
        assert header.startswith("# Reproduces:") and "shared/seeds/" in header


def test_gan_config_errors():
    with pytest.raises(ConfigError, match="loss.adversarial.loss must be hinge or non_saturating"):
        check_config(compose_cfg(["loss=vqgan", "loss.adversarial.loss=wgan"]))
    with pytest.raises(ConfigError, match="set optimizer.grad_clip=1.0 instead"):
        check_config(compose_cfg(["+trainer.gradient_clip_val=1.0"]))
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        check_config(compose_cfg(["ema_decay=1.5"]))


def test_evaluation_module_has_no_perceptual_network_or_discriminator():
    cfg = compose_cfg(["loss=vqgan", "loss.perceptual.pretrained=false", "codebook.dim=8"])
    training = build_training_module(cfg)
    assert training.perceptual is not None and training.discriminator is not None
    evaluation = build_training_module(cfg, for_training=False)
    assert evaluation.perceptual is None and evaluation.discriminator is None


# --- through run.py ------------------------------------------------------------------------------------------------

SMALL = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.num_workers=0",
    "performance.compile=false",  # the recipes compile for the GPU; on a CPU that alone takes minutes
]


@pytest.mark.slow
def test_every_experiment_runs_through_run_py(tmp_path):
    from tests.conftest import run_cli
    from vqbench.data.fixtures import write_celeba, write_fashion_mnist, write_imagenet, write_png_folder

    celeba, imagenet = write_celeba(tmp_path / "celeba"), write_imagenet(tmp_path / "imagenet")
    ffhq, fashion = write_png_folder(tmp_path / "ffhq", 14, 128), write_fashion_mnist(tmp_path / "fm")
    small_gan = ["data.resolution=32", "loss.perceptual.pretrained=false", "loss.adversarial.start_step=1"]
    cases = {
        "celeba64_vqvae": [f"data.root={celeba}", "data.resolution=32"],
        "imagenet256_vqgan_taming": [f"data.root={imagenet}", *small_gan, "trainer.precision=bf16-mixed"],
        "imagenet256_vqgan_llamagen": [f"data.root={imagenet}", *small_gan, "ema_decay=0.999"],
        "llvq_ffhq1024": [f"data.root={ffhq}", "data.resolution=64"],
        "llvq_celeba": [f"data.root={celeba}", "trainer.precision=bf16-mixed"],
        "llvq_fashion_mnist": [f"data.root={fashion}"],
        "imagenet128_fsq": [
            f"data.root={imagenet}",
            "data.resolution=32",
            "loss.perceptual.pretrained=false",
            "trainer.precision=bf16-mixed",
        ],
    }
    for name, overrides in cases.items():
        out = tmp_path / name
        result = run_cli(f"+experiment={name}", *overrides, *SMALL, f"hydra.run.dir={out}", cwd=tmp_path)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["step"] == 2, name
        assert torch.isfinite(torch.tensor(metrics["metrics"]["val/psnr"])), name
        if "pretrained=false" in " ".join(overrides):
            assert "RANDOMLY INITIALISED" in result.stdout + result.stderr
    # TensorBoard of a GAN run: generator and discriminator losses, adaptive weight, real/fake logits
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (tmp_path / "imagenet256_vqgan_taming" / "tensorboard").glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["images"])
    expected = {
        "train/loss/generator_adversarial",
        "train/adaptive_weight",
        "train/disc/loss",
        "train/disc/logits_real",
        "train/disc/logits_fake",
        "train/loss/perceptual",
        "val/reconstructions",
    }
    assert expected <= tags
    # the weight EMA is evaluated with metrics.use_ema=true, and differs from the trained weights
    ckpt = tmp_path / "imagenet256_vqgan_llamagen" / "checkpoints" / "last.ckpt"
    for use_ema in ("true", "false"):
        run_cli(
            "+eval=true",
            f"ckpt={ckpt}",
            f"metrics.use_ema={use_ema}",
            "data.eval_batch_size=2",
            f"hydra.run.dir={tmp_path}/eval_{use_ema}",
            cwd=tmp_path,
        )
    ema, raw = (json.loads((tmp_path / f"eval_{u}" / "metrics.json").read_text())["metrics"] for u in ("true", "false"))
    assert ema["test/psnr"] != raw["test/psnr"]
    no_ema = tmp_path / "celeba64_vqvae" / "checkpoints" / "last.ckpt"
    result = run_cli(
        "+eval=true", f"ckpt={no_ema}", "metrics.use_ema=true", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path, check=False
    )
    assert result.returncode == 2 and "holds no weight EMA" in result.stderr


@pytest.mark.slow
def test_missing_vgg_weights_stop_before_the_first_step(tmp_path):
    from tests.conftest import run_cli

    env_backup = dict(os.environ)
    try:
        # an empty TORCH_HOME and an unreachable proxy: the download fails at once, even on a machine with internet
        os.environ.update(
            {
                "TORCH_HOME": str(tmp_path / "torch"),
                "https_proxy": "http://127.0.0.1:9",
                "HTTPS_PROXY": "http://127.0.0.1:9",
            }
        )
        result = run_cli(
            "loss=perceptual", "trainer.max_steps=1", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, check=False
        )
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    assert result.returncode == 2
    message = result.stderr
    assert "vgg16-397923af.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "loss.perceptual.pretrained=false" in message and "Traceback" not in message
    assert not (tmp_path / "run" / "checkpoints").exists()
