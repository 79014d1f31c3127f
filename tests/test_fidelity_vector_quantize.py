"""The ImageNet-128 FSQ recipes against the code behind their tables: Doraemonzzz/vector-quantize at 3f0178c.

The fixtures (``tests/reference/vector_quantize/``) were recorded from that commit by ``record.py`` there: the table's
model for each row type (FSQ 8-6-5 and 7-5-5-5-5, SFSQ 8-8-8-5-5-5, EMA VQ, LFQ) at narrow widths, its initial
weights, four training steps exactly as its ``train.py`` runs them, and the quantities its ``eval_ddp.py`` reports.
Here vqbench builds the same rows through its own configs (``+experiment=imagenet128_fsq`` with the row and
overrides that only narrow it), loads the recorded initial weights, and runs the same four steps through its real
``TokenizerModule`` training step under a Lightning Trainer.

Tolerances. Both sides run float32 with the same layers in the same order, so the losses agree to rounding: 2e-6
relative at most over the four steps (bound 1e-5), the token ids and the learning rates exactly, the EMA buffers to
4e-7. Gradients and weight updates are compared by relative norm per tensor, with a looser bound (1e-2; measured
3.4e-3 and 2.4e-3 at most): the encoder's gradient is a small sum of large terms, so float32 rounding reaches 1e-3 of
it, and Adam's normalisation turns rounding in near-zero gradient entries into lr-sized differences. That is
rounding, not a different computation: run in float64 on both sides the updates agree to 6e-8 (vqbench's quantizer
stays in float32). The original also never zeroed its gradients (its GradScaler's in-place unscaling leaves each
previous gradient in with weight 1/65,536); vqbench keeps ``zero_grad``, a difference far below these bounds.
A wrong loss weight, input range, schedule, quantizer rule or layer moves the losses of the later steps by orders of
magnitude more than 1e-5.
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pytest
import torch
import torchvision
from lightning import Callback, Trainer
from omegaconf import OmegaConf

from tests.reference.vector_quantize.record import COMMIT, random_lpips_weights
from tests.test_config import compose_cfg
from vqbench.build import build_datamodule, build_evaluation_metrics, build_training_module, check_config
from vqbench.data.imagenet import imagenet_split
from vqbench.errors import ConfigError
from vqbench.quantizers import FSQ
from vqbench.training.module import OptimizerSettings, lr_factor

FIXTURES = Path(__file__).resolve().parent / "reference" / "vector_quantize"

#: Recorded case -> (row of sweeps/imagenet128_fsq_rows, the overrides that narrow it like the recording).
CASES = {
    "fsq_8-6-5": ("fsq_8-6-5", []),
    "fsq_7-5-5-5-5": ("fsq_7-5-5-5-5", []),
    "sfsq_8-8-8-5-5-5": ("sfsq_8-8-8-5-5-5", []),
    "ema": ("ema", ["codebook.size=16", "codebook.dim=8"]),
    "lfq": ("lfq", ["codebook.size=64", "codebook.dim=6"]),
}
NARROW = [
    "model.channels=8",
    "data.resolution=16",
    "data.batch_size=4",
    # the recording's shortened schedule (train_iters 10, warmup 0.2) and lr, so four steps see lr 0, warmup, decay
    "optimizer.lr=1e-3",
    "optimizer.warmup_fraction=0.2",
    "optimizer.schedule_steps=10",
    "trainer.max_steps=4",
    "loss.perceptual.pretrained=false",  # replaced by the recording's random LPIPS weights below
    "metrics.lpips=false",
    "metrics.rfid=false",
]
#: vector-quantize model.py parameter names -> vqbench's (the encoder's last 1x1 conv is the tokenizer's pre_quant).
PREFIXES = {
    "enc.blocks.0.": "tokenizer.encoder.0.",
    "enc.blocks.2.": "tokenizer.encoder.2.",
    "enc.blocks.4.": "tokenizer.encoder.4.",
    "enc.blocks.6.": "tokenizer.pre_quant.",
    "dec.blocks.": "tokenizer.decoder.",
}
EMA_BUFFERS = {
    "quantize_t.embed.weight": "tokenizer.quantizer.codebook",
    "quantize_t.cluster_size": "tokenizer.quantizer.ema_counts",
    "quantize_t.embed_avg": "tokenizer.quantizer.ema_sums",
}
LOSS_RTOL, EMA_RTOL, GRAD_RTOL, UPDATE_RTOL = 1e-5, 1e-5, 1e-2, 1e-2


def ours(name: str) -> str | None:
    """The vqbench module's state-dict key of an original one (None: a constant with no counterpart, LFQ's mask)."""
    if name in EMA_BUFFERS:
        return EMA_BUFFERS[name]
    for prefix, replacement in PREFIXES.items():
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    assert name == "quantize_t.mask", name
    return None


def lfq_index_in_original_order(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """vqbench numbers LFQ codes with the first channel as the lowest bit, the original (``quantizers/lfq.py``'s
    mask 2^(d-1-i)) as the highest: the same partition of the latents, the bits in reverse order."""
    digits = (indices.unsqueeze(-1) >> torch.arange(bits)) & 1
    return (digits * 2 ** torch.arange(bits - 1, -1, -1)).sum(-1)


def load(name: str) -> dict:
    record = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    assert record["commit"] == COMMIT
    return record


def fast_vgg16(pretrained: bool = False, **kwargs) -> types.SimpleNamespace:
    """VGG16's convolutional trunk only: LPIPS uses ``.features``; the classifier (123M parameters) would cost
    seconds per module to initialise and is never used."""
    assert not pretrained
    return types.SimpleNamespace(features=torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]))


@pytest.fixture(scope="module")
def shared_lpips():
    """The recording's random LPIPS(VGG16) weights, keyed like the lpips package's (and the original's) modules."""
    import lpips

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lpips.pretrained_networks.tv, "vgg16", fast_vgg16)
        reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        weights = random_lpips_weights(reference.state_dict(), seed=load("batches")["perceptual_seed"])
    return weights


def use_lpips_weights(perceptual, weights: dict) -> None:
    missing, unexpected = perceptual.lpips.load_state_dict(weights, strict=False)
    assert not unexpected and all(name.startswith(("scaling_layer", "lins.")) for name in missing)


class Recorder(Callback):
    """Per optimizer step: the lr it uses, the generator's loss terms, the token ids; the gradients of the first
    step and the tokenizer's state after the first step; EMA buffers after every step."""

    def __init__(self, module):
        self.steps, self.first_grads, self.state_after_first_step = [], None, None
        names = {id(p): f"tokenizer.{n}" for n, p in module.tokenizer.named_parameters()}
        generator_loss = module.generator_loss

        def recording_generator_loss(images, step):
            self.steps.append({})
            total, reconstruction, terms = generator_loss(images, step)
            self.steps[-1]["terms"] = {k: v.detach().clone() for k, v in terms.items()}
            return total, reconstruction, terms

        module.generator_loss = recording_generator_loss
        module.tokenizer.quantizer.register_forward_hook(
            lambda _, __, output: (
                self.steps[-1].__setitem__("indices", output.indices.clone()) if module.training else None
            )
        )
        self.module, self.names = module, names

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        optimizer.register_step_pre_hook(self.before_step)
        optimizer.register_step_post_hook(self.after_step)

    def before_step(self, optimizer, args, kwargs) -> None:
        self.steps[-1]["lr"] = optimizer.param_groups[0]["lr"]
        if self.first_grads is None:
            self.first_grads = {
                self.names[id(p)]: p.grad.clone()
                for group in optimizer.param_groups
                for p in group["params"]
                if p.grad is not None  # the EMA row's codebook: a parameter without gradient
            }

    def after_step(self, optimizer, args, kwargs) -> None:
        state = {f"tokenizer.{k}": v.clone() for k, v in self.module.tokenizer.state_dict().items()}
        self.steps[-1]["state"] = state
        if self.state_after_first_step is None:
            self.state_after_first_step = state


def build(case: str, shared_lpips: dict):
    row, overrides = CASES[case]
    cfg = compose_cfg(["+experiment=imagenet128_fsq", f"sweep/imagenet128_fsq_rows={row}", *NARROW, *overrides])
    module = build_training_module(cfg)
    use_lpips_weights(module.perceptual, shared_lpips)
    return cfg, module


def relative_difference(ours_: torch.Tensor, original: torch.Tensor) -> float:
    return ((ours_ - original).norm() / original.norm()).item()


@pytest.mark.parametrize("case", list(CASES))
def test_training_steps_match_the_original(case, shared_lpips, monkeypatch, tmp_path):
    import lpips

    monkeypatch.setattr(lpips.pretrained_networks.tv, "vgg16", fast_vgg16)
    record, batches = load(case), load("batches")["batches"]
    cfg, module = build(case, shared_lpips)
    if case == "ema":  # the original's initial buffers (quantizers/vq.py:106-109): zero counts, sums = the codes
        quantizer = module.tokenizer.quantizer
        assert torch.equal(quantizer.ema_counts, record["initial_state"]["quantize_t.cluster_size"])
        assert torch.equal(quantizer.ema_sums, quantizer.codebook)
        assert quantizer.codebook.abs().max() <= 1 / quantizer.codebook_size  # U(-1/K, 1/K)
    # the recording's weights (its EMA codebook starts along the latents, see record.py), keys mapped
    state = {ours(k): v for k, v in record["initial_state"].items() if ours(k) is not None}
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("tokenizer.")], missing

    recorder = Recorder(module)
    trainer = Trainer(
        max_steps=len(batches),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))

    assert len(recorder.steps) == len(record["steps"]) == 4
    bits = cfg.codebook.dim if case == "lfq" else None
    for step, (expected, got) in enumerate(zip(record["steps"], recorder.steps, strict=True)):
        assert got["lr"] == pytest.approx(expected["lr"], abs=1e-12), f"step {step}: lr"
        terms = got["terms"]
        for name, original in (("reconstruction", "l1"), ("perceptual", "perceptual"), ("total", "loss")):
            torch.testing.assert_close(terms[name], expected[original], rtol=LOSS_RTOL, atol=0, msg=f"{step} {name}")
        if case == "ema":  # the original's commitment_cost (1) times MSE(z, sg(q)) is its codebook_loss
            torch.testing.assert_close(terms["commitment"], expected["codebook_loss"], rtol=LOSS_RTOL, atol=0)
        indices = got["indices"] if bits is None else lfq_index_in_original_order(got["indices"], bits)
        assert torch.equal(indices, expected["indices"].long()), f"step {step}: token ids differ"
        if case == "ema":  # codebook, counts and sums after each step's update
            for name, key in EMA_BUFFERS.items():
                assert relative_difference(got["state"][key], expected["quantizer_state"][name]) < EMA_RTOL, name

    for name, grad in record["first_grads"].items():
        assert relative_difference(recorder.first_grads[ours(name)], grad) < GRAD_RTOL, f"first gradient of {name}"
    for name, value in record["state_after_first_step"].items():  # lr 0 at the first step: no weight moved
        if ours(name) is not None and not name.startswith("quantize_t."):
            assert torch.equal(recorder.state_after_first_step[ours(name)], value), name
    for name, value in record["final_state"].items():
        if ours(name) is not None and not name.startswith("quantize_t."):
            update, ours_update = value - record["initial_state"][name], recorder.steps[-1]["state"][ours(name)]
            ours_update = ours_update - record["initial_state"][name]
            assert relative_difference(ours_update, update) < UPDATE_RTOL, f"update of {name}"

    # eval_ddp.py's quantities on one batch, through vqbench's evaluation metrics
    expected = record["eval"]
    module.eval()
    metrics, unavailable = build_evaluation_metrics(cfg, (16, 16))
    assert not unavailable and {"loss/reconstruction", "loss/perceptual"} <= set(metrics)
    use_lpips_weights(metrics["loss/perceptual"].network, shared_lpips)
    module.add_test_metrics(metrics)
    with torch.no_grad():
        reconstruction = module._evaluation_step("test", batches[0])
    assert relative_difference(reconstruction, expected["reconstructions"]) < 1e-4
    results = {k: v.compute() for k, v in module.metrics["test"].items()}
    torch.testing.assert_close(results["loss/reconstruction"].float(), expected["l1"], rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(results["loss/perceptual"].float(), expected["perceptual"], rtol=LOSS_RTOL, atol=0)
    counted = module.metrics["test"]["codebook"].counts.nonzero().flatten()  # the codes the usage metric saw
    if bits is not None:
        counted = lfq_index_in_original_order(counted, bits)
    assert set(counted.tolist()) == set(expected["indices"].flatten().tolist())
    used = results["codebook"]["effective_codebook_size"].item()
    assert used == expected["used_codes"]
    # usage: used codes / K; the original divides by prod(--levels), which is K only for the FSQ rows
    codebook_size = module.tokenizer.quantizer.codebook_size
    assert results["codebook"]["codebook_usage"].item() == pytest.approx(used / codebook_size)
    if case.startswith(("fsq", "sfsq")):
        assert expected["usage_denominator"] == codebook_size


def test_imagenet_preprocessing_matches_the_original():
    """The recipe's data config (data=imagenet, crop=center, ImageNet mean/std) turns the recorded JPEGs into the
    tensors the original's ImageFolder + get_transform (Resize 128, CenterCrop 128, ToTensor, Normalize) gave."""
    record = load("data")
    cfg = compose_cfg(["+experiment=imagenet128_fsq", f"data.root={FIXTURES / 'photos'}"])
    datamodule = build_datamodule(cfg)
    dataset = datamodule.dataset("val")
    assert [p.relative_to(FIXTURES).as_posix() for p in dataset.files] == record["files"]
    images = torch.stack([dataset[i] for i in range(len(dataset))])
    assert images.dtype == torch.uint8 and images.shape[-2:] == (128, 128)
    model_space = datamodule.on_after_batch_transfer(images, 0)
    torch.testing.assert_close(model_space, record["images"], rtol=0, atol=1e-6)
    # the training split is preprocessed the same way (no random crop), and not flipped
    assert repr(datamodule.make_dataset("val").transform) == f"ResizeThenCenterCrop(resolution={cfg.data.resolution})"
    assert cfg.data.flip is False


def test_annealing_linear_is_the_original_schedule():
    """AnnealingLR (scheduler.py) with the recipe's numbers: lr 0 at the first step, 1e-4 at step W = 5,000, then
    1e-4 (T - (n - W)) / T with T = 500,000, never reaching 0 within the 500,400 steps."""
    cfg = compose_cfg(["+experiment=imagenet128_fsq"])
    settings = OptimizerSettings(**{**OmegaConf.to_container(cfg.optimizer), "betas": (0.9, 0.999)})
    total = cfg.trainer.max_steps
    assert [lr_factor(n, total, settings) for n in (0, 1, 2500, 5000)] == [0.0, 1 / 5000, 0.5, 1.0]
    assert lr_factor(5001, total, settings) == pytest.approx((500_000 - 1) / 500_000)
    assert lr_factor(total - 1, total, settings) == pytest.approx((500_000 - (500_399 - 5000)) / 500_000)
    assert lr_factor(600_000, total, settings) == 0.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.pixel_std=0", "data.pixel_std must be a positive number"),
        ("data.pixel_mean=[0.5,0.5]", "data.pixel_mean must be a number or a list of data.channels=3"),
        ("loss.perceptual.input_range=[0]", "loss.perceptual.input_range must be [low, high]"),
        ("optimizer.schedule=cosine", "optimizer.schedule must be one of constant, linear, annealing_linear"),
        ("optimizer.schedule_steps=0", "optimizer.schedule_steps must be a positive number of steps"),
    ],
)
def test_recipe_options_reject_bad_values(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_cfg(["+experiment=imagenet128_fsq", override]))


def test_bad_quantizer_and_crop_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="data.make_dataset.crop must be one of adm, center"):
        imagenet_split("val", root=str(FIXTURES / "photos"), crop="random")
    with pytest.raises(ValueError, match="quantizer.bound must be one of atanh, tan"):
        FSQ(4, levels=[8, 5, 5, 5], bound="sin")


# --- the EMA row under DDP, 2 processes (tests/reference/vector_quantize/record_ddp.py) ------------------------------


class _QuantizerBehindConv(torch.nn.Module):
    """record_ddp.py's model: one 1x1 convolution, then the quantizer."""

    def __init__(self, quantizer):
        super().__init__()
        self.conv = torch.nn.Conv2d(quantizer.dim, quantizer.dim, 1)
        self.quantizer = quantizer

    def forward(self, x):
        return self.quantizer(self.conv(x))


def _ddp_worker(rank: int, world_size: int, init_file: str, quantizer_cfg: dict, ema_cfg: dict, out: str) -> None:
    import torch.distributed as dist

    from vqbench.build import build_quantizer, build_training_module

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        record = load("ema_ddp")
        data = record["inputs"]
        quantizer, weights = build_quantizer(OmegaConf.create(quantizer_cfg))
        net = _QuantizerBehindConv(quantizer.train())
        with torch.no_grad():
            net.conv.weight.copy_(data["conv_weight"])
            net.conv.bias.copy_(data["conv_bias"])
            quantizer.codebook.copy_(data["codebook"])
            quantizer.ema_sums.copy_(data["codebook"])
        # as Lightning's DDP strategy wraps the training module: default broadcast_buffers, no unused parameters
        model = torch.nn.parallel.DistributedDataParallel(net)
        optimizer = torch.optim.SGD(model.parameters(), lr=record["settings"]["lr"])
        steps = []
        for step in range(len(data["latents"])):
            optimizer.zero_grad()
            out_ = model(data["latents"][step, rank])
            commitment = weights["commitment"] * out_.losses["commitment"]
            loss = commitment + (out_.codes - data["targets"][step, rank]).pow(2).mean()
            loss.backward()
            optimizer.step()
            steps.append(
                {
                    "indices": out_.indices.clone(),
                    "commitment": commitment.detach().clone(),
                    "codebook": quantizer.codebook.detach().clone(),
                    "counts": quantizer.ema_counts.clone(),
                    "sums": quantizer.ema_sums.clone(),
                    "conv_weight": net.conv.weight.detach().clone(),
                }
            )
        # what the training module's checkpoint hook (run on every rank; rank 0 writes the file) stores
        module = build_training_module(OmegaConf.create(ema_cfg))
        module.tokenizer.quantizer.load_state_dict(quantizer.state_dict())
        checkpoint = {"state_dict": module.state_dict()}
        module.on_save_checkpoint(checkpoint)
        saved = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("tokenizer.quantizer.")}
        torch.save({"steps": steps, "saved": saved}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ema_row_under_ddp_matches_the_original_on_every_rank(tmp_path):
    """The ImageNet-128 EMA row (quantizer.distributed_update=rank_local_sums) on 2 processes against
    Doraemonzzz/vector-quantize's VectorQuantizeEMA under DDP on 2 processes, rank by rank: token ids, loss, counts
    (all-reduced), sums (rank-local after rank 0's were broadcast), per-rank codebooks, and the checkpoint holding
    rank 1's codebook and sums, as the original's (written by every rank but 0).

    Tolerance: the ids must be equal; every float is a sum of at most 64 products of O(1) terms per step, over
    4 steps, with sums divided by smoothed counts down to ~1e-2: float32 eps (1.2e-7) x 64 x 4 x 1e2 ~ 3e-3 absolute
    on the largest codes (~5), i.e. below 1e-3 relative; we require 1e-4 relative (summation orders differ only
    by the all-reduce's order of two terms) and 1e-5 on the counts (sums of ones)."""
    import torch.multiprocessing as mp

    record = load("ema_ddp")
    settings = record["settings"]
    overrides = [f"codebook.size={settings['codebook_size']}", f"codebook.dim={settings['dim']}"]
    cfg = compose_cfg(["+experiment=imagenet128_fsq", "sweep/imagenet128_fsq_rows=ema", *overrides])
    assert cfg.quantizer.distributed_update == "rank_local_sums"
    assert (cfg.quantizer.decay, cfg.quantizer.epsilon) == (settings["decay"], settings["eps"])
    for other in ("fsq_8-6-5", "lfq"):  # every other recipe: no such option, or the synchronized update
        assert (
            compose_cfg(["+experiment=imagenet128_fsq", f"sweep/imagenet128_fsq_rows={other}"]).quantizer.get(
                "distributed_update", "synchronized"
            )
            == "synchronized"
        )
    tiny = compose_cfg(
        ["quantizer=ema", "quantizer.distributed_update=rank_local_sums", *overrides, "loss.perceptual.weight=0"]
    )
    args = (OmegaConf.to_container(cfg.quantizer, resolve=True), OmegaConf.to_container(tiny, resolve=True))
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), *args, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    for rank, (expected_steps, got) in enumerate(zip(record["ranks"], ranks, strict=True)):
        for step, (expected, ours_) in enumerate(zip(expected_steps, got["steps"], strict=True)):
            where = f"rank {rank} step {step}"
            assert torch.equal(ours_["indices"], expected["indices"]), f"{where}: token ids"
            torch.testing.assert_close(ours_["commitment"], expected["commitment"], rtol=1e-4, atol=0, msg=where)
            torch.testing.assert_close(ours_["counts"], expected["counts"], rtol=1e-5, atol=1e-6, msg=where)
            for key in ("sums", "codebook", "conv_weight"):
                assert relative_difference(ours_[key], expected[key]) < 1e-4, f"{where}: {key}"
    # the ranks really drifted apart, and the checkpoint holds rank 1's codebook and sums on every rank
    assert relative_difference(ranks[0]["steps"][-1]["codebook"], ranks[1]["steps"][-1]["codebook"]) > 1e-2
    saved = record["saved_state"]
    assert record["saving_ranks"] == [1]
    for rank in range(2):
        got = ranks[rank]["saved"]
        for key, original in (("codebook", "embed.weight"), ("ema_sums", "embed_avg"), ("ema_counts", "cluster_size")):
            expected = saved[f"module.quantize_t.{original}"]
            assert relative_difference(got[f"tokenizer.quantizer.{key}"], expected) < 1e-4, f"rank {rank}: {key}"
