"""``python -m vqbench.tokenize``: the token ids of a split in one memory-mapped array, resumable and sharded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from tests.test_config import compose_cfg
from vqbench import load_tokenizer
from vqbench.api import ImageTokenizer
from vqbench.build import build_datamodule, build_training_module
from vqbench.data import fixtures
from vqbench.data.module import to_model_range
from vqbench.errors import VqbenchError
from vqbench.tokenize import main
from vqbench.tokens import INDEX_FILE, METADATA_FILE, PROGRESS_DIR, TOKENS_FILE, TokenDataset, token_dtype

#: Narrow SimpleCNN + FSQ [5,5,5] (K = 125) on 16x16 images: 4x4 tokens.
TINY = [
    "model.hidden_channels=8",
    "model.latent_channels=16",
    "quantizer=fsq",
    "quantizer.levels=[5,5,5]",
    "codebook.size=125",
    "codebook.dim=4",
    "data.resolution=16",
]
SAMPLE = ["data.make_dataset.test_length=10", "data.make_dataset.train_length=10"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tokenizer whose larger pre-quantization map spreads the tokens over many codes."""
    path = tmp_path_factory.mktemp("tokenize") / "tok.ckpt"
    torch.manual_seed(0)
    module = build_training_module(compose_cfg([*TINY, *SAMPLE]), for_training=False)
    with torch.no_grad():
        module.tokenizer.pre_quant.weight.mul_(30)
    payload = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(payload)
    torch.save(payload, path)
    return path


def expected_tokens(checkpoint: Path, split: str) -> torch.Tensor:
    """What the Python API computes from the split's evaluation images."""
    tok = load_tokenizer(str(checkpoint))
    dataset = build_datamodule(tok.config).dataset(split)
    return tok.encode(to_model_range(torch.stack([dataset[i] for i in range(len(dataset))])))


def test_token_dtype_is_the_smallest_that_holds_k():
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    assert token_dtype(2**32 + 1) == np.int64


def test_export_of_the_sample_test_split_with_flips(checkpoint, tmp_path, capsys):
    out = tmp_path / "tokens"
    assert main([f"ckpt={checkpoint}", f"out={out}", "split=test", "flip=true", "chunk=4", "batch_size=3"]) == 0
    assert "10 test images x 2" in capsys.readouterr().out
    expected = expected_tokens(checkpoint, "test")
    assert expected.unique().numel() > 4  # several codes: a wrong or swapped row would show
    array = np.load(out / TOKENS_FILE, mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == (20, 4, 4)
    assert torch.equal(torch.from_numpy(array[:10].astype(np.int64)), expected)
    tok = load_tokenizer(str(checkpoint))
    dataset = build_datamodule(tok.config).dataset("test")
    flipped = tok.encode(to_model_range(torch.stack([dataset[i] for i in range(10)])).flip(-1))
    assert torch.equal(torch.from_numpy(array[10:].astype(np.int64)), flipped)
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["complete"] and metadata["codebook_size"] == 125 and metadata["token_grid"] == [4, 4]
    assert metadata["copies"] == ["original", "horizontal flip"] and metadata["checkpoint"] == str(checkpoint)
    assert metadata["config"]["quantizer"]["levels"] == [5, 5, 5] and metadata["split"] == "test"
    index = [json.loads(line) for line in (out / INDEX_FILE).read_text().splitlines()]
    assert len(index) == 20 and index[0] == {"row": 0, "image": "test/0", "split": "test", "flipped": False}
    assert index[11] == {"row": 11, "image": "test/1", "split": "test", "flipped": True}
    items = TokenDataset(out)
    assert len(items) == 20 and items.images[11] == "test/1" and items.flipped[11]
    assert items[3].dtype == torch.long and torch.equal(items[3], expected[3])


def test_files_are_indexed_by_path_and_the_train_split_gets_the_evaluation_crop(checkpoint, tmp_path):
    root = fixtures.write_imagenet(tmp_path / "imagenet")
    out = tmp_path / "tokens"
    data = ["data=imagenet", f"data.root={root}", "data.resolution=16", "data.num_workers=0"]
    assert main([f"ckpt={checkpoint}", f"out={out}", "split=train", *data]) == 0
    items = TokenDataset(out)
    assert len(items) == 6 and items.images[0] == "train/n00000000/n00000000_0.JPEG"
    tok = load_tokenizer(str(checkpoint))
    imagenet = ImageTokenizer(tok.tokenizer, compose_cfg([*TINY, *data]), tok.device)  # the export's data override
    for i in (0, 4):
        assert torch.equal(items[i], imagenet.encode(imagenet.preprocess(Image.open(root / items.images[i])))[0])


#: File names that break a tab-separated or line-based index, and one that is not valid UTF-8 (a Linux file name is
#: bytes; Python gives the undecodable byte as a lone surrogate, os.fsdecode(b"\xff") == "\udcff").
AWKWARD_NAMES = [
    "tab\there.png",
    "new\nline.png",
    'quote" and, comma.png',
    "ünïcödé 😀.png",
    os.fsdecode(b"bytes\xff.png"),
]


def test_the_index_round_trips_any_file_name(checkpoint, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i, name in enumerate(AWKWARD_NAMES):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(root / name, format="PNG")
    out = tmp_path / "tokens"
    data = ["data=folder", f"data.root={root}", "data.resolution=16", "data.num_workers=0"]
    holdout = "data.make_dataset.holdout_fraction=0.2"
    assert main([f"ckpt={checkpoint}", f"out={out}", "split=train", "flip=true", *data, holdout]) == 0
    lines = (out / INDEX_FILE).read_bytes().decode("ascii").splitlines()
    assert len(lines) == 8  # 4 train images x 2 copies: no name broke a line
    items = TokenDataset(out)
    assert len(set(items.images)) == 4 and set(items.images) < set(AWKWARD_NAMES)
    assert all((root / image).is_file() for image in items.images)  # each name is the file's own
    assert [json.loads(line)["split"] for line in lines] == ["train"] * 8


def test_exports_of_earlier_versions_with_a_tab_separated_index_still_read(checkpoint, tmp_path):
    out = tmp_path / "tokens"
    assert main([f"ckpt={checkpoint}", f"out={out}", "split=test", "chunk=4"]) == 0
    (out / INDEX_FILE).unlink()
    (out / "index.tsv").write_text("row\timage\tflipped\n" + "".join(f"{i}\ttest/{i}\t0\n" for i in range(10)))
    items = TokenDataset(out)
    assert items.images == [f"test/{i}" for i in range(10)] and not any(items.flipped)
    assert torch.equal(items[3], expected_tokens(checkpoint, "test")[3])


def test_an_interrupted_export_resumes_and_a_different_one_is_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "tokens"
    args = [f"ckpt={checkpoint}", f"out={out}", "split=test", "chunk=3"]
    assert main([*args, "shards=2", "shard=0"]) == 0  # chunks 0 and 2 of 4; the other process never ran
    assert "2 of 4 are done" in capsys.readouterr().out
    with pytest.raises(VqbenchError, match="is not finished"):
        TokenDataset(out)
    array = np.load(out / TOKENS_FILE, mmap_mode="r+")
    array[:] = 0  # what the unfinished rows look like, and lose the finished ones too...
    array.flush()
    (out / PROGRESS_DIR / "000000.json").unlink()  # ...of which only chunk 0 is not recorded as done
    assert main(args) == 0  # one process now: chunks 0, 1 and 3
    assert json.loads((out / METADATA_FILE).read_text())["complete"]
    expected = expected_tokens(checkpoint, "test")
    done = torch.from_numpy(np.load(out / TOKENS_FILE).astype(np.int64))
    assert torch.equal(done[:6], expected[:6]) and torch.equal(done[9:], expected[9:])  # chunks 0, 1 and 3
    assert (done[6:9] == 0).all() and (expected[6:9] != 0).any()  # chunk 2 was recorded as done: not repeated
    refused = main([f"ckpt={checkpoint}", f"out={out}", "split=test", "chunk=3", "flip=true"])
    assert refused == 2 and "holds another export (it differs in copies" in capsys.readouterr().err
    assert main([f"ckpt={checkpoint}", f"out={out}", "split=test", "bogus=1"]) == 2
    assert "unknown argument 'bogus=1'" in capsys.readouterr().err
    assert main([f"ckpt={checkpoint}", f"out={tmp_path / 'other'}", "split=test", "data.num_workers=-1"]) == 2
    assert "error: data.num_workers must be an integer >= 0" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main([f"ckpt={checkpoint}", f"out={tmp_path / 'a_file' / 'tokens'}", "split=test"]) == 2
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in capsys.readouterr().err
    assert main([f"ckpt={checkpoint}", f"out={out}", "shards=2", "shard=abc"]) == 2
    assert "shard=abc: expected an integer >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_share_an_export_without_repeats(checkpoint, tmp_path):
    """Two shards run at the same time, as two GPUs' processes would; together they equal one process."""
    out = tmp_path / "sharded"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["-m", "vqbench.tokenize", f"ckpt={checkpoint}", f"out={out}", "split=train", "chunk=2", "flip=true"]
    processes = [
        subprocess.Popen([sys.executable, *common, "shards=2", f"shard={s}"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
        for s in (0, 1)
    ]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read().decode()[-2000:]
    single = tmp_path / "single"
    assert main([f"ckpt={checkpoint}", f"out={single}", "split=train", "chunk=2", "flip=true"]) == 0
    shards = [json.loads(p.read_text())["shard"] for p in sorted((out / PROGRESS_DIR).glob("*.json"))]
    assert shards == [0, 1, 0, 1, 0]  # chunk c by shard c mod 2, each once
    assert np.array_equal(np.load(out / TOKENS_FILE), np.load(single / TOKENS_FILE))
    assert json.loads((out / METADATA_FILE).read_text())["complete"]
