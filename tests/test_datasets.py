"""The real-dataset loaders on small fixtures written in each dataset's on-disk format (vqbench.data.fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from tests.conftest import TINY_TRAINING
from vqbench.data.cache import CachedImages, build_cache
from vqbench.data.celeba import celeba_split
from vqbench.data.fashion_mnist import fashion_mnist_split
from vqbench.data.ffhq import ffhq_split
from vqbench.data.fixtures import write_celeba, write_fashion_mnist, write_idx_images, write_imagenet, write_png_folder
from vqbench.data.folder import folder_split
from vqbench.data.imagenet import imagenet_split
from vqbench.data.module import ImageDataModule, random_horizontal_flip, to_model_range
from vqbench.data.splits import holdout_size, seeded_split
from vqbench.data.transforms import CenterCropADM, RandomResizedCropADM
from vqbench.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    return write_celeba(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("imagenet"))


def _pil(tensor: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor.permute(1, 2, 0).numpy())


# --- CelebA -------------------------------------------------------------------------------------------------------


def test_celeba_splits_follow_the_partition_file(celeba):
    sizes = {split: len(celeba_split(split, str(celeba))) for split in ("train", "val", "test")}
    assert sizes == {"train": 6, "val": 3, "test": 3}
    test = celeba_split("test", str(celeba))
    assert [p.name for p in test.files] == ["000010.jpg", "000011.jpg", "000012.jpg"]


def test_celeba_seed_crop_is_128_at_57_25_resized_like_torchvision(celeba):
    item = celeba_split("train", str(celeba), crop="seed", resolution=64)[0]
    assert item.shape == (3, 64, 64) and item.dtype == torch.uint8
    original = Image.open(celeba / "img_align_celeba" / "000001.jpg").convert("RGB")
    expected = TF.resize(TF.crop(original, 57, 25, 128, 128), [64, 64], antialias=True)
    assert torch.equal(item, TF.pil_to_tensor(expected))


def test_celeba_llvq_crop_is_torchvision_center_crop_148(celeba):
    item = celeba_split("val", str(celeba), crop="llvq", resolution=148)[1]
    original = Image.open(celeba / "img_align_celeba" / "000008.jpg").convert("RGB")
    assert torch.equal(item, TF.pil_to_tensor(TF.center_crop(original, [148, 148])))


def test_celeba_accepts_kaggle_csv_and_torchvision_parent_folder(tmp_path):
    write_celeba(tmp_path / "celeba", csv=True)
    assert len(celeba_split("test", str(tmp_path))) == 3  # root is the parent of celeba/


def test_celeba_errors_name_the_path_and_the_layout(tmp_path, celeba):
    with pytest.raises(DataError, match="data=celeba needs data.root=PATH"):
        celeba_split("train", None)
    with pytest.raises(DataError, match=f"data.root={tmp_path / 'nope'} is not a directory"):
        celeba_split("train", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="has no img_align_celeba/ folder"):
        celeba_split("train", str(tmp_path))
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(DataError, match="has no list_eval_partition.txt"):
        celeba_split("train", str(tmp_path))
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DataError, match="lists no images of split 'test'"):
        celeba_split("test", str(tmp_path))
    with pytest.raises(DataError, match="1 of the 1 train images .* are not in .*first: 000001.jpg"):
        celeba_split("train", str(tmp_path))
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(DataError, match="line 1 is '000001.jpg train'"):
        celeba_split("train", str(tmp_path))
    with pytest.raises(ConfigError, match="data.make_dataset.crop must be"):
        celeba_split("train", str(celeba), crop="center")


def test_corrupt_image_is_named_or_skipped_when_asked(tmp_path):
    root = write_celeba(tmp_path, partitions=(3, 1, 1))
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode image .*000002.jpg.*data.skip_corrupt=true"):
        celeba_split("train", str(root))[1]
    assert celeba_split("train", str(root), skip_corrupt=True)[1] is None


# --- FFHQ, folders, FashionMNIST, ImageNet -------------------------------------------------------------------------


def test_ffhq_split_is_six_to_one_fixed_by_seed_and_resized(tmp_path):
    root = write_png_folder(tmp_path, count=14, size=128)
    train, test = ffhq_split("train", str(root), resolution=32), ffhq_split("test", str(root), resolution=32)
    assert (len(train), len(test)) == (12, 2)
    assert not set(train.files) & set(test.files)
    assert train.files == ffhq_split("train", str(root), resolution=32).files
    assert test.files != ffhq_split("test", str(root), resolution=32, seed=1).files
    assert train[0].shape == (3, 32, 32)
    assert holdout_size(70_000, 60_000, 10_000) == 10_000 and holdout_size(60_000, 55_000, 5_000) == 5_000


def test_seeded_split_is_a_partition_and_stable():
    train, held = seeded_split(list(range(100)), 10, seed=3)
    assert sorted(train + held) == list(range(100)) and len(held) == 10
    assert (train, held) == seeded_split(list(range(100)), 10, seed=3)


def test_ffhq_and_folder_errors(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="holds 0 PNG files; data=ffhq expects"):
        ffhq_split("train", str(tmp_path))
    with pytest.raises(DataError, match="holds 1 image files; data=folder needs at least 2"):
        folder_split("train", str(tmp_path))
    with pytest.raises(ConfigError, match="holdout_fraction must be in"):
        folder_split("train", str(tmp_path), holdout_fraction=1.5)


def test_folder_of_images_one_channel(imagenet):
    train = folder_split("train", str(imagenet), resolution=32, channels=1)
    held = folder_split("test", str(imagenet), resolution=32, channels=1)
    assert (len(train), len(held)) == (9, 1) and train[0].shape == (1, 32, 32)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_idx_files_splits_and_pixels(tmp_path, compress):
    root = write_fashion_mnist(tmp_path, train=24, test=10, compress=compress)
    train, val, test = (fashion_mnist_split(s, str(root)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (22, 2, 10)
    assert train[0].shape == (1, 28, 28) and train[0].dtype == torch.uint8
    raw = root / "FashionMNIST" / "raw" / ("t10k-images-idx3-ubyte" + (".gz" if compress else ""))
    from vqbench.data.fashion_mnist import read_idx_images

    assert torch.equal(test[3][0], torch.from_numpy(read_idx_images(raw)[3].copy()))
    everything = torch.stack([train[i] for i in range(22)] + [val[0], val[1]])
    assert len(torch.unique(everything.flatten(1), dim=0)) == 24  # train and val are disjoint
    assert fashion_mnist_split("train", str(root / "FashionMNIST" / "raw"), resolution=32)[0].shape == (1, 32, 32)


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte .*FashionMNIST/raw"):
        fashion_mnist_split("train", str(tmp_path))
    path = write_idx_images(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="needs 2368"):
        fashion_mnist_split("train", str(tmp_path))
    path.write_bytes(b"\0\0\x08\x01" + bytes(12))
    with pytest.raises(DataError, match="not the IDX image magic"):
        fashion_mnist_split("train", str(tmp_path))
    with pytest.raises(ConfigError, match="set data.channels=1"):
        fashion_mnist_split("train", str(tmp_path), channels=3)


def _adm_centre_crop(image: Image.Image, size: int) -> np.ndarray:
    """guided-diffusion's center_crop_arr: box-filter halvings while the short side is >= 2 x size, a bicubic resize
    of the short side to size, then the centre size x size."""
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return array[top : top + size, left : left + size]


def test_imagenet_eval_is_adm_centre_crop_and_train_is_random(imagenet):
    val = imagenet_split("val", str(imagenet), resolution=64)
    assert len(val) == 4 and len(imagenet_split("train", str(imagenet), resolution=64)) == 6
    for i in range(len(val)):
        expected = _adm_centre_crop(Image.open(val.files[i]).convert("RGB"), 64)
        assert np.array_equal(val[i].permute(1, 2, 0).numpy(), expected), val.files[i]
    train = imagenet_split("train", str(imagenet), resolution=64)
    assert train[1].shape == (3, 64, 64)  # the grayscale JPEG becomes 3 channels
    assert any(not torch.equal(train[0], train[0]) for _ in range(5))
    assert not train.cacheable and val.cacheable


def test_adm_centre_crop_geometry():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 100, 3), dtype=np.uint8))
    # short side already S: no resampling, just the centre (offset (100 - 64) // 2 = 18)
    assert np.array_equal(np.asarray(CenterCropADM(64)(image)), np.asarray(image)[:, 18:82])
    # 4x larger by repeating pixels: two box halvings average each 4 x 4 block back to the original pixels
    big = image.resize((400, 256), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(CenterCropADM(64)(big)), np.asarray(image)[:, 18:82])
    # 3x larger: one halving to 150 x 96, then bicubic to 100 x 64 (not the original pixels: resampled)
    three = image.resize((300, 192), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(CenterCropADM(64)(three)), _adm_centre_crop(three, 64))


def test_adm_random_crop_draws_the_scale_and_the_offset_in_range(monkeypatch):
    """LlamaGen's random_crop_arr: short side to a random size in [S, ceil(1.25 S)], then a random S x S window of
    it. The draws are recorded (and the largest value taken) to check their ranges and the pixels of the crop."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 100, 3), dtype=np.uint8))
    draws = []

    def largest(low: int, high: int) -> int:
        draws.append((low, high))
        return high

    monkeypatch.setattr("vqbench.data.transforms.random.randint", largest)
    crop = RandomResizedCropADM(32)(image)
    resized = image.resize((round(100 * 40 / 64), 40), Image.Resampling.BICUBIC)  # short side 40 = ceil(1.25 x 32)
    assert draws == [(32, 40), (0, resized.height - 32), (0, resized.width - 32)]
    assert np.array_equal(np.asarray(crop), np.asarray(resized)[-32:, -32:])


def test_imagenet_errors(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has no val/ folder; data=imagenet expects train/ and val/"):
        imagenet_split("test", str(tmp_path))
    with pytest.raises(DataError, match="train holds no image files"):
        imagenet_split("train", str(tmp_path))


# --- the data module and the cache ---------------------------------------------------------------------------------


def _module(root: Path, **kwargs) -> ImageDataModule:
    from functools import partial

    return ImageDataModule(partial(celeba_split, root=str(root), resolution=32), batch_size=4, **kwargs)


def test_batches_become_floats_in_unit_range_and_only_training_batches_flip():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4) * 2
    assert torch.equal(to_model_range(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    flipped = torch.stack([random_horizontal_flip(images, seed) for seed in range(16)])
    assert (flipped == images.flip(-1)).flatten(2).all(-1).any() and (flipped == images).flatten(2).all(-1).any()
    assert torch.equal(random_horizontal_flip(images, 3), flipped[3])  # a function of the seed alone
    module = ImageDataModule(lambda split: None, flip=True)
    assert torch.equal(module.on_after_batch_transfer(images, 0), to_model_range(images))  # no trainer: no flip


def test_pixel_space_is_torchvision_to_tensor_then_normalize_exactly():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    to_tensor = TF.to_tensor(Image.fromarray(levels[0, 0].numpy()))[None]
    assert torch.equal(to_model_range(levels, 0.0, 1.0), to_tensor)  # LL-VQ-VAE's CelebA and FFHQ
    assert torch.equal(to_model_range(levels, 0.5, 1.0), TF.normalize(to_tensor, [0.5], [1.0]))  # FashionMNIST
    assert torch.equal(to_model_range(levels), TF.normalize(to_tensor, [0.5], [0.5]))  # the default [-1, 1]
    module = ImageDataModule(lambda split: None, pixel_mean=0.0, pixel_std=1.0)
    assert torch.equal(module.on_after_batch_transfer(levels, 0), to_tensor)


def test_cache_gives_the_same_pixels_and_is_reused(celeba, tmp_path):
    plain = _module(celeba)
    cached = _module(celeba, cache=True, cache_dir=str(tmp_path))
    for split in ("train", "test"):
        a, b = plain.dataset(split), cached.dataset(split)
        assert isinstance(b, CachedImages) and len(a) == len(b)
        assert all(torch.equal(a[i], b[i]) for i in range(len(a)))
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    _module(celeba, cache=True, cache_dir=str(tmp_path)).prepare_data()  # val is new; train and test are reused
    assert [f.stat().st_mtime_ns for f in files] == stamps and len(list(tmp_path.glob("*.npy"))) == 3
    meta = json.loads(next(tmp_path.glob("celeba-*.json")).read_text())
    assert meta["transform"].startswith("CropThenResize(top=57, left=25, size=128")


def test_cache_is_rebuilt_when_the_source_or_preprocessing_changes(tmp_path):
    root = write_celeba(tmp_path / "data", partitions=(3, 1, 1))
    source = celeba_split("test", str(root), resolution=32)
    first = build_cache(source, "test", tmp_path / "cache", num_workers=0)
    assert build_cache(celeba_split("test", str(root), resolution=32), "test", tmp_path / "cache", 0) == first
    assert build_cache(celeba_split("test", str(root), resolution=16), "test", tmp_path / "cache", 0) != first
    image = root / "img_align_celeba" / "000005.jpg"
    Image.open(image).rotate(90).save(image)
    rebuilt = build_cache(celeba_split("test", str(root), resolution=32), "test", tmp_path / "cache", 0)
    assert rebuilt != first
    fresh = CachedImages(rebuilt)[0]
    assert not torch.equal(fresh, CachedImages(first)[0])
    assert torch.equal(fresh, celeba_split("test", str(root), resolution=32)[0])


def test_interrupted_cache_build_leaves_no_finished_looking_cache(tmp_path):
    root = write_celeba(tmp_path / "data", partitions=(3, 1, 1))
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"broken")
    with pytest.raises(DataError, match="000003.jpg"):
        build_cache(celeba_split("train", str(root)), "train", tmp_path / "cache", 0)
    assert not list((tmp_path / "cache").glob("*.json")) and not list((tmp_path / "cache").glob("*.npy"))
    meta = build_cache(celeba_split("train", str(root), skip_corrupt=True), "train", tmp_path / "cache", 0)
    assert json.loads(meta.read_text())["skipped_unreadable"] == ["img_align_celeba/000003.jpg"]
    assert len(CachedImages(meta)) == 2


def test_a_cache_that_skipped_images_never_serves_a_run_that_does_not_skip(tmp_path):
    root = write_celeba(tmp_path / "data", partitions=(3, 1, 1))
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"broken")
    skipping = build_cache(celeba_split("train", str(root), skip_corrupt=True), "train", tmp_path / "cache", 0)
    assert len(CachedImages(skipping)) == 2
    with pytest.raises(DataError, match="cannot decode image .*000002.jpg"):
        build_cache(celeba_split("train", str(root)), "train", tmp_path / "cache", 0)


def test_unwritable_cache_folder_is_a_clear_error(celeba, tmp_path):
    (tmp_path / "a_file").write_text("")  # a folder inside a file cannot be made, even by root
    with pytest.raises(DataError, match="cannot write the preprocessed cache .*pass data.cache_dir=PATH"):
        _module(celeba, cache=True, cache_dir=str(tmp_path / "a_file" / "cache")).dataset("test")


def test_loader_worker_errors_keep_their_one_line_message(tmp_path):
    root = write_celeba(tmp_path, partitions=(4, 1, 1))
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"broken")
    module = _module(root, num_workers=1)
    with pytest.raises(DataError) as error:
        next(iter(module.train_dataloader()))
    assert str(error.value).startswith("cannot decode image") and "Traceback" not in str(error.value)
    skipping = _module(root, num_workers=0, skip_corrupt=True)
    skipping.make_dataset = lambda split: celeba_split(split, str(root), resolution=32, skip_corrupt=True)
    sizes = [len(batch) for batch in skipping.train_dataloader()]
    assert sizes == [3]


# --- through run.py ------------------------------------------------------------------------------------------------

#: A narrow model and three steps; the data comes from each fixture.
TINY_MODEL = [
    *TINY_TRAINING,
    "data.batch_size=2",
    "data.eval_batch_size=4",
    "data.num_workers=0",
]


@pytest.mark.slow
def test_run_py_trains_and_evaluates_on_every_dataset_format(tmp_path, celeba, imagenet):
    from tests.conftest import run_cli

    fashion = write_fashion_mnist(tmp_path / "fm", compress=True)
    ffhq = write_png_folder(tmp_path / "ffhq", count=14, size=128)
    cases = {
        "celeba": [f"data.root={celeba}", "data.resolution=32", "data.cache=true", f"data.cache_dir={tmp_path}/c"],
        "ffhq": [f"data.root={ffhq}", "data.resolution=32"],
        "fashion_mnist": [f"data.root={fashion}"],
        "imagenet": [f"data.root={imagenet}", "data.resolution=32", "data.cache=true", f"data.cache_dir={tmp_path}/c"],
        "folder": [f"data.root={imagenet}", "data.resolution=32", "data.channels=1"],
    }
    for name, overrides in cases.items():
        out = tmp_path / name
        run_cli(f"data={name}", *overrides, *TINY_MODEL, f"hydra.run.dir={out}", cwd=tmp_path)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["step"] == 3 and np.isfinite(metrics["metrics"]["val/psnr"]), name
    # the 1-channel FashionMNIST model evaluates on the test file, 10 images
    result = run_cli(
        "+eval=true",
        f"ckpt={tmp_path}/fashion_mnist/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path}/e",
        cwd=tmp_path,
    )
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]["images"] == 10, result.stdout
    # evaluating on another copy of the data changes only data.root (the trained preprocessing stays)
    copy = write_celeba(tmp_path / "celeba_copy", partitions=(1, 1, 5))
    run_cli(
        "+eval=true",
        f"ckpt={tmp_path}/celeba/checkpoints/last.ckpt",
        f"data.root={copy}",
        "data.cache=false",
        f"hydra.run.dir={tmp_path}/e2",
        cwd=tmp_path,
    )
    evaluated = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert evaluated["protocol"]["images"] == 5 and evaluated["config"]["data"]["resolution"] == 32


@pytest.mark.slow
def test_run_py_data_errors_are_one_line_before_training(tmp_path):
    from tests.conftest import run_cli

    result = run_cli("data=celeba", f"hydra.run.dir={tmp_path}/a", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "error: data=celeba needs data.root=PATH" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "a" / "checkpoints").exists()
    root = write_celeba(tmp_path / "bad", partitions=(2, 1, 1))
    (root / "img_align_celeba" / "000001.jpg").write_bytes(b"broken")
    result = run_cli(
        "data=celeba",
        f"data.root={root}",
        *TINY_MODEL,
        "data.num_workers=1",
        f"hydra.run.dir={tmp_path}/b",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and "000001.jpg" in result.stderr and "Traceback" not in result.stderr


def _small_files(folder: Path, count: int, suffix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        files.append(folder / f"{i:04d}{suffix}")
        Image.fromarray(np.full((8, 8, 3), i % 256, dtype=np.uint8)).save(files[-1])
    return files


@pytest.mark.parametrize(
    ("suffix", "corrupt", "how"),
    [
        (".png", [70], "garbage"),  # past the first batch of 64 that check_files reads at once
        (".png", [139], "garbage"),  # the very last file
        (".png", [129, 3, 64], "garbage"),  # several: the first in file order is named, the others listed
        (".jpg", [100], "truncated"),  # a damaged body behind an intact header
        (".png", [1], "truncated"),
    ],
)
def test_check_files_names_each_unreadable_file_wherever_it_is(tmp_path, suffix, corrupt, how):
    """Every file is read (not only the first, nor only each batch's first, nor only the headers), and the message
    names the unreadable file itself, past the first loader batch too."""
    from vqbench.data.check import check_files
    from vqbench.data.files import ImageFiles

    files = _small_files(tmp_path / "images", 140, suffix)
    for index in corrupt:
        if how == "garbage":
            files[index].write_bytes(b"<html>404</html>")
        else:
            data = files[index].read_bytes()
            files[index].write_bytes(data[: len(data) * 2 // 3])
    source = ImageFiles(files, transform=lambda image: image, channels=3, name="folder", root=tmp_path / "images")
    with pytest.raises(DataError) as error:
        check_files(source, "train", num_workers=0, cache_dir=tmp_path / "cache")
    first, *others = sorted(corrupt)
    message = str(error.value)
    assert message.startswith(f"cannot decode image {files[first]} of the train split")
    assert all(files[i].name in message for i in others)
    assert all(files[i].name not in message for i in range(len(files)) if i not in corrupt)
    assert not (tmp_path / "cache").exists() or not list(
        (tmp_path / "cache").iterdir()
    )  # a failed check is not remembered
    for index in corrupt:  # repaired, the same files pass and the pass is remembered
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(files[index])
    check_files(source, "train", num_workers=0, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_holdout_size_follows_the_ratio():
    """round(total x holdout / (train + holdout)), at least one: LL-VQ's FFHQ 60,000 : 10,000 and FashionMNIST
    55,000 : 5,000, and the same proportion for other sizes."""
    assert holdout_size(70_000, 6, 1) == 10_000
    assert holdout_size(60_000, 11, 1) == 5_000
    assert holdout_size(700, 6, 1) == 100
    assert holdout_size(3, 6, 1) == 1  # never an empty held-out split
