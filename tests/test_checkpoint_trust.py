"""A checkpoint is data: a crafted config cannot make vqbench import a foreign module, call a foreign function or
evaluate a resolver, through any node and any entry point (docs/checkpoints.md).

Each crafted checkpoint is the format-5 fixture with one ``_target_`` (or other instantiation key) replaced by a
payload that would, if built, write a file (``pathlib.Path.write_text``) or import ``vqbench_sentinel``, a module
placed on the path that writes a file when it is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT
from vqbench import load_tokenizer
from vqbench.checkpoint import ALLOWED_TARGETS, check_targets, load_checkpoint
from vqbench.errors import CheckpointError, ConfigError
from vqbench.stored_config import storable_config

FIXTURE = ROOT / "tests" / "fixtures" / "checkpoints" / "format_5" / "last.ckpt"
SENTINEL = "vqbench_sentinel"

#: Every node of a stored config that vqbench builds with Hydra, and other places a crafted ``_target_`` could hide.
NODES = [
    "model.encoder",
    "model.decoder",
    "quantizer",
    "data",
    "data.make_dataset",
    "logger",
    "loss.discriminator",
    "metrics",
    "optimizer",
]


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A module on sys.path (and PYTHONPATH for subprocesses) that writes ``imported`` when imported; the file a
    write_text payload would create. Yields (folder, files that must never appear)."""
    folder = tmp_path / "sentinel"
    folder.mkdir()
    imported, written = tmp_path / "imported", tmp_path / "written.pth"
    (folder / f"{SENTINEL}.py").write_text(
        f"from pathlib import Path\nPath({str(imported)!r}).write_text('imported')\n"
        "def boom(*a, **k):\n    return 'import os'\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield folder, (imported, written)
    assert not imported.exists(), "the sentinel module was imported"
    assert not written.exists(), "a file was written by a checkpoint's config"
    assert SENTINEL not in sys.modules


def _write_text_payload(written: Path) -> dict:
    return {
        "_target_": "pathlib.Path.write_text",
        # the text comes from the sentinel module: built without the check, this imports it and writes the file
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(written)]}, {"_target_": f"{SENTINEL}.boom"}],
    }


def _craft(tmp_path: Path, node: str, payload: dict, name: str = "crafted.ckpt", **top) -> Path:
    checkpoint = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    config = OmegaConf.to_container(OmegaConf.create(checkpoint["vqbench_config"]), resolve=False)
    parent = config
    *path, last = node.split(".")
    for key in path:
        parent = parent.setdefault(key, {})
    if isinstance(parent.get(last), dict):
        parent[last] = {**parent[last], **payload}
    else:
        parent[last] = payload
    config |= top
    checkpoint["vqbench_config"] = OmegaConf.to_yaml(OmegaConf.create(config))
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("node", NODES)
def test_a_foreign_target_in_any_node_is_refused_before_anything_is_built(node, tmp_path, sentinel):
    _, (_, written) = sentinel
    crafted = _craft(tmp_path, node, _write_text_payload(written))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(str(crafted))
    message = str(refused.value)
    assert "\n" not in message
    assert f"{node}._target_='pathlib.Path.write_text'" in message and "docs/checkpoints.md" in message
    imported = _craft(tmp_path, node, {"_target_": f"{SENTINEL}.boom"}, name="sentinel.ckpt")
    with pytest.raises(CheckpointError, match=f"{node}._target_='{SENTINEL}.boom'"):
        load_tokenizer(str(imported))


@pytest.mark.parametrize(
    "node, payload, named",
    [
        # nested in the arguments of an allowed class (a list element and a keyword argument)
        ("data.make_dataset", {"_args_": [{"_target_": f"{SENTINEL}.boom"}]}, "data.make_dataset._args_[0]._target_"),
        ("data.make_dataset", {"extra": {"_target_": f"{SENTINEL}.boom"}}, "data.make_dataset.extra._target_"),
        ("quantizer", {"_partial_": "yes"}, "quantizer._partial_='yes'"),
        ("quantizer", {"_recursive_": {"_target_": f"{SENTINEL}.boom"}}, "quantizer._recursive_"),
        ("quantizer", {"_convert_": [f"{SENTINEL}.boom"]}, "quantizer._convert_"),
        ("model.encoder", {"_target_": ["vqbench.models.SimpleCNNEncoder"]}, "model.encoder._target_"),
    ],
)
def test_nested_and_special_instantiation_keys_are_checked(node, payload, named, tmp_path, sentinel):
    crafted = _craft(tmp_path, node, payload)
    with pytest.raises(CheckpointError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_checkpoint(str(crafted))


@pytest.mark.parametrize(
    "value", ["${oc.env:HOME}", "${sentinel_resolver:x}", "${hydra:runtime.cwd}", "a ${oc.decode:'1'} b", "${${x}}"]
)
def test_a_resolver_in_a_stored_config_is_refused_not_evaluated(value, tmp_path, sentinel):
    calls = []
    OmegaConf.register_new_resolver("sentinel_resolver", lambda x: calls.append(x) or x, replace=True)
    try:
        crafted = _craft(tmp_path, "data", {"root": value})
        with pytest.raises(CheckpointError, match="resolver") as refused:
            load_checkpoint(str(crafted))
        assert "data.root=" in str(refused.value) and calls == []
    finally:
        OmegaConf.clear_resolver("sentinel_resolver")


def test_references_between_keys_still_load(tmp_path):
    payload = load_checkpoint(str(FIXTURE))  # ${data.channels}, ${model.hidden_channels}, ...
    assert "${data.channels}" in payload["vqbench_config"]


def test_a_training_stores_what_its_resolvers_gave_and_keeps_references(tmp_path):
    """A live config may use resolvers (sweeps/llvq.yaml picks data.root with ${oc.select:...}); its checkpoint
    stores the resolved value, so it loads back, while references between keys stay references."""
    live = OmegaConf.create(
        yaml.safe_load(load_checkpoint(str(FIXTURE))["vqbench_config"])
        | {"data_roots": {"sample": "/data/here"}, "choice": "sample"}
    )
    live.data.root = "${oc.select:'data_roots.${choice}',null}"
    live.data.tags = ["${oc.decode:'7'}", "${data.channels}"]
    stored = yaml.safe_load(storable_config(live))
    assert stored["data"]["root"] == "/data/here"
    assert stored["data"]["tags"] == [7, "${data.channels}"]
    assert stored["model"]["encoder"]["in_channels"] == "${data.channels}"
    payload = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    payload["vqbench_config"] = storable_config(live)
    torch.save(payload, tmp_path / "resolved.ckpt")
    loaded = load_checkpoint(str(tmp_path / "resolved.ckpt"))
    assert OmegaConf.create(loaded["vqbench_config"]).data.root == "/data/here"


def test_a_checkpoint_cannot_trust_itself(tmp_path, sentinel):
    crafted = _craft(tmp_path, "quantizer", {"_target_": f"{SENTINEL}.boom"}, trusted_modules=[SENTINEL, "pathlib"])
    with pytest.raises(CheckpointError, match=f"quantizer._target_='{SENTINEL}.boom'"):
        load_checkpoint(str(crafted))


USER_QUANTIZER = """
from vqbench.quantizers import VectorQuantizer

class MyQuantizer(VectorQuantizer):
    pass
"""


def test_the_user_opts_in_to_their_own_class_by_module_prefix(tmp_path, monkeypatch):
    package = tmp_path / "user" / "mylab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "quantizers.py").write_text(textwrap.dedent(USER_QUANTIZER))
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    crafted = _craft(tmp_path, "quantizer", {"_target_": "mylab.quantizers.MyQuantizer"})
    with pytest.raises(CheckpointError, match=r"trusted_modules=\[mylab.quantizers\]"):
        load_checkpoint(str(crafted))
    with pytest.raises(CheckpointError, match="mylab.quantizers.MyQuantizer"):
        load_checkpoint(str(crafted), trusted_modules=["mylabs"])  # a prefix is a whole module name
    tokenizer = load_tokenizer(str(crafted), trusted_modules=["mylab"])
    assert type(tokenizer.tokenizer.quantizer).__name__ == "MyQuantizer"


def test_a_training_config_takes_the_same_check_and_opt_in():
    from tests.test_config import compose_cfg

    config = OmegaConf.to_container(compose_cfg(["quantizer=ema", "logger=csv", "data=folder"]), resolve=False)
    check_targets(config)  # every class conf/ names is allowed
    config["quantizer"]["_target_"] = "mylab.quantizers.MyQuantizer"
    with pytest.raises(ConfigError, match="quantizer._target_='mylab.quantizers.MyQuantizer' is refused"):
        check_targets(config)
    check_targets(config, ["mylab"])


def _conf_targets() -> set[str]:
    """Every _target_ in conf/ outside Hydra's own settings (conf/hydra/, the hydra: node)."""
    targets = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_":
                    targets.add(value)
                elif key != "hydra":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (ROOT / "conf").rglob("*.yaml"):
        if "hydra" not in path.relative_to(ROOT / "conf").parts:
            walk(yaml.safe_load(path.read_text()))
    return targets


def test_the_allow_list_is_exactly_what_conf_names():
    import importlib

    assert _conf_targets() == set(ALLOWED_TARGETS)
    core = {
        "vqbench.quantizers.VectorQuantizer",
        "vqbench.models.SimpleCNNEncoder",
        "vqbench.data.module.ImageDataModule",
    }
    assert core <= ALLOWED_TARGETS
    # conf/ may name only vqbench's own callables and Lightning's loggers: anything else there would be trusted
    assert all(t.startswith(("vqbench.", "lightning.pytorch.loggers.")) for t in ALLOWED_TARGETS)
    for target in ALLOWED_TARGETS:
        module, name = target.rsplit(".", 1)
        if not module.startswith("lightning.pytorch.loggers"):
            assert callable(getattr(importlib.import_module(module), name))


def test_tokenize_refuses_a_crafted_checkpoint(tmp_path, sentinel, capsys):
    from vqbench.tokenize import main

    _, (_, written) = sentinel
    crafted = _craft(tmp_path, "data.make_dataset", _write_text_payload(written))
    out = tmp_path / "tokens"
    assert main([f"ckpt={crafted}", f"out={out}", "split=test"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt=")
    assert "data.make_dataset._target_='pathlib.Path.write_text'" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_run_py_refuses_a_crafted_checkpoint_in_one_line(command, tmp_path, sentinel):
    folder, (_, written) = sentinel
    crafted = _craft(tmp_path, "model.encoder", _write_text_payload(written))
    args = ["+eval=true"] if command == "eval" else ["trainer.max_steps=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT / "src")]), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, f"ckpt={crafted}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "model.encoder._target_='pathlib.Path.write_text'" in errors[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_group_choice_replaces_the_checkpoints_whole_data_node(tmp_path):
    from tests.test_config import compose_cfg
    from vqbench.checkpoint import evaluation_config

    crafted = _craft(tmp_path, "data", {"root": "/somewhere/else", "cache": True, "cache_dir": "/somewhere/cache"})
    trained = OmegaConf.create(load_checkpoint(str(crafted))["vqbench_config"])
    assert trained.data.cache_dir == "/somewhere/cache"
    overrides = ["+eval=true", f"ckpt={crafted}", "data=sample", "data.root=/mine"]
    merged = evaluation_config(trained, compose_cfg(overrides), overrides)
    assert (merged.data.root, merged.data.cache, merged.data.cache_dir) == ("/mine", False, None)


def test_evaluation_and_tokenize_take_trusted_modules_from_their_command_line(tmp_path):
    from tests.test_config import compose_cfg
    from vqbench.checkpoint import evaluation_config
    from vqbench.tokenize import parse_arguments

    trained = OmegaConf.create(load_checkpoint(str(FIXTURE))["vqbench_config"])
    trained.trusted_modules = ["pathlib"]  # as a checkpoint could hold it: never taken
    overrides = ["+eval=true", "ckpt=x.ckpt", "trusted_modules=[mylab]"]
    assert list(evaluation_config(trained, compose_cfg(overrides), overrides).trusted_modules) == ["mylab"]
    assert list(evaluation_config(trained, compose_cfg(overrides[:2]), overrides[:2]).trusted_modules) == []
    args, _ = parse_arguments(["ckpt=x.ckpt", f"out={tmp_path}", "trusted_modules=[mylab,other.pkg]"])
    assert args["trusted_modules"] == ["mylab", "other.pkg"]
