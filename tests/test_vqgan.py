"""Issue 5: the published architectures, GAN losses, the adaptive weight, the start steps, weight EMA, experiments."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest
import torch
from lightning import Callback, Trainer
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


# --- parameter counts, computed from the layer lists in each model's docstring -----------------------------------


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
    assert count(tokenizer) == vqgan_count(1024, 256) == 72_141_699  # "72.1M" in the taming tables
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
    torch.manual_seed(0)
    default = PatchDiscriminator(init="pytorch")  # PyTorch's layer defaults: uniform conv weights, BatchNorm 1 and 0
    first = default.layers[0].weight
    assert abs(first.std() - 1 / (3 * 3 * 16) ** 0.5) < 0.01 and first.abs().max() <= 1 / 48**0.5
    bn = [m for m in default.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bn)


@pytest.mark.parametrize("hidden", [(16, 32), (64,)])
def test_lattice_cnn_layers_and_count(hidden):
    d = 64
    encoder, decoder = LatticeCNNEncoder(3, hidden, d), LatticeCNNDecoder(3, hidden, d)
    h = hidden[-1]
    widths = [3, *hidden]
    residual = conv(h, h, 3, False) + conv(h, h, 1, False)
    expected_enc = sum(conv(a, b, 4) for a, b in zip(widths, widths[1:], strict=False)) + conv(h, h, 3)
    expected_enc += 2 * residual + conv(h, d, 1)
    expected_dec = conv(d, h, 3) + 2 * residual
    back = [*reversed(hidden), 3]
    expected_dec += sum(conv(a, b, 4) for a, b in zip(back, back[1:], strict=False))  # ConvT has the same count
    assert (count(encoder), count(decoder)) == (expected_enc, expected_dec)
    # both end in a LeakyReLU, after the 1x1 conv to d and after the last ConvT (ll-vq-vae's model.py)
    assert isinstance(encoder[-1], nn.LeakyReLU) and isinstance(encoder[-2], nn.Conv2d)
    assert isinstance(decoder[-1], nn.LeakyReLU) and isinstance(decoder[-2], nn.ConvTranspose2d)
    x = torch.randn(1, 3, 64, 64)
    assert encoder(x).shape == (1, d, 64 // 2 ** len(hidden), 64 // 2 ** len(hidden))
    assert decoder(encoder(x)).shape == x.shape


def test_lattice_cnn_residual_layer_has_no_activation_before_its_first_conv():
    torch.manual_seed(0)
    layer = LatticeCNNEncoder(3, (4,), 4)[4]
    first, second = layer.body[0], layer.body[2]
    x = torch.randn(2, 4, 5, 5)  # negative inputs: relu(x) before the first conv would change the result
    expected = x + second(torch.relu(first(x)))
    torch.testing.assert_close(layer(x), expected)


def test_lattice_cnn_tokenizer_has_no_projections_around_the_quantizer():
    cfg = compose_cfg(["model=lattice_cnn", "quantizer=lattice", "codebook.dim=16", "model.hidden_channels=[8]"])
    tokenizer, _ = build_tokenizer(cfg)
    assert isinstance(tokenizer.pre_quant, nn.Identity) and isinstance(tokenizer.post_quant, nn.Identity)
    assert count(tokenizer) == count(tokenizer.encoder) + count(tokenizer.decoder) + 16  # + the lattice basis
    with pytest.raises(ValueError, match="without a pre-quant conv"):
        Tokenizer(LatticeCNNEncoder(3, (8,), 16), VectorQuantizer(32, 8), LatticeCNNDecoder(3, (8,), 16), False, False)
    with pytest.raises(ValueError, match="without a post-quant conv"):
        Tokenizer(LatticeCNNEncoder(3, (8,), 8), VectorQuantizer(32, 8), LatticeCNNDecoder(3, (8,), 16), False, False)
    projected = Tokenizer(LatticeCNNEncoder(3, (8,), 16), VectorQuantizer(32, 8), LatticeCNNDecoder(3, (8,), 16))
    assert isinstance(projected.pre_quant, nn.Conv2d)


def test_fsq_cnn_gives_16x16_tokens_at_128():
    encoder, decoder = FSQCNNEncoder(), FSQCNNDecoder(in_channels=4)
    assert count(encoder) == conv(3, 512, 4) + 2 * conv(512, 512, 4)
    # the decoder reads the 4-dim codes with its first ConvT and ends with a 1x1 conv (vector-quantize model.py)
    assert count(decoder) == conv(4, 512, 4) + 2 * conv(512, 512, 4) + conv(512, 3, 1)
    z = encoder(torch.randn(1, 3, 128, 128))
    assert z.shape == (1, 512, 16, 16) and decoder(torch.randn(1, 4, 16, 16)).shape == (1, 3, 128, 128)
    tokenizer, _ = build_tokenizer(compose_cfg(["+experiment=imagenet128_fsq"]))
    assert isinstance(tokenizer.post_quant, nn.Identity) and tokenizer.pre_quant.out_channels == 4


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


def test_exponential_schedule_steps_once_per_epoch(tmp_path):
    torch.manual_seed(0)
    tokenizer = Tokenizer(SimpleCNNEncoder(3, 8, 16), VectorQuantizer(32, 8), SimpleCNNDecoder(3, 8, 16))
    settings = OptimizerSettings(lr=1e-3, schedule="exponential", gamma=0.5)
    module = TokenizerModule(tokenizer, {"codebook": 1.0, "commitment": 0.25}, optimizer=settings)
    lrs = []

    class RecordLr(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    loader = DataLoader(torch.rand(4, 3, 16, 16) * 2 - 1, batch_size=2)
    trainer = Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        callbacks=[RecordLr()],
    )
    trainer.fit(module, loader)
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])


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


def _gan_module(start_step: int = 0, discriminator_start_step: int | None = None, **settings) -> TokenizerModule:
    """A tiny SimpleCNN + VQ tokenizer with a 2-layer PatchGAN. ``discriminator_start_step`` None: the same as
    ``start_step`` (taming's schedule). ``settings``: loss, lecam_weight, recompute_reconstruction
    (AdversarialSettings), optimizer (its name), weight_decay, grad_clip, schedule, warmup_fraction
    (OptimizerSettings), ema_decay."""
    torch.manual_seed(0)
    tokenizer = Tokenizer(SimpleCNNEncoder(3, 8, 16), VectorQuantizer(32, 8), SimpleCNNDecoder(3, 8, 16))
    if discriminator_start_step is None:
        discriminator_start_step = start_step
    return TokenizerModule(
        tokenizer,
        {"codebook": 1.0, "commitment": 0.25},
        reconstruction_loss="l1",
        discriminator=PatchDiscriminator(3, channels=8, layers=2),
        adversarial=AdversarialSettings(
            loss=settings.get("loss", "hinge"),
            weight=0.8,
            start_step=start_step,
            discriminator_start_step=discriminator_start_step,
            adaptive=True,
            lecam_weight=settings.get("lecam_weight", 0.1),
            lecam_decay=0.9,
            recompute_reconstruction=settings.get("recompute_reconstruction", False),
        ),
        optimizer=OptimizerSettings(
            name=settings.get("optimizer", "adam"),
            weight_decay=settings.get("weight_decay", 0.0),
            lr=1e-3,
            betas=(0.5, 0.9),
            grad_clip=settings.get("grad_clip"),
            schedule=settings.get("schedule", "constant"),
            warmup_fraction=settings.get("warmup_fraction", 0.0),
        ),
        ema_decay=settings.get("ema_decay"),
    )


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([item[0] for item in items])


def _fit(module: TokenizerModule, steps: int, tmp_path, images: torch.Tensor | None = None, callbacks=()) -> Trainer:
    images = torch.rand(16, 3, 16, 16) * 2 - 1 if images is None else images
    loader = DataLoader(TensorDataset(images), batch_size=4, collate_fn=_stack)
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, loader)
    return trainer


def _record_optimizer_steps(monkeypatch) -> list[dict]:
    """Every Adam step as it happens: which optimizer, its learning rate, and the gradients it applies."""
    steps = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        params = [p for group in self.param_groups for p in group["params"]]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        steps.append({"optimizer": self, "lr": self.param_groups[0]["lr"], "grads": grads})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    return steps


def _output_layer(decoder: nn.Module) -> torch.Tensor:
    return [m for m in decoder.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1].weight


def _gradient_norm(grads: list[torch.Tensor | None]) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None])))


def test_start_step_gates_the_discriminator_and_the_generator_term(tmp_path):
    """taming's schedule (discriminator_start_step = start_step): before it, no discriminator update either."""
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


def test_discriminator_trains_from_its_own_start_step(tmp_path):
    """visual-tokenizer-pytorch's schedule (the ImageNet-256 recipes): the discriminator is updated at every step
    from discriminator_start_step = 0, while the generator's adversarial term still waits for start_step."""
    module = _gan_module(start_step=3, discriminator_start_step=0)
    disc_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    calls = []
    module.discriminator.register_forward_hook(lambda m, i, o: calls.append(m.layers[0].weight.requires_grad))
    trainer = _fit(module, 2, tmp_path)
    assert trainer.global_step == 2
    assert all(not torch.equal(disc_before[k], v) for k, v in module.discriminator.state_dict().items())
    assert calls == [True, True, True, True]  # fake and real per step, no generator call before start_step
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert "generator_adversarial" not in module.generator_loss(images, step=2)[2]
    assert module.discriminator_active(0) and not module.adversarial_active(2) and module.adversarial_active(3)


@pytest.mark.parametrize("recompute", [False, True])
def test_the_discriminator_scores_the_reconstruction_before_or_after_the_generator_update(tmp_path, recompute):
    """recompute_reconstruction=false: the D step's fake batch is the generator step's reconstruction (before the
    generator's update; visual-tokenizer-pytorch 351d29d). true: the tokenizer is run again after its update
    (07352b4 train_vqgan.py run_step_d), so the fake batch is what the updated tokenizer reconstructs."""
    module = _gan_module(start_step=0, recompute_reconstruction=recompute, lecam_weight=0.0)
    inputs = []
    module.discriminator.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach().clone()))
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    _fit(module, 1, tmp_path, images=images)
    generator_call, fake, real = inputs  # the generator's adversarial term, then D on fake, then real
    assert torch.equal(real, images)
    with torch.no_grad():
        updated = module.tokenizer(images)[0]  # train mode, as during the step
    # the same operations on the same weights and batch: equal up to the kernels' run-to-run order (float32 eps x
    # the reconstruction's magnitude <= 1, x 16 for the few reductions of a tiny network)
    bound = 16 * torch.finfo(torch.float32).eps
    if recompute:
        torch.testing.assert_close(fake, updated, rtol=0, atol=bound)
        assert (fake - generator_call).abs().max() > 1e3 * bound  # the update moved it
    else:
        assert torch.equal(fake, generator_call)
        assert (fake - updated).abs().max() > 1e3 * bound


def test_adamw_decays_every_parameter_of_both_networks_but_only_those_it_updates(tmp_path):
    """optimizer.name=adamw: torch.optim.AdamW with the weight decay on every parameter of the tokenizer and the
    discriminator (visual-tokenizer-pytorch 07352b4 configs/vqgan-imagenet-llamagen.yaml: AdamW over
    model.parameters() and disc.parameters(), weight decay 0.05). A discriminator gated off receives no gradient, so
    AdamW does not decay it either (torch skips parameters without a gradient), as in the original."""
    module = _gan_module(start_step=3, optimizer="adamw", weight_decay=0.05)
    disc_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    trainer = _fit(module, 2, tmp_path)
    g_opt, d_opt = (o.optimizer if hasattr(o, "optimizer") else o for o in trainer.optimizers)
    for optimizer, network in ((g_opt, module.tokenizer), (d_opt, module.discriminator)):
        assert type(optimizer) is torch.optim.AdamW
        params = [p for group in optimizer.param_groups for p in group["params"]]
        assert {id(p) for p in params} == {id(p) for p in network.parameters()}
        assert all(group["weight_decay"] == 0.05 for group in optimizer.param_groups)
    assert all(torch.equal(disc_before[k], v) for k, v in module.discriminator.state_dict().items())
    # one AdamW step is the decoupled decay plus Adam's first step: w1 = w0 (1 - lr wd) - lr sign-ish(g)
    module = _gan_module(start_step=0, optimizer="adamw", weight_decay=0.05)
    weight = module.tokenizer.quantizer.codebook
    before = weight.detach().clone()
    decay_only = _gan_module(start_step=0, optimizer="adam", weight_decay=0.0)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    _fit(module, 1, tmp_path, images=images)
    _fit(decay_only, 1, tmp_path, images=images)
    # (w_adamw - w_adam) = -lr wd w0 exactly in exact arithmetic; float32: a few eps of |w| ~ 1/K
    torch.testing.assert_close(
        weight.detach() - decay_only.tokenizer.quantizer.codebook.detach(),
        -1e-3 * 0.05 * before,
        rtol=0,
        atol=8 * torch.finfo(torch.float32).eps,
    )


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_one_gan_step_equals_an_independent_computation(tmp_path, monkeypatch, loss):
    """The generator's total loss, the adaptive weight, the discriminator's loss with LeCam, the gradients each
    optimizer applies and the weights after the update, recomputed here from the formulas (taming-transformers'
    VQLPIPSWithDiscriminator; LeCam: Tseng et al. 2021) on copies of the initial networks."""
    module = _gan_module(start_step=0, loss=loss, lecam_weight=0.3)
    tokenizer, discriminator = copy.deepcopy(module.tokenizer), copy.deepcopy(module.discriminator)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    steps = _record_optimizer_steps(monkeypatch)
    trainer = _fit(module, 1, tmp_path, images)
    logged = trainer.callback_metrics

    reconstruction, quantized = tokenizer(images)
    nll = (reconstruction - images).abs().mean()
    logits = discriminator(reconstruction)
    g_adv = -logits.mean() if loss == "hinge" else -torch.log(torch.sigmoid(logits)).mean()
    last = _output_layer(tokenizer.decoder)
    nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(g_adv, last, retain_graph=True)[0]
    lam = (nll_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0, 1e4).detach()
    total = nll + quantized.losses["codebook"] + 0.25 * quantized.losses["commitment"] + 0.8 * lam * g_adv
    torch.testing.assert_close(logged["train/adaptive_weight"], lam)
    torch.testing.assert_close(logged["train/loss/generator_adversarial"], g_adv.detach())
    torch.testing.assert_close(logged["train/loss/total"], total.detach())
    g_grads = torch.autograd.grad(total, list(tokenizer.parameters()))

    real, fake = discriminator(images), discriminator(reconstruction.detach())
    if loss == "hinge":
        d_loss = 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    else:
        d_loss = 0.5 * (-torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean())
    ema_real, ema_fake = 0.1 * real.mean().detach(), 0.1 * fake.mean().detach()  # decay 0.9, from 0
    lecam = ((real - ema_fake) ** 2).mean() + ((fake - ema_real) ** 2).mean()
    d_total = d_loss + 0.3 * lecam
    torch.testing.assert_close(logged["train/disc/lecam"], lecam.detach())
    torch.testing.assert_close(logged["train/disc/loss"], d_total.detach())
    d_grads = torch.autograd.grad(d_total, list(discriminator.parameters()))

    assert len(steps) == 2  # one generator and one discriminator update for the one batch
    for recorded, expected in zip(steps, (g_grads, d_grads), strict=True):
        for got, want in zip(recorded["grads"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    updated = ((tokenizer, g_grads, module.tokenizer), (discriminator, d_grads, module.discriminator))
    for network, grads, trained in updated:
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, betas=(0.5, 0.9))
        for p, g in zip(network.parameters(), grads, strict=True):
            p.grad = g
        optimizer.step()
        for want, got in zip(network.parameters(), trained.parameters(), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_caps_generator_and_discriminator_gradients(tmp_path, monkeypatch):
    """The limit is far below the natural gradient norms, so every update must arrive with norm = the limit."""
    limit = 1e-3
    steps = _record_optimizer_steps(monkeypatch)
    _fit(_gan_module(start_step=0, grad_clip=limit), 2, tmp_path)
    assert len(steps) == 4  # G, D, G, D
    for step in steps:
        assert _gradient_norm(step["grads"]) == pytest.approx(limit, rel=1e-3)


def test_learning_rate_schedule_steps_once_per_batch(tmp_path, monkeypatch):
    steps = _record_optimizer_steps(monkeypatch)
    _fit(_gan_module(start_step=100, schedule="linear", warmup_fraction=0.4), 5, tmp_path)
    # 5 steps, warmup int(0.4 * 5) = 2: (k + 1) / 2 during the warmup, then (5 - k) / (5 - 2)
    expected = [1e-3 * f for f in (1 / 2, 2 / 2, 3 / 3, 2 / 3, 1 / 3)]
    assert [s["lr"] for s in steps] == pytest.approx(expected)


def test_weight_ema_is_the_running_average_of_the_trained_weights(tmp_path):
    class RecordWeights(Callback):
        def __init__(self):
            self.weights = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.weights.append([p.detach().clone() for p in pl_module.tokenizer.parameters()])

    decay = 0.7
    module = _gan_module(start_step=0, ema_decay=decay)
    average = [p.detach().clone() for p in module.tokenizer.parameters()]
    recorder = RecordWeights()
    _fit(module, 3, tmp_path, callbacks=[recorder])
    assert len(recorder.weights) == 3
    for weights in recorder.weights:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
    for got, want in zip(module.ema.module.parameters(), average, strict=True):
        torch.testing.assert_close(got, want)
    assert not all(torch.equal(a, w) for a, w in zip(average, recorder.weights[-1], strict=True))


def test_a_quantizer_loss_without_a_weight_is_an_error():
    module = _gan_module(start_step=100)
    module.loss_weights.pop("commitment")
    with pytest.raises(ConfigError, match="'commitment' loss but its config has no quantizer.commitment_weight"):
        module.generator_loss(torch.rand(2, 3, 16, 16) * 2 - 1, step=0)


def test_a_linear_schedule_without_an_end_is_an_error(tmp_path):
    module = _gan_module(start_step=100, schedule="linear")
    loader = DataLoader(TensorDataset(torch.rand(4, 3, 16, 16)), batch_size=4, collate_fn=_stack)
    trainer = Trainer(max_steps=-1, max_epochs=-1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match="set trainer.max_steps"):
        trainer.fit(module, loader)


# --- configs -------------------------------------------------------------------------------------------------------

#: Shared by the LL-VQ-VAE recipes (AGKhalil/ll-vq-vae configs/config.yaml, configs/quantizer/*.yaml).
LLVQ = {
    "optimizer.lr": 1e-3,
    "optimizer.schedule": "exponential",
    "optimizer.gamma": 0.0,
    "trainer.max_epochs": 5,
    "codebook.size": 512,
    "codebook.dim": 64,
    "codebook.ema_update_rule": "pytorch_vq_vae",
    "metrics.effective_size_splits": ["train", "val"],
}

EXPERIMENTS = {
    "celeba64_vqvae": {
        "data.batch_size": 256,
        "optimizer.lr": 4e-4,
        "trainer.max_steps": 500_000,
        "codebook.size": 512,
        "codebook.dim": 64,
        "loss.reconstruction": "mse",
    },
    "imagenet64_vqvae": {
        "data.batch_size": 256,
        "data.resolution": 64,
        "optimizer.lr": 4e-4,
        "trainer.max_steps": 500_000,
        "codebook.size": 512,
        "codebook.dim": 64,
        "loss.reconstruction": "mse",
        "metrics.ssim_window": "uniform",
    },
    "imagenet256_vqgan_taming": {
        "data.batch_size": 16,
        "optimizer.name": "adam",
        "optimizer.lr": 5e-4,
        "optimizer.betas": [0.5, 0.9],
        "optimizer.weight_decay": 0.0,
        "optimizer.grad_clip": None,
        "trainer.max_steps": 500_000,
        "codebook.size": 1024,
        "codebook.dim": 256,
        "loss.reconstruction": "l1",
        "loss.perceptual.weight": 1.0,
        "loss.adversarial.weight": 0.8,
        "loss.adversarial.adaptive": True,
        "loss.adversarial.start_step": 250_000,
        "loss.adversarial.discriminator_start_step": 250_000,
        "loss.adversarial.recompute_reconstruction": True,
        "loss.adversarial.loss": "hinge",
        "loss.discriminator.init": "pytorch",
        "model.attention_norm_eps": 1e-5,
        "quantizer.commitment_weight": 0.25,
        "quantizer.codebook_weight": 1.0,
        "metrics.ssim_window": "gaussian",
    },
    "imagenet256_vqgan_llamagen": {
        "data.batch_size": 128,
        "optimizer.name": "adamw",
        "optimizer.lr": 1e-4,
        "optimizer.betas": [0.9, 0.95],
        "optimizer.weight_decay": 0.05,
        "optimizer.grad_clip": None,
        "trainer.max_steps": 400_000,
        "codebook.size": 16384,
        "codebook.dim": 8,
        "codebook.l2_norm": True,
        "loss.reconstruction": "mse",
        "loss.adversarial.weight": 0.5,
        "loss.adversarial.adaptive": False,
        "loss.adversarial.start_step": 20_000,
        "loss.adversarial.discriminator_start_step": 20_000,
        "loss.adversarial.recompute_reconstruction": True,
        "loss.discriminator.init": "pytorch",
        "model.attention_norm_eps": 1e-5,
        "quantizer.l2_norm_mode": "seed",
        "metrics.ssim_window": "gaussian",
    },
    "imagenet256_vqgan_taming_351d29d": {
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
        "loss.adversarial.discriminator_start_step": 0,
        "loss.adversarial.loss": "hinge",
        "loss.adversarial.recompute_reconstruction": False,
        "loss.discriminator.init": "pytorch",
        "model.attention_norm_eps": 1e-5,
        "quantizer.commitment_weight": 0.25,
        "quantizer.codebook_weight": 1.0,
    },
    "imagenet256_vqgan_llamagen_351d29d": {
        "data.batch_size": 128,
        "optimizer.lr": 1e-4,
        "optimizer.name": "adam",
        "optimizer.betas": [0.9, 0.95],
        "optimizer.weight_decay": 0.0,
        "optimizer.grad_clip": 1.0,
        "trainer.max_steps": 400_000,
        "codebook.size": 16384,
        "codebook.dim": 8,
        "codebook.l2_norm": True,
        "loss.reconstruction": "mse",
        "loss.adversarial.weight": 0.5,
        "loss.adversarial.adaptive": False,
        "loss.adversarial.start_step": 20_000,
        "loss.adversarial.discriminator_start_step": 0,
        "loss.adversarial.recompute_reconstruction": False,
        "loss.discriminator.init": "pytorch",
        "model.attention_norm_eps": 1e-5,
        "quantizer.l2_norm_mode": "seed",
    },
    "llvq_ffhq1024": {
        **LLVQ,
        "data.batch_size": 32,
        "model.hidden_channels": [16, 32],
        "data.resolution": 1024,
        "data.pixel_mean": 0.0,
        "data.pixel_std": 1.0,
        "data.flip": True,
    },
    "llvq_celeba": {
        **LLVQ,
        "data.batch_size": 64,
        "model.hidden_channels": [64],
        "data.make_dataset.crop": "llvq",
        "data.resolution": 148,
        "data.pixel_mean": 0.0,
        "data.pixel_std": 1.0,
        "data.flip": True,
    },
    "llvq_fashion_mnist": {
        **LLVQ,
        "data.batch_size": 64,
        "model.hidden_channels": [64],
        "data.channels": 1,
        "data.pixel_mean": 0.5,
        "data.pixel_std": 1.0,
        "data.flip": False,
    },
    "imagenet128_fsq": {
        "data.batch_size": 256,
        "data.flip": False,
        "data.make_dataset.crop": "center",
        "data.pixel_mean": [0.485, 0.456, 0.406],
        "data.pixel_std": [0.229, 0.224, 0.225],
        "optimizer.lr": 1e-4,
        "optimizer.schedule": "annealing_linear",
        "optimizer.warmup_fraction": 0.01,
        "optimizer.schedule_steps": 500_000,
        "trainer.max_steps": 500_400,
        "data.resolution": 128,
        "model.post_quant_conv": False,
        "loss.reconstruction": "l1",
        "loss.perceptual.weight": 1.0,
        "loss.perceptual.input_range": [0, 1],
        "codebook.dim": 4,
        "quantizer.levels": [8, 5, 5, 5],
        "quantizer.bound": "tan",
        "metrics.loss_terms": True,
        "metrics.precision": "32-true",
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
        lines = (compose_cfg.__globals__["CONF"] / "experiment" / f"{name}.yaml").read_text().splitlines()
        header = " ".join(line.removeprefix("# ") for line in lines[1:4])
        assert lines[1].startswith("# Reproduces:")
        assert re.search(r"[\w-]+/[\w.-]+ [\w/.-]+\.md \(commit [0-9a-f]{7}\)", header), f"{name} cites no source file"


def test_gan_config_errors():
    with pytest.raises(ConfigError, match="loss.adversarial.loss must be hinge or non_saturating"):
        check_config(compose_cfg(["loss=vqgan", "loss.adversarial.loss=wgan"]))
    with pytest.raises(ConfigError, match="set optimizer.grad_clip=1.0 instead"):
        check_config(compose_cfg(["+trainer.gradient_clip_val=1.0"]))
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        check_config(compose_cfg(["ema_decay=1.5"]))
    with pytest.raises(ConfigError, match="loss.discriminator.init must be one of taming, pytorch; got 'xavier'"):
        check_config(compose_cfg(["loss=vqgan", "loss.discriminator.init=xavier"]))
    with pytest.raises(ConfigError, match="optimizer.name must be one of adam, adamw"):
        check_config(compose_cfg(["optimizer.name=sgd"]))
    with pytest.raises(ConfigError, match="loss.adversarial.recompute_reconstruction must be true or false"):
        check_config(compose_cfg(["loss=vqgan", "loss.adversarial.recompute_reconstruction=sometimes"]))
    with pytest.raises(ConfigError, match="loss.adversarial.discriminator_start_step must be a step number >= 0"):
        check_config(compose_cfg(["loss=vqgan", "loss.adversarial.discriminator_start_step=-1"]))


def test_loss_group_keeps_tamings_schedule_and_init():
    """loss=vqgan alone is taming's objective: the discriminator starts with the generator term, N(0, 0.02)."""
    cfg = compose_cfg(["loss=vqgan", "loss.adversarial.start_step=7"])
    assert cfg.loss.adversarial.discriminator_start_step == 7 and cfg.loss.discriminator.init == "taming"
    assert compose_cfg(["model=vqgan"]).model.attention_norm_eps == 1e-6


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
    from tests.recomputed import assert_metrics_match, reference_metrics
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
        # the final validation (limit_val_batches=1: the first 2 images) recomputed from the checkpoint, under the
        # recipe's precision
        expected = reference_metrics(out / "checkpoints" / "last.ckpt", "val", images=2)
        assert_metrics_match(metrics["metrics"], expected)
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
    # metrics.use_ema=true evaluates the weight EMA of the checkpoint, false the trained weights: each equals the
    # metrics recomputed from those weights, and the two differ
    ckpt = tmp_path / "imagenet256_vqgan_llamagen" / "checkpoints" / "last.ckpt"
    for use_ema in (True, False):
        out = tmp_path / f"eval_{use_ema}"
        run_cli(
            "+eval=true",
            f"ckpt={ckpt}",
            f"metrics.use_ema={str(use_ema).lower()}",
            "metrics.lpips=false",
            "metrics.rfid=false",
            "data.eval_batch_size=2",
            f"hydra.run.dir={out}",
            cwd=tmp_path,
        )
        recorded = json.loads((out / "metrics.json").read_text())["metrics"]
        assert_metrics_match(recorded, reference_metrics(ckpt, "test", use_ema=use_ema))
    ema, raw = (reference_metrics(ckpt, "test", use_ema=use_ema)["test/psnr"] for use_ema in (True, False))
    assert abs(ema - raw) > 1e-3
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
