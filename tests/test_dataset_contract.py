"""Every file of conf/data/ describes a dataset that vqbench can load and preprocess for evaluation.

The datasets come from listing conf/data/*.yaml, so a new dataset (one Python file and one YAML, docs/extending.md)
is checked here without anyone editing this file: its config composes, names a split factory whose module defines
``evaluation_transform(settings, resolution)``, and loads a batch of the configured shape, from no files at all or
from the fixture that ``vqbench.data.fixtures.write_NAME(root)`` writes in the dataset's on-disk format.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import get_method

from vqbench.build import build_datamodule
from vqbench.compose import compose_config
from vqbench.data import fixtures
from vqbench.data.evaluation_transform import evaluation_transform

CONF = Path(__file__).resolve().parents[1] / "conf"
DATASETS = sorted(path.stem for path in (CONF / "data").glob("*.yaml"))
RESOLUTION = 32


def test_every_data_file_is_listed():
    assert {"sample", "celeba", "imagenet"} <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_composes_names_a_factory_with_an_evaluation_transform_and_loads_a_batch(name, tmp_path):
    overrides = [f"data={name}", f"data.resolution={RESOLUTION}", "data.eval_batch_size=2", "data.num_workers=0"]
    cfg = compose_config(overrides)
    factory = get_method(cfg.data.make_dataset._target_)
    assert callable(factory)
    transform = evaluation_transform(cfg.data)
    assert callable(transform)
    needs_files = "root" in cfg.data.make_dataset
    writer = getattr(fixtures, f"write_{name}", None)
    if needs_files and writer is None:
        pytest.skip(f"data={name} reads files and vqbench.data.fixtures has no write_{name}(root) to make some")
    if needs_files:
        cfg = compose_config([*overrides, f"data.root={writer(tmp_path / name)}"])
    datamodule = build_datamodule(cfg)
    batch = next(iter(datamodule.evaluation_dataloader("test")))
    assert batch.dtype == torch.uint8
    assert batch.shape[1:] == (cfg.data.channels, RESOLUTION, RESOLUTION)
    test_split = datamodule.dataset("test")
    if hasattr(test_split, "transform"):  # files preprocessed by a transform: the evaluation one, not a copy of it
        assert test_split.transform == transform


def test_imagenet_center_crop_recipe_evaluates_with_its_own_crop(tmp_path):
    """data.make_dataset.crop=center (the ImageNet-128 FSQ recipe) preprocesses its test split with Resize +
    CenterCrop, and so does the evaluation transform that the API and tokenize apply to outside images."""
    root = fixtures.write_imagenet(tmp_path / "imagenet")
    cfg = compose_config(["data=imagenet", f"data.root={root}", "data.make_dataset.crop=center"])
    assert build_datamodule(cfg).dataset("test").transform == evaluation_transform(cfg.data)
    assert type(evaluation_transform(cfg.data)).__name__ == "ResizeThenCenterCrop"
