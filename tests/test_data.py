import pytest
import torch

from vqbench.data.sample import PHOTOS, sample_split
from vqbench.errors import DataError


def test_sample_splits_use_disjoint_photographs():
    assert not set(PHOTOS["train"]) & set(PHOTOS["val"])
    assert not set(PHOTOS["train"]) & set(PHOTOS["test"])
    assert not set(PHOTOS["val"]) & set(PHOTOS["test"])


def test_sample_crops_shape_range_and_lengths():
    train = sample_split("train", resolution=32, train_length=10)
    test = sample_split("test", resolution=32, test_length=6)
    assert len(train) == 10 and len(test) == 6
    image = train[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image.float().std() > 2  # a real photograph, not a constant


def test_eval_crops_are_fixed_and_train_crops_are_random():
    a, b = sample_split("test", test_length=4, seed=1), sample_split("test", test_length=4, seed=1)
    assert torch.equal(a[2], b[2])
    train = sample_split("train", train_length=4)
    torch.manual_seed(0)
    first = train[0]
    assert not all(torch.equal(first, train[0]) for _ in range(3))


def test_grayscale_sample_for_one_channel_models():
    assert sample_split("val", channels=1, val_length=2)[0].shape == (1, 64, 64)


def test_resolution_larger_than_the_photos_is_a_clear_error():
    with pytest.raises(DataError, match="data.resolution=4096"):
        sample_split("val", resolution=4096)
