"""The speed switches (the performance group: compile, channels_last, tf32, fused_adam) train like the plain path."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.test_config import compose_cfg, group_options
from vqbench.build import build_training_module, check_config
from vqbench.errors import ConfigError
from vqbench.training.performance import set_tf32

#: A SimpleCNN tokenizer with a PatchGAN from the first step: adaptive weight, LeCam, clipping, both optimizers.
#: FSQ rather than VQ: a nearest-code search between a tiny freshly initialised codebook's near-equal codes turns
#: rounding noise into a different code, which would hide what the levers do.
TINY_GAN = [
    "model.hidden_channels=8",
    "model.latent_channels=16",
    "quantizer=fsq",
    "codebook.size=256",
    "codebook.dim=8",
    "data.resolution=16",
    "loss=vqgan",
    "loss.perceptual.weight=0",
    "loss.discriminator.channels=8",
    "loss.discriminator.layers=2",
    "loss.adversarial.start_step=0",
    "loss.adversarial.lecam_weight=0.1",
    "optimizer.lr=1e-3",
    "optimizer.grad_clip=1.0",
]
STEPS = 3


class _Record(L.Callback):
    """The loss of every step, and the gradients of the first step (generator's, then discriminator's)."""

    def __init__(self):
        self.losses, self.gradients = [], {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == 0:
            names = {id(p): n for n, p in pl_module.named_parameters()}
            for group in optimizer.param_groups:
                self.gradients |= {names[id(p)]: p.grad.detach().cpu().clone() for p in group["params"]}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach().float().cpu().clone())  # manual optimization wraps it


def _train(*overrides: str, accelerator: str = "cpu", precision: str = "32-true"):
    """(module, losses of each step, first-step gradients) after STEPS steps of TINY_GAN on fixed images, seeded
    like run.py."""
    cfg = compose_cfg([*TINY_GAN, *overrides])
    check_config(cfg)
    L.seed_everything(0, verbose=False)
    module = build_training_module(cfg)
    images = torch.rand(4 * STEPS, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    record = _Record()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[record],
    )
    trainer.fit(module, DataLoader(images, batch_size=4))
    return module.cpu(), torch.stack(record.losses), record.gradients


def _assert_trains_alike(result, reference, tolerance: float) -> None:
    """Same losses at every step and same gradients at the first, within ``tolerance`` (relative, and absolute
    on the scale of the largest gradient). Weights after Adam steps are no measure: Adam moves a weight by about
    lr whatever the size of its gradient, so rounding-level noise in a near-zero gradient flips a step of 2 lr."""
    (module, losses, gradients), (reference_module, reference_losses, reference_gradients) = result, reference
    torch.testing.assert_close(losses, reference_losses, rtol=tolerance, atol=tolerance)
    assert gradients.keys() == reference_gradients.keys() and gradients  # every parameter of both optimizers
    scale = max(float(g.abs().max()) for g in reference_gradients.values())
    for name, gradient in reference_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=tolerance, atol=tolerance * scale, msg=name)
    assert module.state_dict().keys() == reference_module.state_dict().keys()  # checkpoints keep their keys


@pytest.fixture(scope="module")
def plain():
    return _train()


@pytest.fixture
def restore_precision_flags():
    matmul, convolution = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = convolution


def test_the_performance_group_is_plain_by_default_and_recipes_stay_on_it():
    """One switchboard (conf/performance/): plain by default and in every recipe (the computation the fidelity
    references were recorded on); performance=gpu turns every switch on, except where a recipe's table needs IEEE
    fp32 (imagenet128_fsq keeps TF32 off)."""
    plain = {"compile": False, "channels_last": False, "tf32": False, "fused_adam": False}
    cfg = compose_cfg()
    assert dict(cfg.performance) == plain and cfg.trainer.deterministic == "warn"  # the bitwise-reproducible CPU run
    assert "fused" not in cfg.optimizer
    for name in group_options("experiment"):
        cfg = compose_cfg([f"+experiment={name}"])
        assert dict(cfg.performance) == plain and cfg.trainer.deterministic == "warn", name
        gpu = compose_cfg([f"+experiment={name}", "performance=gpu"])
        assert gpu.performance.compile and gpu.performance.channels_last and gpu.performance.fused_adam, name
        assert gpu.trainer.deterministic is False and gpu.trainer.benchmark is True, name
        assert gpu.performance.tf32 is (name != "imagenet128_fsq"), name


@pytest.mark.parametrize("key", ["performance.compile", "performance.tf32", "performance.fused_adam"])
def test_speed_switches_must_be_booleans(key):
    with pytest.raises(ConfigError, match=f"{key} must be true or false.*performance=gpu"):
        check_config(compose_cfg([f"{key}=cuda"]))


def test_plain_path_is_bitwise_reproducible(plain):
    module, losses, _ = _train()
    assert torch.equal(losses, plain[1])
    assert all(torch.equal(v, plain[0].state_dict()[k]) for k, v in module.state_dict().items())


def test_channels_last_trains_like_the_plain_path(plain):
    result = _train("performance.channels_last=true")
    module = result[0]
    convolutions = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    assert not all(c.weight.is_contiguous() for c in convolutions)
    _assert_trains_alike(result, plain, tolerance=1e-5)


def test_fused_adam_trains_like_the_plain_path(plain, monkeypatch):
    used = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.defaults["fused"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    result = _train("performance.fused_adam=true")
    assert used == [True] * (2 * STEPS)  # the generator's and the discriminator's optimizer, every step
    _assert_trains_alike(result, plain, tolerance=1e-6)


def test_evaluation_runs_the_plain_path():
    cfg = compose_cfg([*TINY_GAN, "performance.channels_last=true", "performance.compile=true"])
    module = build_training_module(cfg, for_training=False)
    assert module.tokenizer.encoder._compiled_call_impl is None
    assert all(p.is_contiguous() for p in module.parameters())


def test_tf32_switches_matmuls_and_convolutions_but_never_the_quantizer(restore_precision_flags):
    cfg = compose_cfg(TINY_GAN)
    quantizer = build_training_module(cfg).tokenizer.quantizer
    seen = []
    quantize = quantizer.quantize

    def recording_quantize(z):
        seen.append(torch.get_float32_matmul_precision())
        return quantize(z)

    quantizer.quantize = recording_quantize
    set_tf32(True)
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    quantizer(torch.randn(2, 8, 4, 4))
    assert seen == ["highest"]  # the code choice and the quantizer's losses stay in IEEE fp32
    assert torch.get_float32_matmul_precision() == "high"  # and the setting outside is restored
    set_tf32(False)
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32


#: Under ATEN_CPU_CAPABILITY=default, PyTorch's inductor still writes vectorised C++ (at::vec, transpose_mxn) for this
#: CPU but compiles it without the vector headers ("'at::vec' has not been declared", torch 2.14.1): a limitation of the
#: compiler under the forced scalar kernels, not of vqbench; on the CPU's own capability the test runs.
INDUCTOR_NEEDS_VECTOR_KERNELS = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT",
    reason="inductor's generated CPU kernels do not compile under ATEN_CPU_CAPABILITY=default (at::vec undeclared)",
)


@pytest.mark.slow
@INDUCTOR_NEEDS_VECTOR_KERNELS
@pytest.mark.parametrize("adaptive", [True, False])
def test_compile_trains_like_the_plain_path_and_keeps_the_quantizer_in_fp32(plain, adaptive):
    reference = plain if adaptive else _train("loss.adversarial.adaptive=false")
    result = _train("performance.compile=true", f"loss.adversarial.adaptive={str(adaptive).lower()}")
    module = result[0]
    compiled = [m for m in module.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    if adaptive:  # its extra backward passes through the decoder and discriminator keep them eager
        assert compiled == [module.tokenizer.encoder]
    else:
        assert compiled == [module.tokenizer.encoder, module.tokenizer.decoder, module.discriminator]
    _assert_trains_alike(result, reference, tolerance=1e-4)

    seen = []
    quantize = module.tokenizer.quantizer.quantize

    def recording_quantize(z):
        seen.append((z.dtype, torch.is_autocast_enabled("cpu")))
        return quantize(z)

    module.tokenizer.quantizer.quantize = recording_quantize
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reconstruction, quantized = module.tokenizer(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert reconstruction.dtype == torch.bfloat16  # the networks did run under autocast
    assert seen == [(torch.float32, False)] and quantized.codes.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists only on CUDA devices (Ampere and later)")
def test_tf32_on_cuda_trains_close_to_ieee_fp32(restore_precision_flags):
    set_tf32(False)
    reference = _train(accelerator="gpu")
    set_tf32(True)  # what run.py does for performance.tf32=true
    result = _train(accelerator="gpu")
    _assert_trains_alike(result, reference, tolerance=1e-2)


def test_a_recipe_on_the_plain_path_is_neither_compiled_nor_channels_last():
    overrides = ["+experiment=celeba64_vqvae", "model.hidden_channels=8", "model.latent_channels=8"]
    module = build_training_module(compose_cfg(overrides))
    assert module.tokenizer.encoder._compiled_call_impl is None  # not compiled
    assert module.tokenizer.encoder(torch.zeros(1, 3, 8, 8)).is_contiguous()  # NCHW, not channels-last
    assert module.optimizer_settings.fused is False
