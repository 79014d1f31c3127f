"""Fidelity to xyfJASON/visual-tokenizer-pytorch, the code behind the CelebA 64x64 tables (train_vqvae.py,
models/, evaluate.py, metrics/, utils/data.py).

The fixtures in tests/reference/visual_tokenizer/ hold tensors recorded from that code (``record_vqvae.py`` there says
how and from which commit). Each training case builds vqbench's model *through its own configs* (the table's sweep,
the row's overrides, narrowing overrides), loads the original's initial weights, trains three steps through the real
``TokenizerModule.training_step`` in a Lightning Trainer on the recorded batches, and compares the loss terms, the
first step's gradients, the weights and codebook buffers after every step, and the token indices.

Tolerances: everything runs in float32 on the CPU, and the two codes sum the same terms in different orders
(vqbench computes the distances and the entropy with the original's operations, but chunks the entropy terms,
checkpoints them, and sums losses by name), so values agree to float32 rounding, not bit for bit. Losses: 1e-5
relative, 1e-6 absolute (the entropy term is a difference of two entropies of size ~5). Gradients of the first step:
||g_ours - g_orig|| <= 1e-5 ||g_orig|| per tensor. Weights and codebook buffers: the update after each step
(w_t - w_0) agrees to 1e-4 of its norm, and every element to 2e-6 (Adam moves a weight by at most lr = 4e-4 per
step). The entropy regulariser (quantizer entropy and LFQ) divides distances by tau = 0.01, which multiplies their
rounding by 100, and Adam turns a tiny gradient into a step of about lr whatever its size (an unused code's entropy
gradient can be 1e-9), so its cases get 2e-4 (gradients) and 1e-2 (updates; measured 4e-3 at most) and no element
bound; with the original's entropy epsilon removed they are off by 1e-3 and 0.3. Indices must be identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from vqbench.build import build_datamodule, build_training_module
from vqbench.data.module import to_model_range
from vqbench.metrics import CodebookUsage, psnr, ssim, to_uint8
from vqbench.training.module import to_unit_range

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES = ROOT / "tests" / "reference" / "visual_tokenizer"

#: The narrow model of the fixtures (the original's hidden_dim 8: 3 -> 4 -> 8 channels) on 16x16 crops, batch 8.
NARROW = ["model.hidden_channels=4", "model.latent_channels=8", "data.resolution=16", "data.batch_size=8"]

#: fixture case -> (sweep of its table or None for the bare experiment, the row's overrides, extra narrowing)
ROWS = {
    "vq_d4": ("celeba64_vq_dim", ["codebook.dim=4"], []),
    "vq_d64": ("celeba64_vq_dim", ["codebook.dim=64"], ["codebook.size=128"]),
    "vq_k1024_d4": ("celeba64_vq_size", ["codebook.size=1024"], ["codebook.dim=4"]),
    "l2_d4": ("celeba64_vq_l2", ["codebook.dim=4", "codebook.l2_norm=true"], []),
    "l2_d64": ("celeba64_vq_l2", ["codebook.dim=64", "codebook.l2_norm=true"], ["codebook.size=128"]),
    "ema_d4": ("celeba64_vq_ema", ["codebook.dim=4", "quantizer=ema"], []),
    "ema_d64": ("celeba64_vq_ema", ["codebook.dim=64", "quantizer=ema"], ["codebook.size=128"]),
    "entropy_d64": ("celeba64_vq_entropy", ["quantizer.entropy_weight=0.1"], ["codebook.size=128"]),
    "fsq_8-8-8": ("celeba64_fsq", ["sweep/celeba64_fsq_rows=8-8-8"], []),
    "fsq_8-5-5-5": ("celeba64_fsq", ["sweep/celeba64_fsq_rows=8-5-5-5"], []),
    "lfq_9": ("celeba64_lfq", ["codebook.dim=9"], []),
    # the SimVQ table of docs/benchmark-celeba64.md as of ff3c255 (configs/celeba64/simvqvae.yaml)
    "simvq_d64": ("celeba64_simvq", ["codebook.dim=64"], ["codebook.size=128"]),
}

#: (gradient norm, update norm, element) tolerances; see the module docstring
TOLERANCES = {"float32": (1e-5, 1e-4, 2e-6), "entropy": (2e-4, 1e-2, None)}
ENTROPY_CASES = {"entropy_d64", "lfq_9"}


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def compose_row(sweep: str | None, row: list[str], narrowing: list[str]):
    head = [f"+sweep={sweep}"] if sweep else ["+experiment=celeba64_vqvae"]
    return compose_cfg([*head, *row, *NARROW, *narrowing])


def to_vqbench_key(key: str) -> str:
    """The original's state-dict key (models/vqmodel.py, simple_cnn.py, quantizer/*.py) -> vqbench's Tokenizer's."""
    parts = key.split(".")
    if parts[0] == "enc2code":
        return ".".join(["pre_quant", *parts[1:]])
    if parts[0] == "code2dec":
        return ".".join(["post_quant", *parts[1:]])
    if parts[:2] == ["encoder", "downblocks"]:  # Conv, LeakyReLU, Conv, LeakyReLU, Conv: the same positions
        return ".".join(["encoder", *parts[2:]])
    if parts[:2] == ["encoder", "resblocks"]:  # after the 5 downsampling layers
        return ".".join(["encoder", str(5 + int(parts[2])), "body", *parts[4:]])
    if parts[:2] == ["decoder", "resblocks"]:
        return ".".join(["decoder", parts[2], "body", *parts[4:]])
    if parts[:2] == ["decoder", "upblocks"]:  # after the 2 residual blocks
        return ".".join(["decoder", str(2 + int(parts[2])), *parts[3:]])
    renamed = {
        "quantizer.codebook.weight": "quantizer.codebook",
        "quantizer.ema_sumz": "quantizer.ema_sums",
        "quantizer.ema_sumn": "quantizer.ema_counts",
        "quantizer.codebook_proj.weight": "quantizer.codebook_map.weight",
        "quantizer.codebook_proj.bias": "quantizer.codebook_map.bias",
    }
    return renamed[key]


def to_vqbench_state(state: dict[str, torch.Tensor], quantizer: str) -> dict[str, torch.Tensor]:
    mapped = {to_vqbench_key(k): v for k, v in state.items()}
    if quantizer == "SimVQQuantizer" and "quantizer.codebook" in mapped:  # an Embedding there, a buffer here
        mapped["quantizer.frozen_codebook"] = mapped.pop("quantizer.codebook")
    return mapped


class Recorder(L.Callback):
    """Gradients before the first optimizer step and the tokenizer's state after every training step."""

    def __init__(self):
        self.gradients, self.states = None, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.gradients is None:
            named = pl_module.tokenizer.named_parameters()
            self.gradients = {n: p.grad.clone() for n, p in named if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append({k: v.detach().clone() for k, v in pl_module.tokenizer.state_dict().items()})


def train_like_the_original(record: dict, cfg):
    """vqbench's training module from ``cfg``, started from the original's weights and trained on its batches."""
    module = build_training_module(cfg)
    module.tokenizer.load_state_dict(to_vqbench_state(record["initial_state"], record["quantizer"]))
    terms, indices = [], []
    generator_loss = module.generator_loss

    def recording_generator_loss(images, step):
        total, reconstruction, named = generator_loss(images, step)
        terms.append({k: v.detach().clone() for k, v in named.items()})
        return total, reconstruction, named

    module.generator_loss = recording_generator_loss
    module.tokenizer.quantizer.register_forward_hook(lambda m, args, out: indices.append(out.indices.clone()))
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(record["batches_uint8"]),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[recorder],
    )
    batches = [(pixels.float() / 255 - 0.5) / 0.5 for pixels in record["batches_uint8"]]
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return terms, indices, recorder


def in_original_names(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our loss terms under the original's names: its entropy term is our (per-sample + codebook) entropy sum."""
    named = {k: v for k, v in ours.items() if k in ("reconstruction", "codebook", "commitment", "entropy", "total")}
    if "per_sample_entropy" in ours:
        named["entropy"] = ours["per_sample_entropy"] + ours["codebook_entropy"]
    return named


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: intra-op threads only add synchronisation (10x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(ROWS))
def case(request):
    record = torch.load(FIXTURES / f"vqvae_{request.param}.pt", weights_only=True)
    cfg = compose_row(*ROWS[request.param])
    return request.param, record, cfg, train_like_the_original(record, cfg)


def test_each_case_is_a_row_of_its_sweep():
    for name, (sweep, row, _) in ROWS.items():
        if sweep is None:
            continue
        params = OmegaConf.load(ROOT / "sweeps" / f"{sweep}.yaml").hydra.sweeper.params
        for override in row:
            key, value = override.split("=", 1)
            assert value in str(params[key]).split(","), f"{name}: {override} is not a row of sweeps/{sweep}.yaml"


def test_losses_match_the_original_at_every_step(case):
    name, record, _, (terms, _, _) = case
    assert len(terms) == len(record["losses"]) == 3
    for step, (theirs, ours) in enumerate(zip(record["losses"], terms, strict=True)):
        ours = in_original_names(ours)
        for key, value in theirs.items():
            if key not in ours:  # FSQ returns constant zero codebook/commitment terms; vqbench returns none
                assert value == 0, f"{name} step {step}: the original has a non-zero {key} term that vqbench lacks"
                continue
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=f"{name} step {step}: {key}")


def test_token_indices_match_the_original_at_every_step(case):
    name, record, _, (_, indices, _) = case
    for step, (theirs, ours) in enumerate(zip(record["indices"], indices, strict=True)):
        assert torch.equal(ours, theirs), f"{name} step {step}: {int((ours != theirs).sum())} tokens differ"


def test_first_gradients_match_the_original(case):
    name, record, _, (_, _, recorder) = case
    tolerance = TOLERANCES["entropy" if name in ENTROPY_CASES else "float32"][0]
    theirs = to_vqbench_state(record["gradients"], record["quantizer"])
    assert set(recorder.gradients) == set(theirs), name
    for key, grad in theirs.items():
        error = (recorder.gradients[key] - grad).norm()
        assert error <= tolerance * grad.norm() + 1e-12, f"{name}: gradient of {key} is off by {error / grad.norm()}"


def test_weights_and_codebook_buffers_match_the_original_after_every_step(case):
    name, record, _, (_, _, recorder) = case
    _, update_tolerance, element_tolerance = TOLERANCES["entropy" if name in ENTROPY_CASES else "float32"]
    initial = to_vqbench_state(record["initial_state"], record["quantizer"])
    assert len(recorder.states) == len(record["states"])
    for step, (theirs, ours) in enumerate(zip(record["states"], recorder.states, strict=True)):
        theirs = to_vqbench_state(theirs, record["quantizer"])
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            where = f"{name} step {step}: {key}"
            if element_tolerance is not None:
                torch.testing.assert_close(ours[key], value, rtol=0, atol=element_tolerance, msg=where)
            error, update = (ours[key] - value).norm(), (value - initial[key]).norm()
            assert error <= update_tolerance * update + 1e-12, f"{where} moved off by {error / update} of its update"


def test_fresh_weights_are_initialised_like_the_original(case):
    """Same parameter distributions as the original's constructors (PyTorch's defaults, U(-1/K, 1/K) codebooks,
    SimVQ's N(0, 1/d) frozen codes): the spread of every tensor of 64 or more values within 30%."""
    name, record, cfg, _ = case
    torch.manual_seed(1)
    fresh = build_training_module(cfg).tokenizer.state_dict()
    for key, value in to_vqbench_state(record["initial_state"], record["quantizer"]).items():
        if value.numel() >= 64 and value.std() > 0:
            ratio = float(fresh[key].std() / value.std())
            assert 0.7 < ratio < 1.3, f"{name}: {key} starts with {ratio:.2f} x the original's spread"
        if key in ("quantizer.codebook", "quantizer.ema_sums"):
            assert fresh[key].abs().max() <= 1 / value.shape[0]


# --- data and evaluation ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation():
    return torch.load(FIXTURES / "evaluation.pt", weights_only=True)


@pytest.fixture(scope="module")
def recipe():
    """The CelebA recipe as a user runs it (+experiment=celeba64_vqvae)."""
    return compose_cfg(["+experiment=celeba64_vqvae"])


def test_celeba_crop_and_resize_match_the_original(evaluation, recipe, tmp_path):
    """utils/data.py: crop 128x128 at top 57, left 25, Resize(64, antialias), ToTensor, Normalize(0.5, 0.5)."""
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    names = evaluation["jpeg_names"]
    for name in names:
        shutil.copy(FIXTURES / "celeba" / "img_align_celeba" / name, images / name)
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{name} 2\n" for name in names))
    assert recipe.data.flip  # the original flips training images with probability 0.5 (RandomHorizontalFlip)
    cfg = recipe.copy()
    cfg.data.root = str(tmp_path)
    test = build_datamodule(cfg).dataset("test")
    ours = to_model_range(torch.stack([test[i] for i in range(len(test))]))
    theirs = evaluation["originals"][: evaluation["celeba_test_images"]]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_psnr_and_ssim_match_the_originals_metrics(evaluation, recipe):
    """evaluate.py clamps to [-1, 1] and maps to [0, 1]; the table's commit measured with piqa, the current one with
    scikit-image (metrics/psnr.py, metrics/ssim.py). PSNR is computed in float64 here, so it agrees to 1e-4 dB."""
    preds, target = to_unit_range(evaluation["reconstructions"]), to_unit_range(evaluation["originals"])
    for reference in ("psnr_skimage", "psnr_piqa"):
        torch.testing.assert_close(psnr(preds, target), evaluation[reference].float(), rtol=0, atol=1e-4)
    torch.testing.assert_close(ssim(preds, target), evaluation["ssim_skimage"].float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ssim(preds, target, window="gaussian"), evaluation["ssim_piqa"], rtol=0, atol=1e-5)
    # the recipe measures SSIM the way its table was measured
    module = build_training_module(recipe, for_training=False)
    metric = module.metrics["test"]["ssim"]
    metric.update(preds, target)
    torch.testing.assert_close(metric.compute().float(), evaluation["ssim_piqa"].mean(), rtol=0, atol=1e-5)


def test_rfid_sees_the_pixels_evaluate_py_saves(evaluation):
    """evaluate.py writes both image sets with torchvision's save_image (PNG, uint8) for torch-fidelity."""
    for images, pngs in (("originals", "png_originals"), ("reconstructions", "png_reconstructions")):
        assert torch.equal(to_uint8(to_unit_range(evaluation[images])), evaluation[pngs]), images


def test_codebook_usage_and_perplexity_match_both_protocols(evaluation, recipe):
    """Every test token (evaluate.py, the CelebA benchmark tables) and the 65,536-token queue (the README table)."""
    indices = evaluation["index_batches"].long()
    for window, suffix in ((None, "all_tokens"), (65536, "queue")):
        metric = CodebookUsage(evaluation["codebook_size"], window=window)
        for batch in indices:
            metric.update(batch)
        values = metric.compute()
        torch.testing.assert_close(values["codebook_usage"].float(), evaluation[f"usage_{suffix}"].float())
        torch.testing.assert_close(values["perplexity"].float(), evaluation[f"perplexity_{suffix}"], rtol=1e-5, atol=0)
    assert evaluation["usage_queue"] < evaluation["usage_all_tokens"]  # the stream tells the protocols apart
    assert recipe.metrics.usage_window is None
