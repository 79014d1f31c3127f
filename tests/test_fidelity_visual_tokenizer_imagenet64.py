"""Fidelity to xyfJASON/visual-tokenizer-pytorch 351d29d for the ImageNet 64x64 tables
(``docs/benchmark-imagenet64.md``: ``train_vqvae.py``, ``models/``, ``configs/imagenet64/*.yaml``, ``utils/data.py``).

The fixtures ``tests/reference/visual_tokenizer/vqvae_imagenet64_*.pt`` and ``imagenet64_data_351d29d.pt`` hold
tensors recorded from that code (``record_vqvae_imagenet64.py`` there says how). Each training case is one row of a
table: vqbench's model is built *through the table's sweep and the row's overrides* (then narrowed like the
recording), loaded with the original's initial weights and trained three steps through the real
``TokenizerModule.training_step`` in a Lightning Trainer on the recorded batches, as in
``test_fidelity_visual_tokenizer.py`` (whose helpers and tolerances this file uses); the loss terms, first
gradients, weights after every step and token indices are compared. The CelebA SimVQ row is that file's
``simvq_d64`` case (``sweeps/celeba64_simvq.yaml``).

Tolerances (the error bounds are those of ``test_fidelity_visual_tokenizer.py``): float32 on the CPU, the same terms
summed in other orders, so losses agree to 1e-5 relative (a few hundred float32 roundings of eps = 1.2e-7 on terms
of size <= 1), first gradients to 1e-5 of their norm, weight updates to 1e-4 of their norm and every element to 2e-6
(Adam moves a weight by at most lr = 4e-4 per step, and a gradient component's relative error, amplified by
Adam's normalisation near g ~ sqrt(v), is a few 1e-3 of that). Indices must be identical.

Cases with an entropy term (VQ with entropy regularization, LFQ, IBQ) get a bound computed from the case itself
(``entropy_error_bound``): the two codes round the logits l = -dist / tau (IBQ: z.e / tau) differently, and the
float32 error of a distance ||z||^2 + ||e||^2 - 2 z.e over D channels is at most (D + 2) eps (||z||^2 + ||e||^2), so
each logit moves by at most dl = (D + 2) eps max(||z||^2 + ||e||^2) / tau (tau = 0.01 multiplies it by 100); a
softmax input moved by dl moves p by a relative dl, and the entropy's logit gradient -p (log p + H) by at most
dl (1 + ln K). That is the bound on the first gradients' relative error. Adam's first steps are g / (|g| + eps_Adam)
per element: their relative error is at most the gradient's, once per step, so the updates after three steps get
3 dl (1 + ln K), and no element bound. IBQ's codes are (h - sg(p) + p) E in the original but E_k + (p - sg(p)) E
here: equal up to one rounding of 1 - p_k + p_k (1 ulp), far inside these bounds.

The data: ``load_data(imagenet, img_size 64, crop random)`` against ``+experiment=imagenet64_vqvae``'s data module
on the same JPEG files: the train crop (random short side in [64, 80], random 64 crop) under the same Python seed
and the val crop (ADM centre crop), bit for bit.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.test_fidelity_visual_tokenizer import (
    FIXTURES,
    ROOT,
    TOLERANCES,
    compose_cfg,
    compose_row,
    in_original_names,
    to_vqbench_state,
    train_like_the_original,
)
from vqbench.build import build_datamodule, build_training_module
from vqbench.data.images import open_image

#: fixture case -> (the table's sweep, the row's overrides as the sweep lists them, narrowing like the recording)
ROWS = {
    "imagenet64_vq_d8_k2048": ("imagenet64_vq", ["sweep/imagenet64_vq_rows=d8_k2048"], []),
    "imagenet64_l2_d64_k128": ("imagenet64_vq", ["sweep/imagenet64_vq_rows=l2_d64_k2048"], ["codebook.size=128"]),
    "imagenet64_entropy_d64_k128": (
        "imagenet64_vq",
        ["sweep/imagenet64_vq_rows=entropy_d64_k2048"],
        ["codebook.size=128"],
    ),
    "imagenet64_fsq_8-8-8-6-5": ("imagenet64_fsq", ["sweep/imagenet64_fsq_rows=8-8-8-6-5"], []),
    "imagenet64_lfq_11": ("imagenet64_lfq", ["sweep/imagenet64_lfq_rows=dim11"], []),
    "imagenet64_simvq_d64_k128": ("imagenet64_simvq", ["codebook.size=2048"], ["codebook.size=128"]),
    "imagenet64_ibq_d64_k128": ("imagenet64_ibq", ["codebook.size=512"], ["codebook.size=128"]),
}
ENTROPY_CASES = {"imagenet64_entropy_d64_k128", "imagenet64_lfq_11", "imagenet64_ibq_d64_k128"}
FLOAT32_EPS = torch.finfo(torch.float32).eps


def entropy_error_bound(record: dict, cfg) -> float:
    """dl (1 + ln K) of the module docstring, from the first batch's z (the quantizer's input) and the codebook at
    the original's initial weights: the bound on the relative error of an entropy case's gradients."""
    module = build_training_module(cfg)
    module.tokenizer.load_state_dict(to_vqbench_state(record["initial_state"], record["quantizer"]))
    seen = []
    module.tokenizer.quantizer.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        module.tokenizer((record["batches_uint8"][0].float() / 255 - 0.5) / 0.5)
    z = seen[0]
    dim = z.shape[1]
    if record["quantizer"] == "LookupFreeQuantizer":  # codes of +-1 on every channel
        code_norm2 = float(dim)
    else:
        code_norm2 = float(record["initial_state"]["quantizer.codebook.weight"].pow(2).sum(1).max())
    logit_error = (dim + 2) * FLOAT32_EPS * (float(z.pow(2).sum(1).max()) + code_norm2) / 0.01
    return logit_error * (1 + math.log(cfg.codebook.size))


def original_terms(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our loss terms under the original's names; IBQ's ``loss_vq`` is its codebook term plus the double
    quantization term (models/quantizer/index_backpropagation_quantizer.py)."""
    named = in_original_names(ours)
    if "double_quant" in ours:
        named["codebook"] = ours["codebook"] + ours["double_quant"]
    return named


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: intra-op threads only add synchronisation."""
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
        params = OmegaConf.load(ROOT / "sweeps" / f"{sweep}.yaml").hydra.sweeper.params
        for override in row:
            key, value = override.split("=", 1)
            assert value in str(params[key]).split(","), f"{name}: {override} is not a row of sweeps/{sweep}.yaml"


def test_every_quantizer_of_the_tables_is_recorded():
    """At least one row of each ImageNet-64 table: VQ (plain, l2, entropy), FSQ, LFQ, SimVQ, IBQ."""
    assert {sweep for sweep, _, _ in ROWS.values()} == {p.stem for p in (ROOT / "sweeps").glob("imagenet64_*.yaml")}
    recorded = {torch.load(FIXTURES / f"vqvae_{name}.pt", weights_only=True)["quantizer"] for name in ROWS}
    assert recorded == {
        "VectorQuantizer",
        "FiniteScalarQuantizer",
        "LookupFreeQuantizer",
        "SimVQQuantizer",
        "IndexBackpropagationQuantizer",
    }


def test_losses_match_the_original_at_every_step(case):
    name, record, _, (terms, _, _) = case
    assert len(terms) == len(record["losses"]) == 3
    for step, (theirs, ours) in enumerate(zip(record["losses"], terms, strict=True)):
        ours = original_terms(ours)
        for key, value in theirs.items():
            if key not in ours:  # FSQ returns constant zero codebook/commitment terms; vqbench returns none
                assert value == 0, f"{name} step {step}: the original has a non-zero {key} term that vqbench lacks"
                continue
            torch.testing.assert_close(ours[key], value, rtol=1e-5, atol=1e-6, msg=f"{name} step {step}: {key}")


def test_token_indices_match_the_original_at_every_step(case):
    name, record, _, (_, indices, _) = case
    for step, (theirs, ours) in enumerate(zip(record["indices"], indices, strict=True)):
        assert torch.equal(ours, theirs), f"{name} step {step}: {int((ours != theirs).sum())} tokens differ"


def tolerances(name: str, record: dict, cfg) -> tuple[float, float, float | None]:
    """(gradient norm, update norm, element) relative tolerances; see the module docstring."""
    if name not in ENTROPY_CASES:
        return TOLERANCES["float32"]
    bound = entropy_error_bound(record, cfg)
    return bound, 3 * bound, None


def test_first_gradients_match_the_original(case):
    name, record, cfg, (_, _, recorder) = case
    tolerance = tolerances(name, record, cfg)[0]
    theirs = to_vqbench_state(record["gradients"], record["quantizer"])
    assert set(recorder.gradients) == set(theirs), name
    for key, grad in theirs.items():
        error = (recorder.gradients[key] - grad).norm()
        assert error <= tolerance * grad.norm() + 1e-12, f"{name}: gradient of {key} is off by {error / grad.norm()}"


def test_weights_and_codebook_buffers_match_the_original_after_every_step(case):
    name, record, cfg, (_, _, recorder) = case
    _, update_tolerance, element_tolerance = tolerances(name, record, cfg)
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
    """The original's constructors (PyTorch's defaults, U(-1/K, 1/K) codebooks, SimVQ's N(0, 1/d) frozen codes):
    the spread of every tensor of 64 or more values within 30%."""
    name, record, cfg, _ = case
    torch.manual_seed(1)
    fresh = build_training_module(cfg).tokenizer.state_dict()
    for key, value in to_vqbench_state(record["initial_state"], record["quantizer"]).items():
        if value.numel() >= 64 and value.std() > 0:
            ratio = float(fresh[key].std() / value.std())
            assert 0.7 < ratio < 1.3, f"{name}: {key} starts with {ratio:.2f} x the original's spread"


# --- data ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_record():
    return torch.load(FIXTURES / "imagenet64_data_351d29d.pt", weights_only=True)


def _write_imagenet_tree(root: Path, record: dict) -> None:
    """The recorder's tree: train/ (the four large photographs in two class folders), val/ (all, one folder)."""
    photos = record["photos"]
    for i, name in enumerate(list(photos)[:4]):
        folder = root / "train" / f"n0000000{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.JPEG").write_bytes(photos[name]["jpeg"])
    (root / "val" / "n00000000").mkdir(parents=True)
    for name, photo in photos.items():
        (root / "val" / "n00000000" / f"{name}.JPEG").write_bytes(photo["jpeg"])
    for name, photo in photos.items():
        pixels = np.ascontiguousarray(np.asarray(open_image(root / "val" / "n00000000" / f"{name}.JPEG", 3)))
        if hashlib.sha256(pixels.astype(np.uint8).tobytes()).hexdigest() != photo["decoded_sha256"]:
            pytest.skip(f"this Pillow decodes {name}.JPEG differently from the one that recorded it")


def test_imagenet64_items_match_load_data(data_record, tmp_path):
    """The recipe's train and test splits (``+experiment=imagenet64_vqvae``) against ``load_data``'s items, pixel for
    pixel: train under the same Python seed, test = the 50,000 val images (here the recorder's val/), which
    evaluate.py reads as split 'valid'. The original flips train items (RandomHorizontalFlip(0.5)): so does the
    recipe (data.flip, on the accelerator), and not the evaluation."""
    _write_imagenet_tree(tmp_path, data_record)
    cfg = compose_cfg(["+experiment=imagenet64_vqvae", f"data.root={tmp_path}", "data.num_workers=0"])
    assert cfg.data.resolution == data_record["resolution"] == 64 and cfg.data.flip
    assert any(item["flipped"] for item in data_record["items"]["train"])
    assert not any(item["flipped"] for item in data_record["items"]["valid"])
    datamodule = build_datamodule(cfg)
    for split, theirs in (("train", "train"), ("test", "valid")):
        dataset = datamodule.dataset(split)
        assert [Path(p).name for p in dataset.files] == [item["file"] for item in data_record["items"][theirs]]
        for index, item in enumerate(data_record["items"][theirs]):
            random.seed(item["seed"])
            pixels = dataset[index]
            assert torch.equal(pixels.permute(1, 2, 0), item["crop"]), f"{split}: {item['file']}"


# --- the measured agreement (docs/recipes.md): python -m tests.test_fidelity_visual_tokenizer_imagenet64 -------------


def measured_agreement() -> list[str]:
    """One markdown row per case: the largest loss, gradient, weight and update differences, and the indices."""
    import vqbench.sweep_configs  # noqa: F401  (the `sweep` group)

    torch.set_num_threads(1)
    lines = []
    for name in sorted(ROWS):
        record = torch.load(FIXTURES / f"vqvae_{name}.pt", weights_only=True)
        sweep, row, narrowing = ROWS[name]
        terms, indices, recorder = train_like_the_original(record, compose_row(sweep, row, narrowing))
        loss = max(
            float((original_terms(ours)[k] - v).abs())
            for theirs, ours in zip(record["losses"], terms, strict=True)
            for k, v in theirs.items()
            if k in original_terms(ours)
        )
        gradients = to_vqbench_state(record["gradients"], record["quantizer"])
        gradient = max(float((recorder.gradients[k] - g).norm() / g.norm()) for k, g in gradients.items())
        initial = to_vqbench_state(record["initial_state"], record["quantizer"])
        weights, update = 0.0, 0.0
        for theirs, ours in zip(record["states"], recorder.states, strict=True):
            for key, value in to_vqbench_state(theirs, record["quantizer"]).items():
                weights = max(weights, float((ours[key] - value).abs().max()))
                moved = (value - initial[key]).norm()
                if moved > 0:
                    update = max(update, float((ours[key] - value).norm() / moved))
        same = all(torch.equal(a, b) for a, b in zip(record["indices"], indices, strict=True))
        overrides = " ".join([f"+sweep={sweep}", *row, *narrowing])
        lines.append(
            f"| {name} | `{overrides}` | {loss:.1e} | {gradient:.1e} | {weights:.1e} | {update:.1e} | "
            f"{'identical' if same else 'DIFFER'} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(measured_agreement()))
