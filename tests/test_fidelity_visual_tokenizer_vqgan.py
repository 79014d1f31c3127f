"""Fidelity of the ImageNet-256 VQGAN recipes (``+experiment=imagenet256_vqgan_taming`` / ``_llamagen``) against the
code that produced their table: xyfJASON/visual-tokenizer-pytorch ``train_vqgan.py`` and ``evaluate.py`` at commit
351d29ddf8f41d8ac41224025023668ed4ad0de0, as ``tests/reference/visual_tokenizer/record_vqgan.py`` recorded it.

vqbench is built through its own configs (the experiment + the narrowing the recorder applied to the original's
configs), loaded with the recorded initial weights, and run through the real ``TokenizerModule.training_step`` under
a Lightning Trainer on the recorded batches. Every recorded quantity is compared: each loss term, the adaptive weight,
the discriminator's logits call by call (before and after the adversarial start step), the gradients the optimizers
step with at the first step and at the first adversarial step, the weights of both networks (and BatchNorm's running
statistics) after the steps, then the evaluation path (indices, PSNR, SSIM, LPIPS, the PNG pixels rFID reads, codebook
usage, perplexity) and the ImageNet crops of real photographs.

Tolerances (the constants below, each with its reason). Both sides compute in float32 with the same operations in a
different arrangement (SDPA against bmm-softmax attention, addmm distances, other summation orders), so single values
agree to ~1e-7 relative; the discriminator's BatchNorm over a few values and the ReLU kinks of the random LPIPS trunk
amplify that in the adversarial term and in the adaptive weight, whose formula is therefore also checked exactly on
the original's own gradients. Adam normalises each gradient by its running RMS, so weights are compared in learning
rates. Crops and token ids are compared bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import random
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning import Callback, Trainer
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torchvision.models.vgg import cfgs, make_layers

from tests.reference.visual_tokenizer.vqgan_common import COMMIT, alexnet_trunk, fixture_path, load_trunk, vgg16_trunk
from tests.test_config import compose_cfg
from vqbench.build import build_datamodule, build_training_module
from vqbench.data.imagenet import imagenet_split
from vqbench.data.images import open_image
from vqbench.data.module import to_model_range
from vqbench.data.transforms import CenterCropADM, RandomResizedCropADM
from vqbench.losses import PerceptualLoss, adaptive_weight
from vqbench.metrics import psnr, ssim, to_uint8
from vqbench.metrics.lpips_metric import LPIPS
from vqbench.models import PatchDiscriminator
from vqbench.training.module import to_unit_range

RECIPES = ("taming", "llamagen")

# Tolerances (float32 on both sides; the measured agreement is in docs/recipes.md):
#: reconstruction, LPIPS, quantizer terms, discriminator loss, gradient norms: the same sums in another order
LOSS_RTOL = 1e-5
#: the generator's adversarial term and the logits, which pass BatchNorm's statistics of 18 values per channel
ADVERSARIAL_RTOL = 1e-4
#: λ = |grad L_rec| / |grad L_G| at the last layer: 1e-7 perturbations of the input move it by 1e-4 (measured)
ADAPTIVE_RTOL = 5e-4
#: gradients, relative to the largest gradient of the network at that step (from the adversarial step on they carry
#: the adaptive weight's noise)
GRADIENT_ATOL = 2e-4
#: weights, in learning rates per step taken
WEIGHT_ATOL_LR = 1e-2
#: Adam's step g / (sqrt(v) + 1e-8) is ill-conditioned for nonzero gradients within a hundred epsilons of 0 (among
#: them the attention key biases, whose gradient is exactly 0 in exact arithmetic): float32 rounding of such a gradient
#: moves its weight by up to 2 lr, so these elements are only checked to that bound (and must stay under 1 %).
ILL_CONDITIONED_GRADIENT = 1e-6


@functools.cache
def fixture(name: str) -> dict:
    path = fixture_path(name)
    if not path.is_file():
        pytest.skip(f"{path.name} is missing; record it with tests/reference/visual_tokenizer/record_vqgan.py")
    recorded = torch.load(path, weights_only=True)
    assert recorded["commit"] == COMMIT
    return recorded


@functools.cache
def vgg16_weights() -> dict[str, torch.Tensor]:
    return vgg16_trunk()


def trunk_only_vgg16(pretrained: bool = False, **kwargs) -> types.SimpleNamespace:
    """torchvision's VGG16 as the lpips package uses it (``.features``), without the 102M-parameter classifier that
    LPIPS never reads and whose random initialisation is most of the build time. The trunk is replaced by the
    seeded one right after the build."""
    assert not pretrained
    return types.SimpleNamespace(features=make_layers(cfgs["D"]))


@functools.cache
def lpips_metric() -> LPIPS:
    """vqbench's evaluation LPIPS (AlexNet) with the seeded trunk the recorder gave evaluate.py's."""
    metric = LPIPS(pretrained=False)
    load_trunk(metric.net.net, alexnet_trunk())
    return metric


def narrow_overrides(recipe: str) -> list[str]:
    """The experiment, narrowed exactly as the recorder narrowed the original's config."""
    n = fixture(recipe)["narrowing"]
    return [
        f"+experiment=imagenet256_vqgan_{recipe}",
        f"model.channels={n['dim']}",
        f"model.channel_mult=[{','.join(str(m) for m in n['dim_mults'])}]",
        f"model.num_res_blocks={n['num_res_blocks']}",
        f"model.attention_levels=[{len(n['dim_mults']) - 1}]",  # the original attends at its last level
        f"model.z_channels={n['z_channels']}",
        f"model.norm_groups={n['norm_groups']}",
        f"codebook.size={n['codebook_num']}",
        f"codebook.dim={n['codebook_dim']}",
        f"loss.discriminator.channels={n['disc_dim']}",
        f"loss.discriminator.layers={n['disc_layers']}",
        f"loss.adversarial.start_step={n['start_adv']}",
        f"data.resolution={n['img_size']}",
        f"data.batch_size={n['batch_size']}",
        f"trainer.max_steps={n['n_steps']}",
        "loss.perceptual.pretrained=false",
    ]


# --- key mapping: both sides register their tensors in forward order -------------------------------------------

#: (original prefix, vqbench prefix) of the tokenizer's parts; within a part the tensors correspond one to one, in order
TOKENIZER_PARTS = [
    ("encoder.", "encoder."),
    ("enc2code.", "pre_quant."),
    ("quantizer.codebook.weight", "quantizer.codebook"),
    ("code2dec.", "post_quant."),
    ("decoder.", "decoder."),
]


def key_map(original_keys, vqbench_keys, parts) -> dict[str, str]:
    mapping = {}
    for source, target in parts:
        ours = [k for k in original_keys if k.startswith(source)]
        theirs = [k for k in vqbench_keys if k.startswith(target)]
        assert len(ours) == len(theirs), f"{source}: {len(ours)} tensors in the original, {len(theirs)} in vqbench"
        mapping.update(zip(ours, theirs, strict=True))
    return mapping


def tokenizer_map(module) -> dict[str, str]:
    return key_map(list(fixture("taming")["model_init"]), list(module.tokenizer.state_dict()), TOKENIZER_PARTS)


def load_mapped(target: torch.nn.Module, state: dict[str, torch.Tensor], mapping: dict[str, str]) -> None:
    own = target.state_dict()
    for source, name in mapping.items():
        assert own[name].shape == state[source].shape, (source, name)
    target.load_state_dict({mapping[k]: v for k, v in state.items() if k in mapping}, strict=True)


def disc_map(module, original_keys) -> dict[str, str]:
    return key_map(list(original_keys), list(module.state_dict()), [("seq.", "layers.")])


# --- training --------------------------------------------------------------------------------------------------


class Observer(Callback):
    """Keeps what vqbench's training_step passes through, step by step (passive: returns what it is given)."""

    def __init__(self, module, gradient_steps):
        self.step = -1
        self.gradient_steps = gradient_steps
        self.terms: dict[int, dict] = {}
        self.disc_terms: dict[int, dict] = {}
        self.disc_calls: list[tuple[int, str, torch.Tensor]] = []
        self.gradients: dict[int, dict] = {}
        self.clip_norms: dict[int, dict] = {}
        self.tokenizer_after: dict[int, dict] = {}
        self.disc_after: dict[int, dict] = {}
        self.optimizer_steps: list[tuple[int, str]] = []
        # per step and network: the elements whose gradient was below ILL_CONDITIONED_GRADIENT at any step so far
        self.ill_conditioned: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        self._tiny: dict[str, dict[str, torch.Tensor]] = {"model": {}, "disc": {}}
        self._wrap(module)

    def _wrap(self, module) -> None:
        generator_loss, discriminator_step_loss, clip = (
            module.generator_loss,
            module.discriminator_step_loss,
            module.clip_gradients,
        )

        def observed_generator_loss(images, step):
            total, reconstruction, terms = generator_loss(images, step)
            self.terms[self.step] = {k: v.detach().clone() for k, v in terms.items()}
            return total, reconstruction, terms

        def observed_discriminator_step_loss(images, reconstruction):
            loss, terms = discriminator_step_loss(images, reconstruction)
            self.disc_terms[self.step] = {k: v.detach().clone() for k, v in terms.items()}
            return loss, terms

        def observed_clip(optimizer, *args, **kwargs):
            owner = self._owner(module, optimizer.param_groups[0]["params"])
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            self.clip_norms.setdefault(self.step, {})[owner] = float(norm)
            return clip(optimizer, *args, **kwargs)

        def disc_hook(disc, inputs, output):
            kind = "discriminator" if disc.layers[0].weight.requires_grad else "generator"
            self.disc_calls.append((self.step, kind, output.detach().clone()))

        module.generator_loss = observed_generator_loss
        module.discriminator_step_loss = observed_discriminator_step_loss
        module.clip_gradients = observed_clip
        module.discriminator.register_forward_hook(disc_hook)

    @staticmethod
    def _owner(module, parameters) -> str:
        return "model" if any(parameters[0] is p for p in module.tokenizer.parameters()) else "disc"

    def on_train_start(self, trainer, module) -> None:
        for optimizer in trainer.optimizers:
            owner = self._owner(module, optimizer.param_groups[0]["params"])
            network = module.tokenizer if owner == "model" else module.discriminator

            def before(opt, args, kwargs, owner=owner, network=network):
                self.optimizer_steps.append((self.step, owner))
                grads = {n: p.grad.detach().clone() for n, p in network.named_parameters() if p.grad is not None}
                if self.step in self.gradient_steps:
                    self.gradients.setdefault(self.step, {})[owner] = grads
                tiny = self._tiny[owner]
                for n, g in grads.items():
                    near_zero = (g != 0) & (g.abs() < ILL_CONDITIONED_GRADIENT)  # exact zeros: no step on either side
                    tiny[n] = tiny.get(n, torch.zeros_like(g, dtype=torch.bool)) | near_zero
                self.ill_conditioned.setdefault(self.step, {})[owner] = {n: t.clone() for n, t in tiny.items()}

            def after(opt, args, kwargs, owner=owner, network=network):
                state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                (self.tokenizer_after if owner == "model" else self.disc_after)[self.step] = state

            optimizer.register_step_pre_hook(before)
            optimizer.register_step_post_hook(after)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.step = batch_idx


@functools.cache
def trained(recipe: str):
    """vqbench's module for ``recipe``, built from its config, started from the recorded weights and trained on the
    recorded batches; with the observer that watched it."""
    recorded = fixture(recipe)
    cfg = compose_cfg(narrow_overrides(recipe))
    with mock.patch("torchvision.models.vgg16", trunk_only_vgg16):
        module = build_training_module(cfg)
    mapping = tokenizer_map(module)
    load_mapped(module.tokenizer, recorded["model_init"], mapping)
    load_mapped(module.discriminator, recorded["disc_init"], disc_map(module.discriminator, recorded["disc_init"]))
    load_trunk(module.perceptual.lpips.net, vgg16_weights())
    observer = Observer(module, gradient_steps=set(recorded["gradients"]))
    trainer = Trainer(
        accelerator="cpu",
        max_steps=cfg.trainer.max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[observer],
    )
    trainer.fit(module, DataLoader(list(recorded["inputs"]), batch_size=None))
    assert trainer.global_step == recorded["steps"]
    return module, observer, mapping, cfg


def close(ours, theirs, rtol: float, atol: float = 0.0, what: str = "") -> None:
    ours, theirs = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(theirs, dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_loss_term_and_the_adaptive_weight_match(recipe):
    recorded = fixture(recipe)
    _, observer, _, _ = trained(recipe)
    start = recorded["narrowing"]["start_adv"]
    for step, status in enumerate(recorded["status"]):
        terms, disc_terms = observer.terms[step], observer.disc_terms[step]
        for ours, theirs in [
            ("reconstruction", "loss_rec"),
            ("perceptual", "loss_lpips"),
            ("codebook", "loss_vq"),
            ("commitment", "loss_commit"),
        ]:
            close(terms[ours], status[theirs], rtol=LOSS_RTOL, what=f"step {step}: {ours} vs {theirs}")
        close(disc_terms["loss"], status["loss_adv_d"], rtol=LOSS_RTOL, what=f"step {step}: discriminator loss")
        if step < start:  # the discriminator trained, the generator without its adversarial term
            assert "generator_adversarial" not in terms and status["loss_adv"] == 0.0
            continue
        g_loss, weight = terms["generator_adversarial"], terms["adaptive_weight"]
        close(g_loss, recorded["generator_adversarial"][step], rtol=ADVERSARIAL_RTOL, what=f"step {step}: L_G")
        # train_vqgan.py's status holds λ · L_G (λ = 1 without the adaptive weight)
        close(weight * g_loss, status["loss_adv"], rtol=ADAPTIVE_RTOL, what=f"step {step}: adaptive weight")
        assert (float(weight) == 1.0) == (recipe == "llamagen")


def test_adaptive_weight_of_the_originals_gradients():
    """vqbench's adaptive weight on the last-layer gradients train_vqgan.py's calc_adaptive_weight took (the
    reconstruction's and the adversarial term's), against the weight it applied: the same formula, epsilon and clamp,
    without the float noise that the backward passes add (ADAPTIVE_RTOL)."""
    recorded = fixture("taming")
    start = recorded["narrowing"]["start_adv"]
    assert sorted(recorded["last_layer_gradients"]) == list(range(start, recorded["steps"]))
    for step, (nll_grad, adversarial_grad) in recorded["last_layer_gradients"].items():
        weight = torch.zeros_like(nll_grad, requires_grad=True)  # L = <g, W> has gradient g at W
        ours = adaptive_weight((weight * nll_grad).sum(), (weight * adversarial_grad).sum(), weight)
        theirs = recorded["status"][step]["loss_adv"] / recorded["generator_adversarial"][step]
        close(ours, theirs, rtol=1e-6, what=f"step {step}: adaptive weight")


@pytest.mark.parametrize("recipe", RECIPES)
def test_discriminator_calls_and_optimizer_steps_follow_the_original(recipe):
    """Per step: the discriminator's calls in the original's order (the generator's from the start step on, then
    fake, then real) with the same logits; both optimizers step at every step from step 0."""
    recorded = fixture(recipe)
    _, observer, _, _ = trained(recipe)
    assert [(step, kind) for step, kind, _ in observer.disc_calls] == [(s, k) for s, k, _ in recorded["disc_logits"]]
    for (step, kind, theirs), (_, _, ours) in zip(recorded["disc_logits"], observer.disc_calls, strict=True):
        close(ours, theirs, rtol=ADVERSARIAL_RTOL, atol=1e-6, what=f"step {step}: {kind} logits")
    steps = [(step, what[len("optimizer step (") : -1]) for step, what in recorded["events"] if "optimizer" in what]
    assert sorted(observer.optimizer_steps) == sorted(steps)


@pytest.mark.parametrize("recipe", RECIPES)
def test_gradients_and_updated_weights_match(recipe):
    recorded = fixture(recipe)
    module, observer, mapping, cfg = trained(recipe)
    names = {"model": mapping, "disc": disc_map(module.discriminator, recorded["disc_init"])}
    for step, owners in recorded["gradients"].items():
        for owner, grads in owners.items():
            scale = max(float(g.abs().max()) for g in grads.values())
            for name, theirs in grads.items():
                ours = observer.gradients[step][owner][names[owner][name]]
                close(ours, theirs, rtol=0, atol=GRADIENT_ATOL * scale, what=f"step {step}: gradient of {name}")
    for step, norms in recorded["clip_norms"].items():  # LlamaGen clips both networks at 1.0
        for owner, norm in norms.items():
            close(observer.clip_norms[step][owner], norm, rtol=LOSS_RTOL, what=f"step {step}: {owner} grad norm")
    lr = cfg.optimizer.lr
    for owner, snapshots, ours_after in [
        ("model", recorded["model_after"], observer.tokenizer_after),
        ("disc", recorded["disc_after"], observer.disc_after),
    ]:
        for step, state in snapshots.items():
            ill_conditioned = observer.ill_conditioned[step][owner]
            excluded = total = 0
            for name, theirs in state.items():
                ours, what = ours_after[step][names[owner][name]], f"{owner} after step {step}: {name}"
                if "running" in name or "num_batches" in name:  # BatchNorm's statistics
                    close(ours, theirs, rtol=LOSS_RTOL, atol=1e-6, what=what)
                    continue
                tiny = ill_conditioned[names[owner][name]]
                close(ours[~tiny], theirs[~tiny], rtol=0, atol=lr * WEIGHT_ATOL_LR * (step + 1), what=what)
                close(ours[tiny], theirs[tiny], rtol=0, atol=2 * lr * (step + 1), what=what)
                excluded, total = excluded + int(tiny.sum()), total + tiny.numel()
            assert excluded <= 0.01 * total, f"{owner} after step {step}: {excluded} of {total} ill-conditioned"


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_sweep_trains_the_recipe_tested_here(recipe):
    """sweeps/imagenet256_vqgan.yaml (the table's multirun) composes each experiment without changing its training."""
    alone = OmegaConf.to_container(compose_cfg([f"+experiment=imagenet256_vqgan_{recipe}"]))
    swept = OmegaConf.to_container(compose_cfg(["+sweep=imagenet256_vqgan", f"+experiment=imagenet256_vqgan_{recipe}"]))
    for key in ("model", "quantizer", "codebook", "loss", "optimizer", "data", "trainer", "ema_decay", "metrics"):
        assert swept[key] == alone[key], key


# --- initialisation and LPIPS ------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_initial_networks():
    """The VQGAN encoder/decoder and, with the recipes' ``loss.discriminator.init=pytorch``, the discriminator are
    built layer for layer as the original builds them: the same seed gives the same weights (taming's N(0, 0.02)
    does not), and every GroupNorm has the original's epsilon."""
    recorded = fixture("data")["init"]
    cfg = compose_cfg(narrow_overrides("taming"))
    for seed, part, key in [(0, "encoder", "encoder_seed0"), (1, "decoder", "decoder_seed1")]:
        torch.manual_seed(seed)
        network = instantiate(cfg.model[part])
        theirs = recorded[key]
        mapping = key_map(list(theirs), list(network.state_dict()), [("", "")])
        for name, tensor in theirs.items():
            assert torch.equal(network.state_dict()[mapping[name]], tensor), f"{part}: {name}"
        eps = [m.eps for m in network.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert eps == recorded["norm_eps"][part], f"{part}: GroupNorm epsilons"  # 1e-5 before attention
    for init, same in [("pytorch", True), ("taming", False)]:
        torch.manual_seed(2)
        disc = PatchDiscriminator(in_channels=cfg.data.channels, **{**cfg.loss.discriminator, "init": init})
        theirs = recorded["disc_seed2"]
        ours = disc.state_dict()
        mapping = disc_map(disc, theirs)
        assert all(torch.equal(ours[mapping[n]], t) for n, t in theirs.items()) == same, init
    assert cfg.loss.discriminator.init == "pytorch"


def test_lpips_heads_loss_and_metric_match():
    """The training loss (taming's LPIPS in the original, the lpips package in vqbench; VGG16) and the evaluation
    metric (lpips package, AlexNet; the original feeds [0, 1] with normalize=True) on real crops, same trunks."""
    metrics = fixture("data")["metrics"]
    loss = trained("taming")[0].perceptual  # built from the recipe's config; the seeded trunk is loaded
    assert isinstance(loss, PerceptualLoss)
    heads = {k: v for k, v in loss.lpips.state_dict().items() if k.startswith("lin") and not k.startswith("lins")}
    assert heads.keys() == metrics["lpips_heads"].keys()
    assert all(torch.equal(heads[k], v) for k, v in metrics["lpips_heads"].items())
    originals, distorted = metrics["originals"], metrics["distorted"]
    close(loss.distance(distorted * 2 - 1, originals * 2 - 1), metrics["lpips_vgg_loss"], rtol=LOSS_RTOL)
    metric = lpips_metric()
    for i in range(len(originals)):
        metric.reset()
        metric.update(distorted[i : i + 1], originals[i : i + 1])
        close(metric.compute(), metrics["lpips_alex_metric"][i], rtol=LOSS_RTOL, what=f"image {i}")
    close(psnr(distorted, originals), metrics["psnr"], rtol=0, atol=1e-4, what="PSNR (dB)")
    close(ssim(distorted, originals), metrics["ssim"], rtol=0, atol=1e-5, what="SSIM")


# --- evaluation ----------------------------------------------------------------------------------------------------


def write_val_folder(root: Path) -> None:
    """The recorder's val/ folder: the same JPEG files, one class folder."""
    folder = root / "val" / "n00000000"
    folder.mkdir(parents=True)
    for name, photo in fixture("data")["photos"].items():
        (folder / f"{name}.JPEG").write_bytes(photo["jpeg"])


def evaluated(recipe: str, root: Path) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """vqbench's test loop (the cli's evaluation: build_training_module(for_training=False), the data module,
    Trainer.test) on the recorder's val/ folder, with the recording's final weights. Returns the metrics and the
    images, reconstructions and token ids the tokenizer saw."""
    recorded = fixture(recipe)
    write_val_folder(root)
    overrides = [f"data.root={root}", "data.eval_batch_size=2", "data.num_workers=0"]
    cfg = compose_cfg(narrow_overrides(recipe) + overrides)
    module = build_training_module(cfg, for_training=False)
    load_mapped(module.tokenizer, recorded["model_after"][recorded["steps"] - 1], tokenizer_map(module))
    module.add_test_metrics({"lpips": lpips_metric()})
    seen = []
    module.tokenizer.register_forward_hook(lambda m, args, out: seen.append((args[0], out[0], out[1].indices)))
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    results = trainer.test(module, datamodule=build_datamodule(cfg), verbose=False)[0]
    images, reconstructions, indices = (torch.cat(parts) for parts in zip(*seen, strict=True))
    return results, images, reconstructions, indices


@pytest.mark.parametrize("recipe", RECIPES)
def test_evaluation_matches_evaluate_py(recipe, tmp_path):
    """Against evaluate.py: token ids, per-image PSNR/SSIM, mean LPIPS, usage, perplexity, and the pixels both
    write for rFID."""
    evaluation = fixture(recipe)["evaluation"]
    results, images, reconstructions, indices = evaluated(recipe, tmp_path)
    assert torch.equal(indices.flatten(), evaluation["indices"])
    target, preds = to_unit_range(images), to_unit_range(reconstructions)
    close(psnr(preds, target), evaluation["psnr"], rtol=0, atol=1e-4, what="PSNR per image (dB)")
    close(ssim(preds, target), evaluation["ssim"], rtol=0, atol=1e-5, what="SSIM per image")
    close(results["test/psnr"], evaluation["psnr"].mean(), rtol=0, atol=1e-4, what="PSNR")
    close(results["test/ssim"], evaluation["ssim"].mean(), rtol=0, atol=1e-5, what="SSIM")
    close(results["test/lpips"], evaluation["lpips"].mean(), rtol=ADVERSARIAL_RTOL, what="LPIPS")
    # the lines evaluate.py prints, to the digits of the published table
    log = dict(line.split(": ", 1) for line in evaluation["log"])
    for metric, theirs in (("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("perplexity", "Perplexity")):
        assert f"{results[f'test/{metric}']:.4f}" == log[theirs], metric
    assert f"{results['test/codebook_usage'] * 100:.2f}%" == log["Codebook usage"]
    # rFID reads PNGs: the originals exactly, the reconstructions up to float32 rounding at the .5 boundaries
    assert torch.equal(to_uint8(target).permute(0, 2, 3, 1), evaluation["png_original"])
    diff = (to_uint8(preds).permute(0, 2, 3, 1).int() - evaluation["png_reconstructed"].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


# --- data ----------------------------------------------------------------------------------------------------------


def decoded_photos(tmp_path: Path) -> dict:
    """Each photo as vqbench decodes its JPEG file; skips when this Pillow decodes differently from the recorder's
    (the crops are compared on identical pixels, so a JPEG decoder change must not pass for a crop difference)."""
    images = {}
    for name, photo in fixture("data")["photos"].items():
        path = tmp_path / f"{name}.JPEG"
        path.write_bytes(photo["jpeg"])
        image = open_image(path, 3)
        if pixel_digest(image) != photo["decoded_sha256"]:
            pytest.skip(f"this Pillow decodes {name}.JPEG differently from the one that recorded it")
        images[name] = image
    return images


def pixel_digest(image) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(image), dtype=np.uint8).tobytes()).hexdigest()


def same_pixels(ours, theirs) -> bool:
    if isinstance(theirs, str):
        return pixel_digest(ours) == theirs
    return torch.equal(torch.from_numpy(np.asarray(ours).copy()), theirs)


def test_imagenet_crops_match_utils_data(tmp_path):
    """The eval crop (ADM centre crop) and the train crop (random short side in [S, 1.25 S], random S crop, under
    the same Python seed) of real photographs, bit for bit, at 256 and 32 pixels."""
    photos = fixture("data")["photos"]
    checked = 0
    for name, image in decoded_photos(tmp_path).items():
        for size, theirs in photos[name]["center"].items():
            assert same_pixels(CenterCropADM(size)(image), theirs), f"{name}: centre crop {size}"
            checked += 1
        for (size, seed), theirs in photos[name]["random"].items():
            random.seed(seed)
            assert same_pixels(RandomResizedCropADM(size)(image), theirs), f"{name}: random crop {size}, seed {seed}"
            checked += 1
    assert checked == 4 * 2 * (1 + 32) + 2 * (1 + 32)


def test_imagenet_items_match_load_data(tmp_path):
    """vqbench's ImageNet items, made floats as the data module makes them, against load_data's tensors (after
    ToTensor and Normalize): the same pixels in [-1, 1], up to the one random flip each side draws separately."""
    pipeline = fixture("data")["pipeline"]
    decoded_photos(tmp_path)
    root = tmp_path / "imagenet"
    write_val_folder(root)
    for i, photo in enumerate(list(fixture("data")["photos"].items())[:4]):
        (root / "train" / f"n0000000{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / "train" / f"n0000000{i % 2}" / f"{photo[0]}.JPEG").write_bytes(photo[1]["jpeg"])
    size = fixture("taming")["narrowing"]["img_size"]
    for split, theirs_split in (("train", "train"), ("test", "valid")):
        dataset = imagenet_split(split, str(root), resolution=size)
        assert [p.name for p in dataset.files] == [item["file"] for item in pipeline[theirs_split]]
        for index, item in enumerate(pipeline[theirs_split]):
            random.seed(item["seed"])
            pixels = dataset[index]
            assert torch.equal(pixels.permute(1, 2, 0), item["crop"]), item["file"]
            x = to_model_range(pixels.unsqueeze(0))[0]
            candidates = (x, x.flip(-1)) if split == "train" else (x,)
            assert any(torch.allclose(c, item["x"], rtol=0, atol=1e-6) for c in candidates), item["file"]


# --- the measured agreement (docs/recipes.md): python -m tests.test_fidelity_visual_tokenizer_vqgan ------------------


def worst(pairs) -> float:
    """The largest |ours - theirs| / |theirs|max over (ours, theirs) pairs."""
    return max(
        float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())
        / float(torch.as_tensor(b).double().abs().max())
        for a, b in pairs
    )


def measured_agreement(recipe: str, root: Path) -> dict[str, str]:
    recorded = fixture(recipe)
    module, observer, mapping, cfg = trained(recipe)
    names = {"model": mapping, "disc": disc_map(module.discriminator, recorded["disc_init"])}
    status, terms = recorded["status"], observer.terms
    pairs = [("reconstruction", "loss_rec"), ("perceptual", "loss_lpips"), ("codebook", "loss_vq")]
    adversarial = sorted(recorded["generator_adversarial"])
    lr, row = cfg.optimizer.lr, {}
    row["losses"] = worst([(terms[i][a], st[b]) for i, st in enumerate(status) for a, b in pairs])
    row["D loss"] = worst([(observer.disc_terms[i]["loss"], st["loss_adv_d"]) for i, st in enumerate(status)])
    row["L_G"] = worst([(terms[i]["generator_adversarial"], recorded["generator_adversarial"][i]) for i in adversarial])
    row["λ"] = worst(
        [
            (terms[i]["adaptive_weight"], status[i]["loss_adv"] / recorded["generator_adversarial"][i])
            for i in adversarial
        ]
    )
    row["logits"] = worst(
        [(o, t) for (_, _, t), (_, _, o) in zip(recorded["disc_logits"], observer.disc_calls, strict=True)]
    )
    on_gradients = []
    for step, (nll_grad, adversarial_grad) in recorded.get("last_layer_gradients", {}).items():
        weight = torch.zeros_like(nll_grad, requires_grad=True)
        ours = adaptive_weight((weight * nll_grad).sum(), (weight * adversarial_grad).sum(), weight)
        on_gradients.append((ours, status[step]["loss_adv"] / recorded["generator_adversarial"][step]))
    row["λ on the original's gradients"] = worst(on_gradients) if on_gradients else "-"
    for owner in ("model", "disc"):
        row[f"gradients {owner}"] = max(
            max(float((observer.gradients[s][owner][names[owner][n]] - g).abs().max()) for n, g in grads.items())
            / max(float(g.abs().max()) for g in grads.values())
            for s, owners in recorded["gradients"].items()
            for o, grads in owners.items()
            if o == owner
        )
    for owner, snapshots, ours in [
        ("model", recorded["model_after"], observer.tokenizer_after),
        ("disc", recorded["disc_after"], observer.disc_after),
    ]:
        drift, excluded, total = 0.0, 0, 0
        for s, state in snapshots.items():
            for name, theirs in state.items():
                if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
                    continue
                tiny = observer.ill_conditioned[s][owner][names[owner][name]]
                drift = max([drift, *((ours[s][names[owner][name]] - theirs).abs()[~tiny] / lr).tolist()])
                excluded, total = excluded + int(tiny.sum()), total + tiny.numel()
        row[f"weights {owner} (lr)"] = drift
        row[f"ill-conditioned {owner}"] = f"{excluded}/{total}"
    evaluation = recorded["evaluation"]
    results, images, reconstructions, indices = evaluated(recipe, root)
    preds, target = to_unit_range(reconstructions), to_unit_range(images)
    row["indices equal"] = bool(torch.equal(indices.flatten(), evaluation["indices"]))
    row["PSNR (dB)"] = float((psnr(preds, target).double() - evaluation["psnr"]).abs().max())
    row["SSIM"] = float((ssim(preds, target).double() - evaluation["ssim"]).abs().max())
    row["LPIPS"] = worst([(results["test/lpips"], evaluation["lpips"].double().mean())])
    png = to_uint8(preds).permute(0, 2, 3, 1).int() - evaluation["png_reconstructed"].int()
    row["PNG pixels differing"] = f"{int((png != 0).sum())}/{png.numel()}"
    return {k: f"{v:.1e}" if isinstance(v, float) else str(v) for k, v in row.items()}


if __name__ == "__main__":
    import tempfile

    for recipe in RECIPES:
        with tempfile.TemporaryDirectory() as tmp:
            print(recipe, measured_agreement(recipe, Path(tmp)))
