"""Runs xyfJASON/visual-tokenizer-pytorch's taming VQGAN recipe (``train_vqgan.py`` with
``configs/imagenet256/vqgan-taming.yaml`` at commit 351d29ddf8f41d8ac41224025023668ed4ad0de0) and vqbench's
``+experiment=imagenet256_vqgan_taming_351d29d`` side by side, at any width between the narrow networks of
``record_vqgan.py`` and the published ones, and prints how far the adaptive weight and what it is made of differ.

    mkdir -p /tmp/vt && git -C CLONE archive 351d29ddf8f41d8ac41224025023668ed4ad0de0 | tar -x -C /tmp/vt
    PYTHONPATH=src python tests/reference/visual_tokenizer/compare_vqgan_adaptive_weight.py /tmp/vt --full --size 64

A diagnostic, not a recorder: nothing is written. The original runs as ``record_vqgan.py`` runs it
(``train_vqgan.main()`` itself, on the CPU, observed by patched methods; the LPIPS loss with the seeded random VGG16
trunk and the real heads), with the published config changed only as the options say; vqbench then trains from the
original's initial weights on the batches the original drew, through ``TokenizerModule.training_step`` under a
Lightning Trainer (the fidelity test's ``Observer``). Per step it prints the relative differences of the L1, LPIPS,
codebook and commitment terms and of the discriminator loss, how many token ids differ, L_G, ‖∇_W L_nll‖ and
‖∇_W L_G‖ at the decoder's last conv weight W, λ, the discriminator's logits call by call, and vqbench's λ at step 1
computed from the original's own weights after step 0 (what is left once the first update is taken out).
``--probe`` instead compares one generator step on the original's initial weights and first batch quantity by
quantity (z, token ids and their distance gaps, reconstruction, logits, the discriminator's input gradient, the two
last-layer gradients, λ), then again with vqbench forced onto the original's token ids. ``--details`` lists the
tokenizer weights whose first Adam update differs between the two.

``--full`` sets every dimension to the published value; each ``--dim``, ``--dim-mults``, ``--groups``, ``--z``,
``--codebook``, ``--disc-dim``, ``--size``, ``--batch`` then overrides one of them (bisecting between narrow and full).
What it measured is in docs/recipes.md (ImageNet 256 VQGAN, code of 351d29d).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import tempfile
import time
import types
from pathlib import Path
from unittest import mock

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.reference.visual_tokenizer import record_vqgan  # noqa: E402
from tests.reference.visual_tokenizer.vqgan_common import load_trunk, vgg16_trunk  # noqa: E402

#: the published taming widths (configs/imagenet256/vqgan-taming.yaml); the crop size and batch stay options
FULL = {
    "dim": 128,
    "dim_mults": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "z_channels": 256,
    "norm_groups": 32,
    "disc_dim": 64,
    "disc_layers": 3,
    "codebook_num": 1024,
    "codebook_dim": 256,
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="an export of visual-tokenizer-pytorch at 351d29d")
    parser.add_argument("--full", action="store_true", help="start from the published widths instead of the narrow")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--dim-mults", type=lambda s: [int(m) for m in s.split(",")])
    parser.add_argument("--num-res-blocks", type=int)
    parser.add_argument("--groups", type=int, help="GroupNorm groups (the original's 32 everywhere)")
    parser.add_argument("--z", type=int, help="z_channels")
    parser.add_argument("--codebook", type=lambda s: [int(v) for v in s.split(",")], help="K,d")
    parser.add_argument("--disc-dim", type=int)
    parser.add_argument("--size", type=int, default=32, help="crop size in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--start-adv", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--adam-eps",
        type=float,
        default=None,
        help="Adam's epsilon on both sides (default PyTorch's 1e-8; a large one makes the first update proportional "
        "to the gradient instead of about lr * sign(g))",
    )
    parser.add_argument("--details", action="store_true", help="per-tensor gradients and updates of step 0")
    parser.add_argument(
        "--record",
        action="store_true",
        help="write FIXTURE (the original's generator step on seeded parts and centre crops) instead of comparing",
    )
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="how far the original disagrees with itself (1 against 2 threads; its discriminator in float32 against "
        "float64) on the inputs of --record",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="instead of training: one generator step of both implementations on the same weights and batch, "
        "compared op by op (z, token ids, reconstruction, logits, the discriminator's input gradient, λ), also with "
        "vqbench forced onto the original's token ids",
    )
    return parser.parse_args()


def dimensions(args: argparse.Namespace) -> tuple[dict, dict]:
    """(the recorder's ``common`` narrowing, its ``taming`` entry) for these options."""
    common = dict(record_vqgan.NARROWING["common"])
    taming = dict(record_vqgan.NARROWING["taming"])
    if args.full:
        common.update({k: v for k, v in FULL.items() if k in common})
        taming.update(codebook_num=FULL["codebook_num"], codebook_dim=FULL["codebook_dim"])
    for key, value in [
        ("dim", args.dim),
        ("dim_mults", args.dim_mults),
        ("num_res_blocks", args.num_res_blocks),
        ("norm_groups", args.groups),
        ("z_channels", args.z),
        ("disc_dim", args.disc_dim),
    ]:
        if value is not None:
            common[key] = value
    if args.codebook is not None:
        taming.update(codebook_num=args.codebook[0], codebook_dim=args.codebook[1])
    common.update(img_size=args.size, batch_size=args.batch, n_steps=args.steps, start_adv=args.start_adv)
    return common, taming


def write_tree(root: Path, copies: int) -> None:
    """The recorder's ImageNet-layout folder, with each training photograph saved ``copies`` times (flipped and
    transposed variants), so that a batch of 12 exists."""
    jpegs = record_vqgan.photo_jpegs()
    record_vqgan.write_imagenet_tree(root, jpegs)
    for i, name in enumerate(list(jpegs)[:4]):
        image = record_vqgan.decode(jpegs[name])
        for c in range(1, copies):
            variant = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if c % 2 else image
            variant = variant.transpose(Image.Transpose.TRANSPOSE) if c % 4 >= 2 else variant
            variant = variant.rotate(0 if c < 4 else 7 * c, resample=Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            variant.save(buffer, format="JPEG", quality=record_vqgan.JPEG_QUALITY)
            (root / "train" / f"n0000000{i % 2}" / f"{name}_{c}.JPEG").write_bytes(buffer.getvalue())


def run_original(checkout: Path, root: Path, work: Path, vgg: dict, details: bool) -> record_vqgan.Recording:
    from models.quantizer import VectorQuantizer

    record_vqgan.GRADIENT_STEPS = (0,) if details else ()
    token_ids = []
    forward = VectorQuantizer.forward

    def observed(self, z, *args, **kwargs):
        out = forward(self, z, *args, **kwargs)
        token_ids.append(out["indices"].flatten().clone())
        return out

    with mock.patch.object(VectorQuantizer, "forward", observed):
        rec, _ = record_vqgan.run_training(checkout, "taming", root, work, vgg)
    rec.token_ids = token_ids
    return rec


def build_vqbench(common: dict, taming: dict, model_state: dict, disc_state: dict):
    """vqbench's training module for these dimensions, with the original's tokenizer and discriminator weights."""
    from tests.test_config import compose_cfg
    from tests.test_fidelity_visual_tokenizer_vqgan import TOKENIZER_PARTS, key_map, load_mapped, trunk_only_vgg16
    from vqbench.build import build_training_module

    overrides = [
        "+experiment=imagenet256_vqgan_taming_351d29d",
        f"model.channels={common['dim']}",
        f"model.channel_mult=[{','.join(str(m) for m in common['dim_mults'])}]",
        f"model.num_res_blocks={common['num_res_blocks']}",
        f"model.attention_levels=[{len(common['dim_mults']) - 1}]",
        f"model.z_channels={common['z_channels']}",
        f"model.norm_groups={common['norm_groups']}",
        f"codebook.size={taming['codebook_num']}",
        f"codebook.dim={taming['codebook_dim']}",
        f"loss.discriminator.channels={common['disc_dim']}",
        f"loss.discriminator.layers={common['disc_layers']}",
        f"loss.adversarial.start_step={common['start_adv']}",
        f"data.resolution={common['img_size']}",
        f"data.batch_size={common['batch_size']}",
        f"trainer.max_steps={common['n_steps']}",
        "loss.perceptual.pretrained=false",
    ]
    cfg = compose_cfg(overrides)
    with mock.patch("torchvision.models.vgg16", trunk_only_vgg16):
        module = build_training_module(cfg)
    load_mapped(module.tokenizer, model_state, key_map(model_state, module.tokenizer.state_dict(), TOKENIZER_PARTS))
    load_mapped(
        module.discriminator, disc_state, key_map(disc_state, module.discriminator.state_dict(), [("seq.", "layers.")])
    )
    load_trunk(module.perceptual.lpips.net, vgg16_trunk())
    return module, cfg


def run_vqbench(common: dict, taming: dict, rec: record_vqgan.Recording):
    from torch.utils.data import DataLoader

    import vqbench.quantizers.vq as vq_module
    import vqbench.training.module as training_module
    from tests.test_fidelity_visual_tokenizer_vqgan import Observer, training_steps

    module, cfg = build_vqbench(common, taming, rec.model_init, rec.disc_init)
    observer = Observer(module, gradient_steps={0})

    last_layer_gradients: dict[int, list[torch.Tensor]] = {}
    original_adaptive_weight = training_module.adaptive_weight
    token_ids = []
    nearest = vq_module.nearest_code

    def observed_nearest(*args, **kwargs):
        token_ids.append(nearest(*args, **kwargs))
        return token_ids[-1]

    def observed_adaptive_weight(nll, g_loss, last_layer):
        grads = [torch.autograd.grad(loss, last_layer, retain_graph=True)[0] for loss in (nll, g_loss)]
        last_layer_gradients[observer.step] = [g.detach().clone() for g in grads]
        return original_adaptive_weight(nll, g_loss, last_layer)

    trainer = training_steps(cfg.trainer.max_steps, observer)
    with (
        mock.patch.object(training_module, "adaptive_weight", observed_adaptive_weight),
        mock.patch.object(vq_module, "nearest_code", observed_nearest),
    ):
        trainer.fit(module, DataLoader([x for x in rec.inputs], batch_size=None))
    observer.token_ids = token_ids
    return observer, last_layer_gradients


def rel(ours, theirs) -> float:
    ours, theirs = torch.as_tensor(ours, dtype=torch.float64), torch.as_tensor(theirs, dtype=torch.float64)
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-300))


def report(rec: record_vqgan.Recording, observer, ours_grads: dict) -> None:
    pairs = [("reconstruction", "loss_rec"), ("perceptual", "loss_lpips"), ("codebook", "loss_vq"),
             ("commitment", "loss_commit")]  # fmt: skip
    for step, status in enumerate(rec.status):
        terms = observer.terms[step]
        line = [f"step {step}:"]
        line += [f"{a} {rel(terms[a], status[b]):.1e}" for a, b in pairs]
        line.append(f"D loss {rel(observer.disc_terms[step]['loss'], status['loss_adv_d']):.1e}")
        ours_ids, theirs_ids = observer.token_ids[step], rec.token_ids[step]
        line.append(f"token ids differing {int((ours_ids != theirs_ids).sum())}/{theirs_ids.numel()}")
        print(" ".join(line))
        if step not in rec.generator_adversarial:
            continue
        g_ours, g_theirs = terms["generator_adversarial"], rec.generator_adversarial[step]
        lam_ours, lam_theirs = float(terms["adaptive_weight"]), status["loss_adv"] / g_theirs
        (nll_t, adv_t), (nll_o, adv_o) = rec.last_layer_gradients[step], ours_grads[step]
        print(
            f"  L_G ours {float(g_ours):+.8e} theirs {g_theirs:+.8e} (rel {rel(g_ours, g_theirs):.1e})\n"
            f"  |grad nll| ours {float(nll_o.norm()):.8e} theirs {float(nll_t.norm()):.8e} "
            f"(rel {rel(nll_o.norm(), nll_t.norm()):.1e}; elementwise rel-to-max {rel(nll_o, nll_t):.1e})\n"
            f"  |grad G|   ours {float(adv_o.norm()):.8e} theirs {float(adv_t.norm()):.8e} "
            f"(rel {rel(adv_o.norm(), adv_t.norm()):.1e}; elementwise rel-to-max {rel(adv_o, adv_t):.1e})\n"
            f"  lambda     ours {lam_ours:.8e} theirs {lam_theirs:.8e} (rel {rel(lam_ours, lam_theirs):.1e})"
        )
    for (step, kind, theirs), (_, kind_o, ours) in zip(rec.disc_logits, observer.disc_calls, strict=True):
        assert kind == kind_o, (kind, kind_o)
        scale = float(theirs.abs().max())
        print(f"step {step} {kind:13s} logits rel-to-max {rel(ours, theirs):.1e} (max |logit| {scale:.3e})")


def adam_with_eps(eps: float):
    """torch.optim.Adam.__init__ with ``eps`` forced (both sides build their Adam through it)."""
    original_init = torch.optim.Adam.__init__

    def init(self, params, *args, **kwargs):
        kwargs["eps"] = eps
        original_init(self, params, *args, **kwargs)

    return mock.patch.object(torch.optim.Adam, "__init__", init)


def step0_details(rec: record_vqgan.Recording, observer, lr: float) -> None:
    """Per tokenizer tensor: the step-0 gradients' difference relative to the tensor's largest, and the elements
    whose first Adam update differs by more than lr / 2 (a different sign of lr g / (|g| + eps)), with the largest
    |g| among them relative to the tensor's largest."""
    from tests.test_fidelity_visual_tokenizer_vqgan import TOKENIZER_PARTS, key_map

    names = key_map(rec.model_init, observer.tokenizer_after[0], TOKENIZER_PARTS)
    theirs_g, ours_g = rec.gradients[0]["model"], observer.gradients[0]["model"]
    flipped_total, total, rows = 0, 0, []
    for name, g_theirs in theirs_g.items():
        g_ours = ours_g[names[name]]
        moved = (observer.tokenizer_after[0][names[name]] - rec.model_after[0][name]).abs() / lr
        flipped = moved > 0.5
        scale = float(g_theirs.abs().max())
        flipped_total, total = flipped_total + int(flipped.sum()), total + flipped.numel()
        largest_flipped = float(g_theirs.abs()[flipped].max()) / scale if flipped.any() else 0.0
        rows.append((rel(g_ours, g_theirs), name, int(flipped.sum()), flipped.numel(), largest_flipped, scale))
    print(f"step 0: {flipped_total} of {total} tokenizer weights moved differently by more than lr/2")
    for grad_rel, name, n_flipped, n, largest, scale in sorted(rows, reverse=True)[:25]:
        print(
            f"  {name:55s} grad rel-to-max {grad_rel:.1e} (max |g| {scale:.1e}); moved apart {n_flipped}/{n}, "
            f"largest |g| among them {largest:.1e} of max"
        )


def swapped(common: dict, taming: dict, rec: record_vqgan.Recording) -> None:
    """vqbench's λ at step 1 from the original's own weights after step 0 (tokenizer and discriminator) on the
    original's step-1 batch: what remains of the difference once the first update is taken out."""
    import vqbench.training.module as training_module

    module, _ = build_vqbench(common, taming, rec.model_after[0], rec.disc_after[0])
    module.train()
    grads = []
    original_adaptive_weight = training_module.adaptive_weight

    def observed_adaptive_weight(nll, g_loss, last_layer):
        grads.extend(torch.autograd.grad(loss, last_layer, retain_graph=True)[0] for loss in (nll, g_loss))
        return original_adaptive_weight(nll, g_loss, last_layer)

    with mock.patch.object(training_module, "adaptive_weight", observed_adaptive_weight):
        _, _, terms = module.generator_loss(rec.inputs[1], 1)
    theirs = rec.status[1]["loss_adv"] / rec.generator_adversarial[1]
    ours = float(terms["adaptive_weight"])
    nll_t, adv_t = rec.last_layer_gradients[1]
    print(
        f"step 1 from the original's weights after step 0: lambda ours {ours:.8e} theirs {theirs:.8e} "
        f"(rel {rel(ours, theirs):.1e}); |grad nll| rel {rel(grads[0].norm(), nll_t.norm()):.1e}, "
        f"|grad G| rel {rel(grads[1].norm(), adv_t.norm()):.1e}; "
        f"L_G rel {rel(terms['generator_adversarial'], rec.generator_adversarial[1]):.1e}"
    )


#: The seed each part of the original's tokenizer and discriminator is built under (``--record``; the test rebuilds
#: vqbench's from the same seeds): the encoder, the decoder, the discriminator, the quantizer (``nn.Embedding``'s
#: normal init, then U(-1/K, 1/K)), and ``VQModel``'s two 1x1 convolutions (enc2code, then code2dec).
PART_SEEDS = {"encoder": 0, "decoder": 1, "disc": 2, "quantizer": 3, "convs": 4}


def original_parts(common: dict, taming: dict, vgg: dict, seeded: bool):
    """The original's VQModel, discriminator, LPIPS loss and adversarial loss at these dimensions; with ``seeded``,
    each part built right after ``torch.manual_seed(PART_SEEDS[part])``."""
    import losses.lpips
    from losses.adversarial import AdversarialLoss
    from models.autoencoder.vqgan_net import Decoder, Encoder
    from models.discriminator.patchgan import PatchGANDiscriminator
    from models.quantizer import VectorQuantizer
    from models.vqmodel import VQModel

    def seed(part):
        if seeded:
            torch.manual_seed(PART_SEEDS[part])

    record_vqgan.NarrowGroupNorm.groups = common["norm_groups"]
    arch = {k: common[k] for k in ("dim", "dim_mults", "num_res_blocks", "z_channels")}
    with mock.patch("torch.nn.GroupNorm", record_vqgan.NarrowGroupNorm):
        seed("encoder")
        encoder = Encoder(in_channels=3, **arch)
        seed("decoder")
        decoder = Decoder(out_channels=3, **arch)
    seed("quantizer")
    quantizer = VectorQuantizer(codebook_num=taming["codebook_num"], codebook_dim=taming["codebook_dim"])
    seed("convs")
    model = VQModel(encoder, decoder, quantizer)
    seed("disc")
    disc = PatchGANDiscriminator(in_channels=3, dim=common["disc_dim"], n_layers=common["disc_layers"])
    with mock.patch.object(losses.lpips.models, "vgg16", lambda pretrained=True, **kw: record_vqgan.seeded_vgg16(vgg)):
        lpips_loss = losses.lpips.LPIPS().eval()
    return model, disc, lpips_loss, AdversarialLoss(discriminator=disc, loss_type="hinge")


def original_generator_step(model, disc, lpips_loss, adversarial, x: torch.Tensor) -> dict:
    """train_vqgan.py's generator half of ``train_micro_batch`` (disc gradients off, L1 + LPIPS, L_G) and
    ``calc_adaptive_weight``, observed: z, token ids, each token's nearest-vs-second distance gap, |z|^2, the
    reconstruction, the logits, the two last-layer gradients, the discriminator's input gradient, λ."""
    from models.quantizer import VectorQuantizer

    seen = {}
    quantizer_forward = VectorQuantizer.forward

    def observed_quantizer(self, z, *a, **kw):
        out = quantizer_forward(self, z, *a, **kw)
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        weight = self.codebook.weight.detach()
        top2 = (flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1) - 2 * flat @ weight.T).topk(2, largest=False)
        seen.update(z=flat.clone(), indices=out["indices"].flatten().clone(), sq=flat.pow(2).sum(1).clone())
        seen["gap"] = top2.values[:, 1] - top2.values[:, 0]
        return out

    model.train()
    for p in disc.parameters():
        p.requires_grad = False
    with mock.patch.object(VectorQuantizer, "forward", observed_quantizer):
        out = model(x)
    decx = out["decx"]
    loss_rec, loss_lpips = torch.nn.L1Loss()(decx, x), lpips_loss(decx, x).mean()
    nll = loss_rec + loss_lpips  # coef_rec = coef_lpips = 1
    called = []
    hook = disc.register_forward_hook(lambda module, inputs, output: called.append(output.detach()))
    g_loss = adversarial("G", fake_data=decx)  # losses/adversarial.py forward_G: -mean(D(decx))
    hook.remove()
    nll_grad = torch.autograd.grad(nll, model.last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(g_loss, model.last_layer, retain_graph=True)[0]
    return {
        **seen,
        "reconstruction": decx.detach(),
        "loss_rec": loss_rec.item(),
        "loss_lpips": loss_lpips.item(),
        "generator_adversarial": g_loss.item(),
        "logits": called[0],
        "nll_grad": nll_grad,
        "adv_grad": adv_grad,
        "input_grad": torch.autograd.grad(g_loss, decx, retain_graph=True)[0],
        "l1_grad": torch.autograd.grad(loss_rec, model.last_layer, retain_graph=True)[0],
        "lpips_grad": torch.autograd.grad(loss_lpips, model.last_layer, retain_graph=True)[0],
        "adaptive_weight": float(torch.norm(nll_grad) / (torch.norm(adv_grad) + 1e-4)),
    }


def probe(common: dict, taming: dict, vgg: dict, rec: record_vqgan.Recording) -> None:
    """One generator step of the original (``original_generator_step``) and of vqbench
    (``TokenizerModule.generator_loss``) on the original's initial weights and the batch its training drew at step 0,
    compared quantity by quantity; then with vqbench forced onto the original's token ids."""
    import vqbench.quantizers.vq as vq_module
    import vqbench.training.module as training_module

    model, disc, lpips_loss, adversarial = original_parts(common, taming, vgg, seeded=False)
    model.load_state_dict(rec.model_init)
    disc.load_state_dict(rec.disc_init)
    model_init, disc_init, x = rec.model_init, rec.disc_init, rec.inputs[0]
    theirs = original_generator_step(model, disc, lpips_loss, adversarial, x)
    seen, decx, logits_t = theirs, theirs["reconstruction"], theirs["logits"]
    nll_t, adv_t, dx_t, lam_t = (theirs[k] for k in ("nll_grad", "adv_grad", "input_grad", "adaptive_weight"))

    adaptive_weight = training_module.adaptive_weight

    def vqbench_step(forced_indices=None):
        module, _ = build_vqbench(common, taming, model_init, disc_init)
        module.train()
        module.discriminator.requires_grad_(False)
        got = {}
        nearest = vq_module.nearest_code

        def observed_nearest(z, codebook, *a, **kw):
            got["indices"], got["z"] = nearest(z, codebook, *a, **kw), z.detach().clone()
            return got["indices"] if forced_indices is None else forced_indices

        def observed_adaptive_weight(nll, g, last_layer):
            got["nll"], got["adv"] = (torch.autograd.grad(v, last_layer, retain_graph=True)[0] for v in (nll, g))
            return adaptive_weight(nll, g, last_layer)

        forward = type(module.discriminator).forward

        def observed_disc(self, images):
            images.retain_grad()
            got["decx"], got["logits"] = images, forward(self, images)
            return got["logits"]

        with (
            mock.patch.object(vq_module, "nearest_code", observed_nearest),
            mock.patch.object(training_module, "adaptive_weight", observed_adaptive_weight),
            mock.patch.object(type(module.discriminator), "forward", observed_disc),
        ):
            _, _, terms = module.generator_loss(x, 10**9)
        got["dx"] = torch.autograd.grad(terms["generator_adversarial"], got["decx"], retain_graph=True)[0]
        got["lambda"] = float(terms["adaptive_weight"])
        last_layer = module.tokenizer.decoder.last_layer
        for term, key in (("reconstruction", "l1_grad"), ("perceptual", "lpips_grad")):
            got[key] = torch.autograd.grad(terms[term], last_layer, retain_graph=True)[0]
        return got

    theirs_ids = seen["indices"].flatten()
    for label, forced in (("vqbench", None), ("vqbench on the original's token ids", theirs_ids)):
        o = vqbench_step(forced)
        ours_ids = o["indices"].flatten()
        differ = (ours_ids != theirs_ids).nonzero().flatten()
        print(f"{label}:")
        if forced is None:
            gaps = seen["gap"][differ]
            ulp = torch.finfo(torch.float32).eps * seen["sq"][differ]
            print(f"  z (quantizer input) rel-to-max {rel(o['z'], seen['z']):.1e}")
            median_gap, median_sq = float(seen["gap"].median()), float(seen["sq"].median())
            print(
                f"  token ids differing: {len(differ)} of {len(theirs_ids)}; their nearest-vs-second distance gaps "
                f"{[f'{v:.1e}' for v in gaps.tolist()]} against ulp(|z|^2) {[f'{v:.1e}' for v in ulp.tolist()]}; "
                f"median gap over all tokens {median_gap:.1e}, |z|^2 median {median_sq:.2f}"
            )
        print(
            f"  reconstruction rel-to-max {rel(o['decx'], decx):.1e}; "
            f"logits rel-to-max {rel(o['logits'], logits_t):.1e}; "
            f"D input gradient rel-to-max {rel(o['dx'], dx_t):.1e}\n"
            f"  grad L1 rel-to-max {rel(o['l1_grad'], theirs['l1_grad']):.1e} (signs of the residual differing: "
            f"{int(((o['decx'] - x).sign() != (decx - x).sign()).sum())} of {x.numel()}); "
            f"grad LPIPS rel-to-max {rel(o['lpips_grad'], theirs['lpips_grad']):.1e}\n"
            f"  grad nll rel-to-max {rel(o['nll'], nll_t):.1e}, |.| rel {rel(o['nll'].norm(), nll_t.norm()):.1e}; "
            f"grad G rel-to-max {rel(o['adv'], adv_t):.1e}, |.| rel {rel(o['adv'].norm(), adv_t.norm()):.1e}; "
            f"lambda ours {o['lambda']:.8e} theirs {lam_t:.8e} (rel {rel(o['lambda'], lam_t):.1e})"
        )


#: what ``--record`` writes: the original's generator step at full width, for the slow test
#: tests/test_fidelity_visual_tokenizer_vqgan.py::test_full_width_generator_step_and_adaptive_weight_match
FIXTURE = "taming_full_width"


def centre_crops(common: dict) -> torch.Tensor:
    """The first ``batch_size`` of the recorder's photographs, centre-cropped by the original's ``center_crop_arr``
    and scaled to [-1, 1] as its ToTensor + Normalize(0.5, 0.5)."""
    import numpy as np
    from utils.data import center_crop_arr

    jpegs = record_vqgan.photo_jpegs()
    crops = [
        torch.from_numpy(np.asarray(center_crop_arr(record_vqgan.decode(jpegs[name]), common["img_size"])).copy())
        for name in list(jpegs)[: common["batch_size"]]
    ]
    return torch.stack(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


def self_check(common: dict, taming: dict, vgg: dict) -> None:
    """How far the original disagrees with itself, on the seeded parts and centre crops of ``--record``: its generator
    step with 1 thread against 2, and its discriminator's input gradient (L_G = -mean D(x̂) on its reconstruction) in
    float32 against float64, with the LeakyReLU inputs that change sign."""
    model, disc, lpips_loss, adversarial = original_parts(common, taming, vgg, seeded=True)
    x = centre_crops(common)
    threads = torch.get_num_threads()
    runs = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        runs[n] = original_generator_step(model, disc, lpips_loss, adversarial, x)
    torch.set_num_threads(threads)
    keys = ["z", "reconstruction", "logits", "input_grad", "adv_grad", "nll_grad", "l1_grad", "lpips_grad"]
    print("the original, 1 thread against 2 (relative to the largest):")
    print("  " + ", ".join(f"{k} {rel(runs[1][k], runs[2][k]):.1e}" for k in keys))
    print(f"  lambda {rel(runs[1]['adaptive_weight'], runs[2]['adaptive_weight']):.1e}; token ids equal: "
          f"{torch.equal(runs[1]['indices'], runs[2]['indices'])}")  # fmt: skip

    reconstruction, results = runs[2]["reconstruction"], {}
    for dtype in (torch.float32, torch.float64):
        network = copy.deepcopy(disc).to(dtype).requires_grad_(False)
        inputs = []
        for layer in network.seq:
            if isinstance(layer, torch.nn.LeakyReLU):
                layer.register_forward_pre_hook(lambda m, args, inputs=inputs: inputs.append(args[0].double()))
        images = reconstruction.to(dtype).requires_grad_(True)
        logits = network(images)
        (grad,) = torch.autograd.grad(-logits.mean(), images)
        results[dtype] = (logits.double(), grad.double(), inputs)
    (logits32, grad32, in32), (logits64, grad64, in64) = results[torch.float32], results[torch.float64]
    changed = [(a > 0) != (b > 0) for a, b in zip(in64, in32, strict=True)]
    at = [f"{float(a[c].abs().max()):.1e}" for a, c in zip(in64, changed, strict=True) if c.any()]
    moved = (grad32 - grad64).abs() > 1e-3 * grad64.abs().max()
    images = moved.flatten(1).any(1).nonzero().flatten().tolist()
    print("the original's discriminator, float32 against float64 on the same reconstruction:")
    print(
        f"  logits {rel(logits32, logits64):.1e}; input gradient {rel(grad32, grad64):.1e}, {int(moved.sum())} of "
        f"{moved.numel()} elements moved by more than 1e-3 of the largest, in images {images}; LeakyReLU inputs "
        f"changing sign per layer {[int(c.sum()) for c in changed]} of {[c.numel() for c in changed]}, at |input| {at}"
    )


def record(checkout: Path, common: dict, taming: dict, vgg: dict) -> None:
    """The original's generator step (``original_generator_step``) on parts built from ``PART_SEEDS`` and a batch of
    centre crops (``utils/data.py`` ``center_crop_arr``) of the recorder's photographs, written with the per-tensor
    float64 sums of the initial weights (so the test can check it rebuilt the same networks) to ``FIXTURE``."""
    from tests.reference.visual_tokenizer.vqgan_common import COMMIT, fixture_path

    model, disc, lpips_loss, adversarial = original_parts(common, taming, vgg, seeded=True)
    x = centre_crops(common)
    sums = {
        part: {k: float(v.double().sum()) for k, v in network.state_dict().items()}
        for part, network in (("model", model), ("disc", disc))
    }
    out = original_generator_step(model, disc, lpips_loss, adversarial, x)
    for diagnostic in ("input_grad", "l1_grad", "lpips_grad"):
        out.pop(diagnostic)
    fixture = {
        "commit": COMMIT,
        "dimensions": {
            **{k: v for k, v in common.items() if k not in ("n_steps", "start_adv")},  # one step, adversarial
            **{k: taming[k] for k in ("codebook_num", "codebook_dim")},
        },
        "part_seeds": PART_SEEDS,
        "inputs": x,
        "init_sums": sums,
        **out,
    }
    path = fixture_path(FIXTURE)
    torch.save(fixture, path)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkout = args.checkout.resolve()
    sys.path.insert(0, str(checkout))
    try:
        import requests  # noqa: F401
    except ImportError:  # losses/lpips.py imports it only to download vgg.pth, which the checkout already holds
        sys.modules["requests"] = types.ModuleType("requests")
    common, taming = dimensions(args)
    record_vqgan.NARROWING["common"] = common
    record_vqgan.NARROWING["taming"] = taming
    print("dimensions:", common, {k: taming[k] for k in ("codebook_num", "codebook_dim")})
    vgg = vgg16_trunk()
    if args.record:
        record(checkout, common, taming, vgg)
        return
    if args.self_check:
        self_check(common, taming, vgg)
        return
    if args.probe:
        common["n_steps"] = 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_tree(work / "imagenet", copies=-(-args.batch // 4))
        start = time.time()
        with adam_with_eps(args.adam_eps) if args.adam_eps is not None else contextlib.nullcontext():
            rec = run_original(checkout, work / "imagenet", work, vgg, args.details)
        print(f"original: {time.time() - start:.0f} s")
    if args.probe:
        probe(common, taming, vgg, rec)
        return
    start = time.time()
    with adam_with_eps(args.adam_eps) if args.adam_eps is not None else contextlib.nullcontext():
        observer, ours_grads = run_vqbench(common, taming, rec)
    print(f"vqbench: {time.time() - start:.0f} s")
    report(rec, observer, ours_grads)
    if args.details:
        step0_details(rec, observer, lr=5.4e-5)
    if 1 in rec.generator_adversarial and 0 in rec.model_after:
        swapped(common, taming, rec)


if __name__ == "__main__":
    main()
