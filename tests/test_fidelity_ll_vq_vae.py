"""The LL-VQ-VAE recipes against the code behind their table: AGKhalil/ll-vq-vae at commit
2a5af8547e6a5472b5147d217e6d221c145739df (Khalil et al. 2023, arXiv 2310.09382).

The references in ``tests/reference/ll_vq_vae/`` were recorded from that code by ``record.py`` (see its docstring):
the original ``Model`` with each quantizer, at narrow widths, trained by a Lightning Trainer for 2 epochs of 2
batches with the original's optimizer and scheduler, and the original data transforms on real photographs. Here
vqbench builds the same network through its own configs (``+experiment=llvq_* quantizer=...`` plus narrowing
overrides, then ``vqbench.build``), loads the recorded initial weights, and trains it with its real
``TokenizerModule`` and a Lightning Trainer on the recorded uint8 batches, normalised by the recipe's data module.

Tolerances: float32 on the CPU. The forward passes run the same operations in the same order, so losses and tokens
agree to rounding (rtol 1e-5); gradients and the Adam updates built on them to rtol 1e-4 / atol 1e-6 (the EMA
statistics are sums in another order: index_add against the original's one-hot matmul). Data transforms agree exactly.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from vqbench.build import build_datamodule, build_training_module, check_config
from vqbench.data.module import ImageDataModule
from vqbench.training.module import TokenizerModule
from vqbench.training.token_count import TokenCount

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "ll_vq_vae"
COMMIT = "2a5af8547e6a5472b5147d217e6d221c145739df"

EXPERIMENTS = {"ffhq1024": "llvq_ffhq1024", "celeba": "llvq_celeba", "fashion-mnist": "llvq_fashion_mnist"}
QUANTIZERS = {"vq": "vq", "vq-ema": "ema", "sparse_lattice": "lattice", "dense_lattice": "dense_lattice"}
#: The original's quantizer state -> vqbench's.
QUANTIZER_KEYS = {
    "_quantizer.embedding.weight": {"vq": "codebook", "ema": "codebook", "lattice": "basis", "dense_lattice": "basis"},
    "_quantizer.ema_w": {"ema": "ema_sums"},
    "_quantizer.ema_cluster_size": {"ema": "ema_counts"},
}
LOSS = {"rtol": 1e-5, "atol": 1e-7}
TRAINED = {"rtol": 1e-4, "atol": 1e-6}


@pytest.fixture(scope="module")
def steps() -> dict:
    recorded = torch.load(REFERENCE / "steps.pt", weights_only=True)
    assert recorded["meta"]["commit"] == COMMIT
    return recorded["cases"]


@pytest.fixture(scope="module")
def data_reference() -> dict:
    recorded = torch.load(REFERENCE / "data.pt", weights_only=True)
    assert recorded["meta"]["commit"] == COMMIT
    return recorded


def compose_recipe(experiment: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}", *overrides])
    check_config(cfg)
    return cfg


def recipe_config(case: dict):
    """The recipe's own config, narrowed to the recorded widths; flips off (the recorded batches are fixed)."""
    args = case["quantizer_args"]
    hidden = ",".join(str(h) for h in case["hidden_dims"])
    return compose_recipe(
        EXPERIMENTS[case["recipe"]],
        [
            f"quantizer={QUANTIZERS[case['quantizer']]}",
            f"model.hidden_channels=[{hidden}]",
            f"codebook.dim={args['embedding_dim']}",
            f"codebook.size={args['num_embeddings']}",
            f"data.batch_size={case['batch_size']}",
            "data.flip=false",
        ],
    )


def to_vqbench(original: dict[str, torch.Tensor], module: TokenizerModule, quantizer: str) -> dict[str, torch.Tensor]:
    """The original's state dict in vqbench's names: encoder and decoder layer by layer (the same layers in the same
    order, checked by shape), the quantizer by QUANTIZER_KEYS."""
    ours = module.tokenizer.state_dict()
    mapped = {}
    for part in ("encoder", "decoder"):
        theirs = [v for k, v in original.items() if k.startswith(f"_{part}.")]
        names = [k for k in ours if k.startswith(f"{part}.")]
        assert len(theirs) == len(names), part
        for name, value in zip(names, theirs, strict=True):
            assert ours[name].shape == value.shape, name
            mapped[name] = value
    for key, names in QUANTIZER_KEYS.items():
        if quantizer in names:
            mapped[f"quantizer.{names[quantizer]}"] = original[key].reshape(ours[f"quantizer.{names[quantizer]}"].shape)
    assert mapped.keys() == ours.keys()
    return mapped


class Capture(L.Callback):
    """What each training step of vqbench's module used and produced."""

    def __init__(self, module: TokenizerModule):
        self.steps: list[dict] = []
        self.gradients: dict[str, torch.Tensor] | None = None
        module.tokenizer.quantizer.register_forward_hook(self._tokens)

    def _tokens(self, quantizer, inputs, output):
        if quantizer.training:
            self.tokens = output.indices.detach().clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.gradients is None:
            self.gradients = {
                k: p.grad.clone() for k, p in pl_module.tokenizer.named_parameters() if p.grad is not None
            }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        losses = {k.removeprefix("train/loss/"): v.clone() for k, v in trainer.callback_metrics.items()}
        state = {k: v.clone() for k, v in pl_module.tokenizer.state_dict().items()}
        self.steps.append({"lr": self.lr, "losses": losses, "tokens": self.tokens, "state": state})


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def train_like_the_original(cfg, case: dict) -> tuple[TokenizerModule, Capture]:
    module = build_training_module(cfg)
    module.tokenizer.load_state_dict(to_vqbench(case["initial_state"], module, QUANTIZERS[case["quantizer"]]))
    datamodule = build_datamodule(cfg)
    # The recipe's data module (its normalisation, flips off), fed the recorded uint8 batches in their order.
    datamodule.train_dataloader = lambda: DataLoader(case["train_images"], batch_size=case["batch_size"])
    datamodule.val_dataloader = lambda: []
    capture = Capture(module)
    trainer(max_epochs=case["max_epochs"], limit_val_batches=0, callbacks=[capture]).fit(module, datamodule=datamodule)
    return module, capture


def _no_gradient(case: dict) -> dict[str, torch.Tensor]:
    """The original's parameters and buffers that get no gradient (the EMA codebook), so that the mapping is whole."""
    return {k: v for k, v in case["initial_state"].items() if k not in case["first_gradients"]}


def check_training(module: TokenizerModule, capture: Capture, case: dict) -> None:
    quantizer = QUANTIZERS[case["quantizer"]]
    weights = module.loss_weights
    assert len(capture.steps) == len(case["steps"]) == 4
    for ours, theirs in zip(capture.steps, case["steps"], strict=True):
        # ExponentialLR(gamma 0) stepped per epoch: lr 1e-3 in the first epoch, 0 in the second
        assert ours["lr"] == theirs["lr"]
        losses, terms = ours["losses"], theirs["terms"]
        torch.testing.assert_close(losses["total"], theirs["loss"], **LOSS)
        torch.testing.assert_close(losses["reconstruction"], theirs["recon_error"], **LOSS)
        vq_loss = sum(weights.get(k, 0.0) * v for k, v in losses.items() if k not in ("total", "reconstruction"))
        torch.testing.assert_close(vq_loss, terms["vq_loss"], **LOSS)
        for term in ("codebook", "commitment"):
            if term in losses:
                torch.testing.assert_close(losses[term], terms["latent_mse"], **LOSS)
        if "size" in terms:
            torch.testing.assert_close(losses["negative_basis_norm"], terms["size"], **LOSS)
        assert torch.equal(ours["tokens"].to(theirs["tokens"].dtype), theirs["tokens"])
        for key, value in to_vqbench(theirs["state"], module, quantizer).items():
            torch.testing.assert_close(ours["state"][key], value, **TRAINED, msg=f"{key} after a step")
    gradients = to_vqbench(case["first_gradients"] | _no_gradient(case), module, quantizer)
    for key, value in capture.gradients.items():
        torch.testing.assert_close(value, gradients[key], **TRAINED, msg=f"first gradient of {key}")


def check_evaluation(cfg, module: TokenizerModule, case: dict) -> None:
    """In eval mode, on held-out photographs: the same tokens and reconstructions, the metrics' [0, 1] images are the
    original's images, and the effective codebook size over a train and a val split equals ``count_uniques``'s."""
    module.tokenizer.load_state_dict(to_vqbench(case["count_state"], module, QUANTIZERS[case["quantizer"]]))
    module.tokenizer.eval()
    datamodule = build_datamodule(cfg)
    images = case["count_images"]
    half = len(images) // 2
    datamodule.make_dataset = {"train": images[:half], "val": images[half:]}.get
    inputs = datamodule.on_after_batch_transfer(images, 0)
    with torch.no_grad():
        reconstruction, quantized = module.tokenizer(inputs)
    torch.testing.assert_close(reconstruction, case["eval_reconstructions"], **LOSS)
    codes = module.tokenizer.quantizer.indices_to_codes(quantized.indices).permute(0, 2, 3, 1)
    torch.testing.assert_close(codes.reshape(-1, codes.shape[-1]), case["eval_quantized_flat"], **LOSS)
    # the metrics see the photographs as ToTensor gives them, whatever the recipe's input range
    torch.testing.assert_close(module.to_unit_range(inputs), images / 255, rtol=0, atol=1e-7)

    counted = trainer().test(TokenCount(module.tokenizer, datamodule, ["train", "val"]), verbose=False)[0]
    assert counted["test/effective_codebook_size"] == case["count"]["n_uniques"]
    assert counted["test/quantized_vectors"] == case["count"]["total_n"]


@pytest.mark.parametrize("name", [f"{recipe}/{quantizer}" for recipe in EXPERIMENTS for quantizer in QUANTIZERS])
def test_recipe_trains_and_counts_like_the_original(name, steps):
    case = steps[name]
    cfg = recipe_config(case)
    module, capture = train_like_the_original(cfg, case)
    check_training(module, capture, case)
    check_evaluation(cfg, module, case)


# --- data: the original transforms on real photographs in each dataset's on-disk format ----------------------------


def _recipe_data(experiment: str, root: Path, *overrides: str) -> ImageDataModule:
    return build_datamodule(compose_recipe(experiment, [f"data.root={root}", *overrides]))


def test_celeba_center_crop_148_flip_and_range_match_the_original(tmp_path, data_reference):
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "img_align_celeba" / "000001.jpg").write_bytes(data_reference["celeba_jpeg"].numpy().tobytes())
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    datamodule = _recipe_data("llvq_celeba", tmp_path)
    item = datamodule.dataset("train")[0]
    # the recorder stored ToTensor's output as the uint8 levels it is exactly level / 255 of
    assert torch.equal(item, data_reference["celeba"])
    assert torch.equal(datamodule.on_after_batch_transfer(item[None], 0)[0], data_reference["celeba"] / 255)
    # the original flips before its centre crop; the (178 - 148) / 2 margins are equal, so flipping after is the same
    assert datamodule.flip and torch.equal(item.flip(-1), data_reference["celeba_flipped"])


def test_ffhq_png_is_not_resized_and_enters_in_unit_range_like_the_original(tmp_path, data_reference):
    for name in ("00000.png", "00001.png"):  # a split needs two images
        (tmp_path / name).write_bytes(data_reference["ffhq_png"].numpy().tobytes())
    size = data_reference["ffhq"].shape[-1]  # the recipe's 1024 is the files' own size; this fixture is smaller
    datamodule = _recipe_data("llvq_ffhq1024", tmp_path, f"data.resolution={size}")
    item = datamodule.dataset("train")[0]
    assert torch.equal(datamodule.on_after_batch_transfer(item[None], 0)[0], data_reference["ffhq"])
    assert datamodule.flip


def test_fashion_mnist_idx_enters_in_minus_half_to_half_like_the_original(tmp_path, data_reference):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(data_reference["fashion_idx"].numpy().tobytes())
    datamodule = _recipe_data("llvq_fashion_mnist", tmp_path)
    test = datamodule.dataset("test")
    images = torch.stack([test[i] for i in range(len(test))])
    assert torch.equal(datamodule.on_after_batch_transfer(images, 0), data_reference["fashion"])
    assert not datamodule.flip
