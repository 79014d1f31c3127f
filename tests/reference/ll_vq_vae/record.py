"""Records reference tensors from AGKhalil/ll-vq-vae at commit 2a5af8547e6a5472b5147d217e6d221c145739df, the code
behind the LL-VQ-VAE table (Khalil et al. 2023, "LL-VQ-VAE: Learnable Lattice Vector-Quantization For Efficient
Representations", arXiv 2310.09382), for ``tests/test_fidelity_ll_vq_vae.py``.

    git -C MIRROR archive 2a5af8547e6a5472b5147d217e6d221c145739df | tar -x -C /tmp/ll-vq-vae
    python tests/reference/ll_vq_vae/record.py /tmp/ll-vq-vae

It imports and runs the original code from that checkout (``experiments/model.py``, ``experiments/utils.py``,
``experiments/data_modules/*``, ``vector_quantizer/*``) and writes, next to this script:

- ``steps.pt``: for each dataset recipe (ffhq1024, celeba, fashion-mnist) x quantizer (vq, vq-ema, sparse_lattice,
  dense_lattice), the original ``Model`` at narrow widths (hidden [4, 8] / [8] / [8], d 8, K 16) trained by a
  Lightning Trainer for 2 epochs of 2 batches, as ``train.py`` trains it (``Model.training_step``,
  ``Model.configure_optimizers`` with the optimizer settings of ``configs/config.yaml``, so Adam 1e-3 and
  ExponentialLR(gamma 0.0) stepped per epoch). Recorded: the initial weights and buffers, the uint8 batches, the
  learning rate, loss terms and token ids of every step, the gradients of the first step, the weights and buffers
  after every step. Then, in eval mode as ``evaluate_checkpoint.py`` sets it (with the encoder's last 1x1 conv scaled
  by 20 first, because at these widths every latent of a barely trained model rounds to one lattice point), the
  reconstructions and quantized vectors of other photographs, and the effective codebook size that
  ``utils.count_uniques`` computes over a "train" and a "val" loader of them; with the weights it was counted with.
- ``data.pt``: real photographs (scikit-image's) in the on-disk formats of the three datasets (a CelebA JPEG, an FFHQ
  PNG, a FashionMNIST IDX file) and what the original data modules' transforms make of them.

The original's package pins torch 2.0.1 and pytorch-lightning 2.1.1; this script runs it with the installed torch
and Lightning. ``experiments/data_modules/ffhq1024.py`` imports ``deeplake`` at module level (only its dataset class
uses it); a stub module stands in for it here, so that the data module's transform can be read without installing it.
Everything runs on the CPU in float32.
"""

from __future__ import annotations

import argparse
import io
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COMMIT = "2a5af8547e6a5472b5147d217e6d221c145739df"
REPOSITORY = "AGKhalil/ll-vq-vae"
OUT = Path(__file__).resolve().parent

#: The dataset configs (configs/dataset/*.yaml) at narrow widths, with the size of the recorded images.
RECIPES = {
    "ffhq1024": {"hidden_dims": [4, 8], "size": 16},
    "celeba": {"hidden_dims": [8], "size": 16},
    "fashion-mnist": {"hidden_dims": [8], "size": 28},
}
QUANTIZERS = ("vq", "vq-ema", "sparse_lattice", "dense_lattice")
NARROW = {"embedding_dim": 8, "num_embeddings": 16}
BATCH, BATCHES_PER_EPOCH, EPOCHS = 3, 2, 2
COUNT_IMAGES = 4
COUNT_LATENT_SCALE = 20.0


def import_original(checkout: Path):
    sys.modules.setdefault("deeplake", types.ModuleType("deeplake"))
    sys.path[:0] = [str(checkout / "experiments"), str(checkout)]
    import model as original_model
    import utils as original_utils
    from data_modules.celeba import CelebADataModule
    from data_modules.fashion_mnist import FashionMNISTDataModule
    from data_modules.ffhq1024 import FFHQ1024DataModule
    from vector_quantizer import LatticeQuantizer, VectorQuantizer, VectorQuantizerEMA

    return types.SimpleNamespace(
        Model=original_model.Model,
        count_uniques=original_utils.count_uniques,
        quantizers={"vq": VectorQuantizer, "vq-ema": VectorQuantizerEMA, "lattice": LatticeQuantizer},
        data_modules={
            "celeba": CelebADataModule,
            "fashion-mnist": FashionMNISTDataModule,
            "ffhq1024": FFHQ1024DataModule,
        },
    )


def photos(channels: int, size: int, count: int, seed: int) -> torch.Tensor:
    """``count`` random crops (uint8, N x C x size x size) of scikit-image's photographs."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = sources[i % len(sources)]
        if channels == 1:
            photo = np.round(photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crops.append(torch.from_numpy(photo[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops)


def without(transform, *kinds):
    """A data module's Compose without its transforms of the given kinds."""
    from torchvision import transforms

    return transforms.Compose([t for t in transform.transforms if not isinstance(t, kinds)])


def certain_flip(transform):
    """A data module's Compose with its RandomHorizontalFlip made certain (p = 1)."""
    from torchvision import transforms

    flip = transforms.RandomHorizontalFlip
    return transforms.Compose([flip(p=1.0) if isinstance(t, flip) else t for t in transform.transforms])


def to_input(recipe: str, images: torch.Tensor, original) -> torch.Tensor:
    """What the recipe's data module feeds the model: its own transform of each (already cropped) image, without the
    random flip (the recorded batches are fixed)."""
    from torchvision import transforms

    kinds = (transforms.RandomHorizontalFlip, transforms.CenterCrop, transforms.ToPILImage)
    compose = without(data_module(recipe, original).transform, *kinds)
    return torch.stack([compose(Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy())) for img in images])


def data_module(recipe: str, original):
    return original.data_modules[recipe](data_dir="unused", batch_size=BATCH, num_workers=0)


def read_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


class Recorder:
    """Lightning callback + forward hooks that capture what one training step of the original computes."""

    def __init__(self, model, lattice: bool):
        self.lattice = lattice
        self.steps: list[dict] = []
        self.first_gradients: dict[str, torch.Tensor] | None = None
        self.current: dict = {}
        model._quantizer.register_forward_hook(self.quantizer_hook)
        model.register_forward_hook(self.model_hook)

    def quantizer_hook(self, module, inputs, output):
        if not module.training:
            return
        z = inputs[0].detach().permute(0, 2, 3, 1).contiguous()
        flat = z.view(-1, z.shape[-1])
        q = output["quantized_flat"].detach()
        terms = {"vq_loss": output["vq_loss"].detach().clone(), "latent_mse": F.mse_loss(q, flat)}
        if self.lattice:
            basis = module.embedding.weight.detach()
            terms["size"] = -basis.abs().sum()
            tokens = torch.round(flat * (1 / basis)).view(*z.shape)
        else:
            tokens = output["encodings"].argmax(1).view(*z.shape[:-1])
        self.current = {"terms": terms, "tokens": tokens.clone()}

    def model_hook(self, module, inputs, output):
        if module.training:
            self.current["recon_error"] = F.mse_loss(output["data_recon"], inputs[0]).detach().clone()


def callback(recorder: Recorder):
    import pytorch_lightning as pl

    class Capture(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            recorder.current["lr"] = optimizer.param_groups[0]["lr"]
            if recorder.first_gradients is None:
                recorder.first_gradients = {
                    name: p.grad.detach().clone() for name, p in pl_module.named_parameters() if p.grad is not None
                }

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            recorder.current["loss"] = outputs["loss"].detach().clone()
            recorder.current["state"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            recorder.steps.append(recorder.current)
            recorder.current = {}

    return Capture()


def record_training(recipe: str, quantizer_name: str, checkout: Path, original) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    configs = checkout / "experiments" / "configs"
    dataset_cfg = read_yaml(configs / "dataset" / f"{recipe}.yaml")
    quantizer_cfg = read_yaml(configs / "quantizer" / f"{quantizer_name}.yaml")
    optimizer_cfg = read_yaml(configs / "config.yaml")["optimizer"]
    channels, size = dataset_cfg["model"]["in_channels"], RECIPES[recipe]["size"]
    seed = 10 * list(RECIPES).index(recipe) + QUANTIZERS.index(quantizer_name)

    pl.seed_everything(seed, verbose=False)
    args = {**quantizer_cfg["args"], **NARROW}
    quantizer = original.quantizers[quantizer_cfg["name"]](**args)
    model = original.Model(
        **optimizer_cfg,
        hidden_dims=list(RECIPES[recipe]["hidden_dims"]),
        in_channels=channels,
        embedding_dim=args["embedding_dim"],
        quantizer=quantizer,
    )
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    train_images = photos(channels, size, BATCH * BATCHES_PER_EPOCH, seed=seed)
    count_images = photos(channels, size, 2 * COUNT_IMAGES, seed=1000 + seed)
    train_inputs = to_input(recipe, train_images, original)
    loader = DataLoader(TensorDataset(train_inputs, torch.zeros(len(train_inputs))), batch_size=BATCH, shuffle=False)

    recorder = Recorder(model, lattice=quantizer_cfg["name"] == "lattice")
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        callbacks=[callback(recorder)],
    )
    trainer.fit(model, train_dataloaders=loader)

    # evaluate_checkpoint.py: model.eval(), then count_uniques over the train and val loaders (the encoder's last 1x1
    # conv scaled up first, so that the count covers several tokens; the test loads these weights).
    model.eval()
    with torch.no_grad():
        model._encoder[-1][0].weight.mul_(COUNT_LATENT_SCALE)
    count_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    count_inputs = to_input(recipe, count_images, original)
    halves = count_inputs[:COUNT_IMAGES], count_inputs[COUNT_IMAGES:]
    loaders = [
        (lambda part=part: DataLoader(TensorDataset(part, torch.zeros(len(part))), batch_size=BATCH)) for part in halves
    ]
    with torch.no_grad():
        count = original.count_uniques(model=model, dataloaders=loaders)
        evaluation = model(count_inputs)
        eval_tokens = model._quantizer(model._encoder(count_inputs))["quantized_flat"]
    return {
        "recipe": recipe,
        "quantizer": quantizer_name,
        "quantizer_args": args,
        "hidden_dims": list(RECIPES[recipe]["hidden_dims"]),
        "optimizer": optimizer_cfg,
        "max_epochs": EPOCHS,
        "initial_state": initial,
        "train_images": train_images,
        "batch_size": BATCH,
        "steps": recorder.steps,
        "first_gradients": recorder.first_gradients,
        "count_images": count_images,
        "count_state": count_state,
        "count": count,
        "eval_reconstructions": evaluation["data_recon"],
        "eval_quantized_flat": eval_tokens,
    }


def exact_uint8(image: torch.Tensor) -> torch.Tensor:
    """ToTensor's [0, 1] output as the uint8 levels it came from (4x smaller), checked to be exactly level / 255."""
    levels = (image * 255).round().to(torch.uint8)
    if not torch.equal(levels.float() / 255, image):
        raise AssertionError("the transform's output is not exactly uint8 / 255")
    return levels


def jpeg_bytes(image: np.ndarray) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def png_bytes(image: np.ndarray) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def record_data(original) -> dict:
    """The original transforms on real photographs in each dataset's on-disk format."""
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    face = photos(3, 218, 1, seed=1)[0]
    celeba_jpeg = jpeg_bytes(face.permute(1, 2, 0)[:, 20:198].numpy())  # 178 wide, 218 high, as CelebA's
    celeba = data_module("celeba", original).transform
    # torchvision's CelebA opens each file with PIL.Image.open and passes it to the transform unconverted
    celeba_out = without(celeba, transforms.RandomHorizontalFlip)(Image.open(io.BytesIO(celeba_jpeg.numpy())))
    celeba_flipped = certain_flip(celeba)(Image.open(io.BytesIO(celeba_jpeg.numpy())))

    ffhq_png = png_bytes(photos(3, 32, 1, seed=3)[0].permute(1, 2, 0).numpy())
    ffhq = without(data_module("ffhq1024", original).transform, transforms.RandomHorizontalFlip)
    # FFHQ1024Dataset hands the transform deeplake's H x W x 3 uint8 array of the image
    ffhq_out = ffhq(np.asarray(Image.open(io.BytesIO(ffhq_png.numpy()))))

    fashion_images = photos(1, 28, 6, seed=4)[:, 0].numpy()
    train_idx = idx_bytes(fashion_images, 0x00000803)
    labels_idx = idx_bytes(np.zeros(len(fashion_images), dtype=np.uint8), 0x00000801)
    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for prefix in ("train", "t10k"):
            (raw / f"{prefix}-images-idx3-ubyte").write_bytes(train_idx)
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(labels_idx)
        module = data_module("fashion-mnist", original)
        dataset = FashionMNIST(root, train=False, transform=module.transform)
        fashion_out = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return {
        "celeba_jpeg": celeba_jpeg,
        "celeba": exact_uint8(celeba_out),
        "celeba_flipped": exact_uint8(celeba_flipped),
        "ffhq_png": ffhq_png,
        "ffhq": ffhq_out,
        "fashion_idx": torch.frombuffer(bytearray(train_idx), dtype=torch.uint8),
        "fashion": fashion_out,
    }


def checkout_commit(checkout: Path) -> str | None:
    """The commit of a git checkout, or None for an exported tree (``git archive``)."""
    if not (checkout / ".git").exists():
        return None
    result = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help=f"a checkout (or git archive) of {REPOSITORY} at {COMMIT}")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    found = checkout_commit(checkout)
    if found is not None and found != COMMIT:
        parser.error(f"{checkout} is at commit {found}; the fixtures are recorded from {COMMIT}")
    original = import_original(checkout)
    torch.use_deterministic_algorithms(True)
    meta = {"repository": REPOSITORY, "commit": COMMIT, "torch": str(torch.__version__)}
    cases = {
        f"{recipe}/{name}": record_training(recipe, name, checkout, original)
        for recipe in RECIPES
        for name in QUANTIZERS
    }
    torch.save({"meta": meta, "cases": cases}, OUT / "steps.pt")
    torch.save({"meta": meta, **record_data(original)}, OUT / "data.pt")
    for name in ("steps.pt", "data.pt"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size / 1e3:.0f} kB) from {REPOSITORY}@{COMMIT}")


if __name__ == "__main__":
    main()
