"""Issue 6: the evaluation protocol (docs/protocol.md): L1, LPIPS, rFID, the usage window, multi-process evaluation
without repeated images, PNG pairs and metrics.json."""

import io
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from lightning import Trainer
from torch import nn

from tests.conftest import TINY, run_cli
from tests.recomputed import checkpoint_outputs, code_metrics, image_metrics, png_pairs
from tests.test_config import compose_cfg
from tests.test_metrics import _distortions, _real_photos
from vqbench import load_tokenizer
from vqbench.build import build_datamodule
from vqbench.checkpoint import evaluation_config
from vqbench.data.fixtures import write_fashion_mnist
from vqbench.data.module import ImageDataModule
from vqbench.data.sampler import StridedShardSampler
from vqbench.errors import ConfigError
from vqbench.metrics import CodebookUsage, DistinctTokens, MeanPerImage, l1, psnr, to_uint8
from vqbench.models import Tokenizer
from vqbench.quantizers import LatticeQuantizer
from vqbench.training.token_count import TokenCount


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory) -> Path:
    """A weights file for torch-fidelity's inception-v3-compat with random (Kaiming) convolutions: the real file
    cannot be downloaded here. Its FID values are meaningless but non-degenerate, which is what the plumbing and
    the comparison with torch-fidelity need."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    module = "torch_fidelity.feature_extractor_inceptionv3"
    with (
        mock.patch(f"{module}.load_state_dict_from_url", return_value=None),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        torch.manual_seed(0)
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for layer in network.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


def test_l1_per_image_closed_form():
    target = torch.zeros(2, 3, 4, 4)
    preds = target.clone()
    preds[0] += 0.5
    preds[1, 0] = 0.3  # one channel of three
    torch.testing.assert_close(l1(preds, target), torch.tensor([0.5, 0.1]))


def test_to_uint8_rounds_like_a_png():
    values = torch.tensor([0.0, 0.6 / 255, 0.4 / 255, 100.51 / 255, 1.0, 1.2, -0.1])
    assert to_uint8(values).tolist() == [0, 1, 0, 101, 255, 255, 0]
    photo = _real_photos()[:1]  # save_image's own conversion, through a real PNG file
    buffer = io.BytesIO()
    torchvision.utils.save_image(photo[0], buffer, format="png")
    decoded = torchvision.io.decode_png(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    assert torch.equal(decoded, to_uint8(photo[0]))


def test_lpips_metric_is_the_per_image_mean_of_the_lpips_package():
    import lpips

    from vqbench.metrics.lpips_metric import LPIPS

    torch.manual_seed(0)
    metric = LPIPS(pretrained=False)
    target = _real_photos()
    preds = _distortions(target)["blur"]
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    reference = metric.net(preds * 2 - 1, target * 2 - 1).flatten()  # the package's own forward, in [-1, 1]
    assert isinstance(metric.net, lpips.LPIPS) and metric.net.pnet_type == "alex"
    torch.testing.assert_close(metric.compute().float(), reference.mean(), rtol=1e-5, atol=1e-6)
    identical = LPIPS(pretrained=False)
    identical.update(target, target)
    assert float(identical.compute()) == pytest.approx(0.0, abs=1e-6)


def test_rfid_agrees_with_torch_fidelity(random_inception_weights):
    import torch_fidelity

    from vqbench.metrics.fid import ReconstructionFID

    g = torch.Generator().manual_seed(0)
    originals = torch.rand(10, 3, 32, 32, generator=g)
    reconstructions = (originals + 0.2 * torch.randn(originals.shape, generator=g)).clamp(0, 1)
    metric = ReconstructionFID(weights_path=random_inception_weights)
    metric.update(reconstructions[:4], originals[:4])
    metric.update(reconstructions[4:], originals[4:])
    ours = float(metric.compute())

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = to_uint8(images)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i]

    reference = torch_fidelity.calculate_metrics(
        input1=Images(reconstructions),
        input2=Images(originals),
        fid=True,
        feature_extractor_weights_path=str(random_inception_weights),
        cuda=False,
        batch_size=5,
        verbose=False,
    )["frechet_inception_distance"]
    assert ours > 1.0
    assert ours == pytest.approx(reference, rel=1e-3)
    same = ReconstructionFID(weights_path=random_inception_weights)
    same.update(originals, originals)
    assert abs(float(same.compute())) < 1e-3


def test_rfid_names_a_missing_weights_file(tmp_path):
    from vqbench.metrics.fid import ReconstructionFID
    from vqbench.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="metrics.inception_weights=.*weights-inception-2015-12-05"):
        ReconstructionFID(weights_path=tmp_path / "nope.pth")


def test_usage_window_is_a_fifo_of_the_last_tokens():
    metric = CodebookUsage(16, window=4)
    metric.update(torch.tensor([[0, 1, 2], [3, 4, 5]]))  # the queue keeps 2, 3, 4, 5
    metric.update(torch.tensor([5, 5]))  # now 4, 5, 5, 5
    result = metric.compute()
    assert float(result["codebook_usage"]) == 2 / 16
    p = torch.tensor([0.25, 0.75])
    assert float(result["perplexity"]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert float(result["effective_codebook_size"]) == 6  # every token, not only the window
    everything = CodebookUsage(16)
    everything.update(torch.tensor([0, 1, 2, 3, 4, 5, 5, 5]))
    assert float(everything.compute()["codebook_usage"]) == 6 / 16
    short = CodebookUsage(16, window=100)  # fewer tokens than the window: all of them
    short.update(torch.tensor([7, 8]))
    assert float(short.compute()["codebook_usage"]) == 2 / 16


def _flip_sensitive_tokenizer() -> Tokenizer:
    """A 1x2 convolution, so that a horizontally flipped image gets other tokens, into a fine lattice."""
    torch.manual_seed(0)
    quantizer = LatticeQuantizer(4, init_bound=1.0)
    with torch.no_grad():
        quantizer.basis.fill_(0.05)
    return Tokenizer(
        nn.Conv2d(3, 4, (1, 2)), quantizer, nn.Conv2d(4, 3, 1), pre_quant_conv=False, post_quant_conv=False
    ).eval()


def _count(tokenizer: Tokenizer, images: torch.Tensor, flip: bool) -> dict[str, float]:
    data = ImageDataModule(
        {"train": images[:3], "val": images[3:]}.get, eval_batch_size=4, pixel_mean=0.0, pixel_std=1.0
    )
    counter = TokenCount(tokenizer, data, ["train", "val"], flip=flip)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.test(counter, verbose=False)[0]


def test_token_count_covers_every_split_and_flips_like_the_llvq_loaders():
    tokenizer = _flip_sensitive_tokenizer()
    photo = (_real_photos()[1:2, :, :8, :8] * 255).round().to(torch.uint8)  # coins: textured
    images = photo.repeat(16, 1, 1, 1)
    with torch.no_grad():
        upright = tokenizer.encode(photo.float() / 255).indices.reshape(-1, 4)
        mirrored = tokenizer.encode(photo.flip(-1).float() / 255).indices.reshape(-1, 4)
    plain, flipped = _count(tokenizer, images, flip=False), _count(tokenizer, images, flip=True)
    assert plain["test/quantized_vectors"] == flipped["test/quantized_vectors"] == 16 * 8 * 7
    assert plain["test/effective_codebook_size"] == torch.unique(upright, dim=0).shape[0]
    both = torch.unique(torch.cat([upright, mirrored]), dim=0).shape[0]
    assert flipped["test/effective_codebook_size"] == both > plain["test/effective_codebook_size"]


def test_token_count_leaves_out_a_size_past_the_distinct_token_limit():
    counter = TokenCount(_flip_sensitive_tokenizer(), ImageDataModule(lambda split: None), ["train"])
    counter.distinct = DistinctTokens(limit=3)
    counter.data.make_dataset = {"train": torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)}.get
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert set(trainer.test(counter, verbose=False)[0]) == {"test/quantized_vectors"}


def test_evaluation_keeps_the_trained_pixel_space():
    trained = compose_cfg(["+experiment=llvq_celeba"])
    cfg = compose_cfg(["data=celeba", "data.root=/data/celeba", "+eval=true", "ckpt=last.ckpt"])
    merged = evaluation_config(trained, cfg, ["data=celeba", "data.root=/data/celeba", "+eval=true", "ckpt=last.ckpt"])
    assert (merged.data.pixel_mean, merged.data.pixel_std) == (0.0, 1.0) and merged.data.root == "/data/celeba"
    with pytest.raises(ConfigError, match="data.pixel_mean is fixed by the checkpoint"):
        evaluation_config(trained, cfg, ["data.pixel_mean=0.5"])


def test_strided_shards_cover_every_image_once():
    shards = [list(StridedShardSampler(7, rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(ValueError):
        StridedShardSampler(7, 3, 3)


# --- two processes (gloo) against one -----------------------------------------------------------------------------

IMAGES, CODES = 8, 32


def _evaluation_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = _real_photos()[:, :, :32, :32].repeat(2, 1, 1, 1)  # 8 images
    preds = _distortions(target)["noise"]
    tokens = torch.randint(0, CODES, (IMAGES, 4, 4), generator=torch.Generator().manual_seed(1))
    return preds, target, tokens


def _evaluate(preds, target, tokens, order, batch_size: int) -> dict[str, float]:
    psnr_metric, usage = MeanPerImage(psnr), CodebookUsage(CODES, window=32)
    order = list(order)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        psnr_metric.update(preds[batch], target[batch])
        usage.update(tokens[batch])
    with psnr_metric.sync_context():  # the pooled count, as compute() sees it
        images = int(psnr_metric.count)
    result = {"psnr": float(psnr_metric.compute()), "images": images}
    return result | {k: float(v) for k, v in usage.compute().items()}


def _worker(rank: int, world_size: int, init_file: str, images: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        preds, target, tokens = _evaluation_data()
        preds, target, tokens = preds[:images], target[:images], tokens[:images]
        result = _evaluate(preds, target, tokens, StridedShardSampler(images, rank, world_size), batch_size=2)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("images", [8, 7])
def test_two_processes_count_every_image_once(tmp_path, images):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), images, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    preds, target, tokens = _evaluation_data()
    single = _evaluate(preds[:images], target[:images], tokens[:images], range(images), batch_size=4)
    assert ranks[0] == ranks[1]
    assert ranks[0]["images"] == images  # a padded sampler would count 8 for 7 images
    for key in ("psnr", "perplexity", "effective_codebook_size"):
        assert ranks[0][key] == pytest.approx(single[key], rel=1e-6)
    if images % 2 == 0:  # the last 32 tokens of the split are then exactly the union of each rank's last 16
        assert ranks[0]["codebook_usage"] == single["codebook_usage"]


# --- through run.py ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluation_writes_every_metric_its_protocol_and_png_pairs(tmp_path, random_inception_weights):
    import torch_fidelity

    train = tmp_path / "train"
    run_cli(*TINY, "data.resolution=32", "data.make_dataset.test_length=7", f"hydra.run.dir={train}", cwd=tmp_path)
    ckpt = train / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    result = run_cli(
        "+eval=true",
        f"ckpt={ckpt}",
        "metrics.lpips_pretrained=false",
        f"metrics.inception_weights={random_inception_weights}",
        f"metrics.rfid.cache_dir={tmp_path / 'rfid_cache'}",
        "metrics.usage_window=64",
        "metrics.save_reconstructions=true",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    record = json.loads((out / "metrics.json").read_text())
    metrics = record["metrics"]
    expected = {"psnr", "ssim", "l1", "lpips", "rfid", "codebook_usage", "perplexity", "effective_codebook_size"}
    expected |= {"used_codes", "unused_codes", "codebook_usage_all_tokens", "perplexity_all_tokens"}
    assert {f"test/{k}" for k in expected} == set(metrics)
    assert record["protocol"]["rfid_protocol"] == "torch_fidelity" == record["protocol"]["rfid"]["id"]
    protocol = record["protocol"]
    assert protocol["images"] == 7 and protocol["split"] == "test" and protocol["processes"] == 1
    assert "last 64 tokens" in protocol["codebook_usage"] and "AlexNet" in protocol["lpips"]
    assert record["unavailable"] == {} and record["checkpoint"] == str(ckpt.resolve())
    width = max(len(key) for key in metrics)
    for key, value in metrics.items():  # the printed table is the file
        assert f"{key:<{width}}  {value:>12.6f}" in result.stdout
    assert "RANDOMLY INITIALISED" in result.stdout + result.stderr

    # the PNG pairs: every test image in split order, and its reconstruction
    names = sorted(p.name for p in (out / "reconstructions").glob("*.png"))
    assert names == [f"{i:06d}_{kind}.png" for i in range(7) for kind in ("original", "reconstruction")]
    originals, reconstructions = png_pairs(out / "reconstructions")
    direct = checkpoint_outputs(ckpt, "test", overrides={"metrics.usage_window": 64})
    assert np.array_equal(np.round(originals * 255), np.round(direct["originals"] * 255))
    assert np.abs(reconstructions - direct["reconstructions"]).max() <= 0.5 / 255 + 1e-6  # the PNG's rounding
    # PSNR, SSIM and L1 again with scikit-image: from the network's float reconstructions to float32 rounding, from
    # the PNGs up to what their 8-bit rounding moves; the token statistics with numpy (the usage window of 64 tokens
    # = the last image's 8 x 8 tokens)
    exact = image_metrics(direct["originals"], direct["reconstructions"])
    for name in ("psnr", "ssim", "l1"):
        assert metrics[f"test/{name}"] == pytest.approx(exact[name], rel=1e-4), name
    from_pngs = image_metrics(originals, reconstructions)
    assert metrics["test/psnr"] == pytest.approx(from_pngs["psnr"], abs=0.01)
    assert metrics["test/ssim"] == pytest.approx(from_pngs["ssim"], abs=3e-3)
    assert metrics["test/l1"] == pytest.approx(from_pngs["l1"], abs=1e-4)
    tokens = code_metrics(direct["tokens"], 512, direct["window"])
    for name, value in tokens.items():
        assert metrics[f"test/{name}"] == pytest.approx(value, rel=1e-6), name
    # rFID from the PNG pairs with torch-fidelity itself (the same random Inception weights)
    reference = torch_fidelity.calculate_metrics(
        input1=_Images(reconstructions),
        input2=_Images(originals),
        fid=True,
        feature_extractor_weights_path=str(random_inception_weights),
        cuda=False,
        batch_size=7,
        verbose=False,
    )["frechet_inception_distance"]
    assert metrics["test/rfid"] == pytest.approx(reference, rel=1e-2)

    # the originals' statistics were cached (with their checksum); a second evaluation reads them instead
    assert "cached in" in record["protocol"]["rfid"]["reference_statistics"]
    assert len(list((tmp_path / "rfid_cache").glob("torch_fidelity-*.npz"))) == 1
    assert len(list((tmp_path / "rfid_cache").glob("torch_fidelity-*.sha256"))) == 1
    again = tmp_path / "again"
    run_cli(
        "+eval=true",
        f"ckpt={ckpt}",
        "metrics.lpips=false",
        f"metrics.inception_weights={random_inception_weights}",
        f"metrics.rfid.cache_dir={tmp_path / 'rfid_cache'}",
        "metrics.usage_window=64",
        f"hydra.run.dir={again}",
        cwd=tmp_path,
    )
    second = json.loads((again / "metrics.json").read_text())
    assert second["protocol"]["rfid"]["reference_statistics"].startswith("read from the cache")
    # float64 statistics stored bit for bit, and the same reconstructions through the same network
    assert second["metrics"]["test/rfid"] == pytest.approx(metrics["test/rfid"], rel=1e-12)


class _Images(torch.utils.data.Dataset):
    """N x H x W x C images in [0, 1] as the uint8 C x H x W tensors torch-fidelity reads."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(np.round(images * 255).astype(np.uint8)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


@pytest.mark.slow
def test_llvq_recipe_counts_the_effective_size_over_train_and_val(tmp_path):
    """LL-VQ-VAE's protocol end to end: after training, the size is counted over train + val (24 training-file
    images of 14 x 14 tokens), recorded in metrics.json, and equals a count by hand on the saved weights."""
    root = write_fashion_mnist(tmp_path / "fm")
    out = tmp_path / "run"
    overrides = ["model.hidden_channels=[8]", "codebook.dim=8", "trainer.max_steps=2", "data.batch_size=4"]
    overrides += ["trainer.enable_progress_bar=false", "metrics.lpips=false", "metrics.rfid=false"]
    run_cli("+experiment=llvq_fashion_mnist", f"data.root={root}", *overrides, "evaluate_after_training=true",
            f"hydra.run.dir={out}", cwd=tmp_path)  # fmt: skip
    record = json.loads((out / "metrics.json").read_text())
    assert "train + val split(s)" in record["protocol"]["effective_codebook_size"]
    assert record["metrics"]["test/quantized_vectors"] == 24 * 14 * 14
    tok = load_tokenizer(str(out / "checkpoints" / "last.ckpt"))
    data = build_datamodule(tok.config)
    images = torch.stack([item for split in ("train", "val") for item in data.dataset(split)])
    tokens = tok.encode(tok.from_uint8(images)).reshape(-1, 8)
    assert record["metrics"]["test/effective_codebook_size"] == torch.unique(tokens, dim=0).shape[0]


@pytest.mark.slow
def test_missing_lpips_and_inception_weights_still_report_the_rest(tmp_path):
    train = tmp_path / "train"
    run_cli(*TINY, "data.resolution=32", f"hydra.run.dir={train}", cwd=tmp_path)
    out = tmp_path / "eval"
    env_home = tmp_path / "torch_home"
    os.environ["TORCH_HOME"], saved = str(env_home), os.environ.get("TORCH_HOME")
    os.environ["https_proxy"], saved_proxy = "http://127.0.0.1:9", os.environ.get("https_proxy")
    try:
        result = run_cli("+eval=true", f"ckpt={train}/checkpoints/last.ckpt", f"hydra.run.dir={out}", cwd=tmp_path)
    finally:
        for key, value in (("TORCH_HOME", saved), ("https_proxy", saved_proxy)):
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    record = json.loads((out / "metrics.json").read_text())
    assert "test/psnr" in record["metrics"] and "test/lpips" not in record["metrics"]
    assert "test/rfid" not in record["metrics"]
    checkpoints = env_home / "hub" / "checkpoints"
    assert f"alexnet-owt-7be5be79.pth, which is not in {checkpoints}" in record["unavailable"]["lpips"]
    assert "weights-inception-2015-12-05-6726825d.pth" in record["unavailable"]["rfid"]
    assert "lpips: not computed" in result.stdout and "rfid: not computed" in result.stdout


@pytest.mark.slow
def test_two_process_evaluation_matches_one(tmp_path):
    train = tmp_path / "train"
    run_cli(*TINY, "data.make_dataset.test_length=7", f"hydra.run.dir={train}", cwd=tmp_path)
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"eval{devices}"
        run_cli(
            "+eval=true",
            f"ckpt={train}/checkpoints/last.ckpt",
            f"trainer.devices={devices}",
            "trainer.strategy=ddp" if devices > 1 else "trainer.strategy=auto",
            "metrics.lpips=false",
            "metrics.rfid=false",
            "data.eval_batch_size=2",
            f"hydra.run.dir={out}",
            cwd=tmp_path,
        )
        results[devices] = json.loads((out / "metrics.json").read_text())
    assert results[2]["protocol"]["processes"] == 2
    for key, value in results[1]["metrics"].items():
        assert results[2]["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_lpips_is_reported_unavailable_below_alexnets_minimum_size():
    from tests.test_config import compose_cfg
    from vqbench.build import build_evaluation_metrics

    cfg = compose_cfg(["metrics.rfid=false", "metrics.lpips_pretrained=false"])
    metrics, unavailable = build_evaluation_metrics(cfg, (28, 28))  # FashionMNIST
    assert metrics == {} and "28x28" in unavailable["lpips"] and "metrics.lpips=false" in unavailable["lpips"]
    metrics, unavailable = build_evaluation_metrics(cfg, (32, 32))
    assert set(metrics) == {"lpips"} and unavailable == {}


# --- which command-line overrides an evaluation takes -------------------------------------------------------------


def test_evaluation_config_takes_data_metrics_trainer_and_seed_from_the_command_line():
    from tests.test_config import compose_cfg
    from vqbench.evaluate import evaluation_config, evaluation_trainer_settings

    trained = compose_cfg(["data.resolution=16", "trainer.max_steps=3", "trainer.precision=bf16-mixed"])
    overrides = ["+eval=true", "ckpt=x.ckpt", "trainer.deterministic=true", "+trainer.benchmark=false"]
    overrides += ["trainer.devices=2", "data.eval_batch_size=2", "metrics.lpips=false", "seed=5"]
    merged = evaluation_config(trained, compose_cfg(overrides), overrides)
    assert (merged.data.resolution, merged.data.eval_batch_size, merged.seed) == (16, 2, 5)
    assert merged.metrics.lpips is False and merged.ckpt == "x.ckpt"
    assert evaluation_trainer_settings(merged) == {
        "accelerator": "auto",
        "devices": 2,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "bf16-mixed",  # the trained value, not overridden
        "deterministic": True,
        "benchmark": False,
        "enable_progress_bar": True,
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=5", "'trainer.max_steps=5' does not apply to evaluation; of trainer.*, evaluation takes"),
        ("+trainer.limit_test_batches=2", "does not apply to evaluation; of trainer.*, evaluation takes"),
        ("optimizer.lr=1", "'optimizer.lr=1' does not apply to evaluation"),
        ("loss=vqgan", "'loss=vqgan' does not apply to evaluation"),
        ("ema_decay=0.9", "'ema_decay=0.9' does not apply to evaluation"),
        ("+experiment=celeba64_vqvae", "does not apply to evaluation"),
        ("quantizer.commitment_weight=1", "the quantizer is fixed by the checkpoint"),
        ("codebook.size=8", "the codebook is fixed by the checkpoint"),
    ],
)
def test_evaluation_refuses_overrides_it_cannot_honour(override, message):
    from tests.test_config import compose_cfg
    from vqbench.checkpoint import evaluation_config
    from vqbench.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        evaluation_config(compose_cfg(), compose_cfg(["+eval=true", override]), ["+eval=true", override])
