"""vqbench checkpoints: reading, checking, upgrading and rebuilding them, for every command that takes one.

Evaluation (``+eval=true ckpt=...``), resuming a training (``ckpt=...``), the Python API (``load_tokenizer``),
``python -m vqbench.tokenize`` and ``python -m vqbench.convert`` (which writes them) all go through this module.
docs/checkpoints.md describes the format and the threat model.

A checkpoint is data: ``torch.load(weights_only=True)`` reads only tensors and plain containers, and the config
stored in it (``vqbench_config``, YAML text) is checked before anything is built from it:

- every ``_target_`` in it, on every nested node (``_partial_``, ``_args_`` and lists included), must name one of
  ``ALLOWED_TARGETS`` (the classes and functions conf/ names) or lie under a module prefix the *user* trusts with
  ``trusted_modules=[...]`` on the command line (``load_tokenizer(..., trusted_modules=...)`` in Python); a
  checkpoint's own ``trusted_modules`` is ignored, so a checkpoint cannot trust itself;
- Hydra's other instantiation keys (``_partial_``, ``_recursive_``, ``_convert_``, ``_args_``) must hold plain values;
- interpolations may only reference other keys of the config (``${data.channels}``): a resolver (``${oc.env:HOME}``,
  ``${hydra:...}``, any registered one) is refused, never evaluated.

Checkpoint formats (``vqbench_format``; the earlier ones carried no number and are recognised by their keys):

1. written by main up to 07ec3bc: no ``optimizer.grad_clip``; SimpleCNN residual blocks compute x + f(x).
2. up to 4d5b28f: ``optimizer.grad_clip``; SimpleCNN blocks still x + f(x) (no ``model.residual_skip``).
3. up to c2a0552: ``model.residual_skip``; no ``data.pixel_mean`` / ``pixel_std`` (pixels in [-1, 1]).
4. up to 0d82b99: ``data.pixel_mean`` / ``pixel_std``; no data-loader position (``vqbench_overrides``).
5. up to 7b1adb1: exact resume (the loader's position, ``vqbench_overrides``), no ``vqbench_format``.
6. ``vqbench_format: 6``: this version.

An older format is upgraded on load, with a one-line notice: a missing key takes the value that reproduces what the
version that wrote it computed (``LEGACY_VALUES``, ``_upgrade``), e.g. ``model.residual_skip=identity`` before
format 3. Where that cannot be known (a network whose architecture changed since), the checkpoint is refused with
one line naming its format. Formats 1-4 hold no loader position and were trained by other training code: they load
for evaluation, ``load_tokenizer`` and ``tokenize``, and resuming them is refused, naming the format.
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vqbench.errors import CheckpointError, ConfigError
from vqbench.stored_config import CHECKPOINT_FORMAT, calls_resolver, config_leaves

log = logging.getLogger("vqbench")

#: The earliest format that holds the data loader's position, so that a training can continue from it exactly.
RESUMABLE_FROM = 5
#: The last commit of main that wrote each earlier format (docs/checkpoints.md; tests/fixtures/checkpoints/).
FORMAT_COMMITS = {1: "07ec3bc", 2: "4d5b28f", 3: "c2a0552", 4: "0d82b99", 5: "7b1adb1"}

#: The repository's config groups: what a user installed, so the callables its files name are trusted.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def conf_targets(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every ``_target_`` that a YAML file of ``conf_dir`` names, outside Hydra's own settings (``conf/hydra/`` and
    the ``hydra:`` node): vqbench's data modules, networks and quantizers, and Lightning's loggers. Read as plain YAML
    (``yaml.safe_load``), so a new quantizer or dataset is trusted by adding its YAML file, with no list to edit."""
    import yaml

    targets: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str):
                    targets.add(value)
                elif key != "hydra":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(conf_dir.rglob("*.yaml")):
        if "hydra" not in path.relative_to(conf_dir).parts:
            walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return frozenset(targets)


#: Everything a stored config may build (``_target_``): the classes and functions conf/ names.
ALLOWED_TARGETS = conf_targets()
#: The nodes every stored config has (written by every format); the others are filled in by ``upgrade``.
REQUIRED_NODES = ("data", "model", "quantizer", "codebook", "loss", "trainer")
#: The config key that names the module prefixes a user trusts beyond ALLOWED_TARGETS (their own classes).
TRUSTED_KEY = "trusted_modules"
#: Hydra's instantiation keys besides ``_target_``, and the plain values each may hold.
_HYDRA_KEYS = {
    "_partial_": (bool,),
    "_recursive_": (bool,),
    "_convert_": (str,),
    "_args_": (list,),
}


#: Keys added since format 1 that do not change what an earlier checkpoint computes: their value here is the
#: behaviour earlier versions had (no clipping, a constant lr, no weight EMA, the standard EMA codebook rule, the
#: plain fp32 path) or an evaluation/bookkeeping setting with today's default (conf/config.yaml).
LEGACY_VALUES: dict[str, Any] = {
    "optimizer.name": "adam",
    "optimizer.grad_clip": None,
    "optimizer.schedule": "constant",
    "optimizer.warmup_fraction": 0.0,
    "optimizer.schedule_steps": None,
    "optimizer.gamma": 1.0,
    "performance.fused_adam": False,
    "codebook.ema_update_rule": "standard",
    "codebook.init": "uniform",
    "codebook.kmeans_iterations": 10,
    "codebook.kmeans_batches": 1,
    "performance.compile": False,
    "performance.channels_last": False,
    "performance.tf32": False,
    "ema_decay": None,
    "metrics.grid_images": 8,
    "metrics.use_ema": False,
    "metrics.usage_window": None,
    "metrics.ssim_window": "uniform",
    "metrics.effective_size_splits": ["test"],
    "metrics.lpips": True,
    "metrics.rfid": True,
    "metrics.inception_weights": None,
    "metrics.lpips_pretrained": True,
    "metrics.save_reconstructions": False,
    "metrics.loss_terms": False,
    "metrics.precision": None,
    "checkpoint.every_n_steps": 1000,
    "evaluate_after_training": False,
    "skip_finished": True,
}


# --- reading ------------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | None, purpose: str = "evaluate", trusted_modules: Iterable[str] = ()) -> dict:
    """Reads a vqbench checkpoint tensors-only, checks its config (``check_stored_config``) and upgrades it to this
    version's format (``upgrade``). ``trusted_modules``: module prefixes the caller trusts beyond ALLOWED_TARGETS,
    from the user's own command line or call, never from the checkpoint.

    Returns the checkpoint with ``vqbench_config`` the checked, upgraded config (YAML text) and ``vqbench_format``
    the format it was written in."""
    if path is None:
        raise CheckpointError("+eval=true needs a checkpoint: add ckpt=path/to/last.ckpt")
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(
            f"ckpt={path} does not exist or is not a file; give the path of a checkpoints/last.ckpt written by "
            f"`python run.py` to {purpose}"
        )
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        skip = ("Please file an issue", "Check the documentation")
        detail = next((line for line in lines[1:] if not line.startswith(skip)), lines[0] if lines else "")
        if "GLOBAL" in detail:  # the pickle names a function or class to call: code, which weights_only refuses
            raise CheckpointError(
                f"ckpt={path} is not a tensors-only checkpoint ({detail}); vqbench never runs code from a checkpoint. "
                f"Give a checkpoints/last.ckpt written by `python run.py` to {purpose}"
            ) from None
        raise CheckpointError(
            f"ckpt={path} cannot be read as a checkpoint ({detail}); it is truncated or not a checkpoint. Give a "
            f"complete checkpoints/last.ckpt written by `python run.py` to {purpose}"
        ) from None
    except Exception as error:  # torch raises KeyError, EOFError, RuntimeError, ... for truncated or foreign files
        detail = str(error).split(". ")[0] or "the file ends early"
        raise CheckpointError(
            f"ckpt={path} cannot be read as a checkpoint ({type(error).__name__}: {detail}); it is truncated or not a "
            f"checkpoint. Give a complete checkpoints/last.ckpt written by `python run.py` to {purpose}"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or not payload.get("vqbench_config"):
        raise CheckpointError(
            f"ckpt={path} is not a vqbench checkpoint (no state_dict or embedded config); give a "
            f"checkpoints/last.ckpt written by `python run.py` to {purpose}"
        )
    config = stored_config(payload, str(path), trusted_modules)
    version = checkpoint_format(payload, config, str(path))
    config = upgrade(config, version, str(path))
    if version != CHECKPOINT_FORMAT:
        print(
            f"note: ckpt={path} was written by an earlier vqbench (checkpoint format {version}, main up to "
            f"{FORMAT_COMMITS[version]}); read as format {CHECKPOINT_FORMAT} with the values that version computed "
            "with (docs/checkpoints.md)",
            file=sys.stderr,
        )
    payload["vqbench_config"] = OmegaConf.to_yaml(config, resolve=False)
    payload["vqbench_format"] = version
    return payload


def stored_config(payload: dict, ckpt: str, trusted_modules: Iterable[str] = ()) -> DictConfig:
    """The checkpoint's config, checked (``check_stored_config``); its own ``trusted_modules`` is dropped."""
    text = payload["vqbench_config"]
    if not isinstance(text, (str, dict)):
        raise CheckpointError(f"ckpt={ckpt}: its vqbench_config is {type(text).__name__}, not YAML text")
    try:
        config = OmegaConf.create(text)
    except (OmegaConfBaseException, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"ckpt={ckpt}: its vqbench_config cannot be read as a config ({first})") from None
    if not isinstance(config, DictConfig):
        raise CheckpointError(f"ckpt={ckpt}: its vqbench_config is not a mapping of config keys")
    container = OmegaConf.to_container(config, resolve=False)
    container.pop(TRUSTED_KEY, None)  # a checkpoint cannot trust itself
    check_stored_config(container, ckpt, trusted_modules)
    missing = [node for node in REQUIRED_NODES if not isinstance(container.get(node), dict)]
    if missing:
        raise CheckpointError(
            f"ckpt={ckpt}: its config has no {', '.join(missing)} node; it is not the config of a vqbench run. Give a "
            "checkpoints/last.ckpt written by `python run.py`"
        )
    return OmegaConf.create(container)


def check_stored_config(container: Any, ckpt: str, trusted_modules: Iterable[str] = ()) -> None:
    """Refuses a stored config (a plain container, before anything is built or imported) that names a callable
    outside ALLOWED_TARGETS and ``trusted_modules``, holds a non-plain Hydra key, or uses a resolver."""
    for key, value in config_leaves(container):
        if calls_resolver(value):
            raise CheckpointError(
                f"ckpt={ckpt}: {key}={value!r} calls an interpolation resolver; a checkpoint's config holds values "
                "and references to its own keys only, so it is refused (docs/checkpoints.md)"
            )
    try:
        check_targets(container, trusted_modules)
    except ConfigError as error:
        raise CheckpointError(f"ckpt={ckpt}: {error}") from None


def check_targets(container: Any, trusted_modules: Iterable[str] = ()) -> None:
    """Raises ConfigError naming the key and the value of the first ``_target_`` (or other Hydra instantiation key)
    that is not allowed: every nested dict and list is walked, before anything is imported. Applies to a stored
    config and to the config of a training alike (docs/checkpoints.md)."""
    trusted = tuple(_prefixes(trusted_modules))
    for key, value in config_leaves(container):
        name = key.rsplit(".", 1)[-1]
        if name == "_target_":
            if not isinstance(value, str) or not _allowed(value, trusted):
                raise ConfigError(
                    f"{key}={value!r} is refused: a config may only build vqbench's own classes and Lightning's "
                    f"loggers (docs/checkpoints.md). If it is your own class and you trust its source, add "
                    f"{TRUSTED_KEY}=[{_module_of(value)}] to the command line"
                )
        elif name in _HYDRA_KEYS and not isinstance(value, _HYDRA_KEYS[name]):
            raise ConfigError(f"{key}={value!r} is refused: {name} must be a plain {_HYDRA_KEYS[name][0].__name__}")


def trusted_prefixes(cfg: DictConfig | None) -> list[str]:
    """The ``trusted_modules`` of a live config (the user's command line), as a list of module prefixes."""
    value = None if cfg is None else cfg.get(TRUSTED_KEY)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{TRUSTED_KEY} must be a list of module names (e.g. [mylab.quantizers]), got {value!r}")
    return values


def _prefixes(trusted_modules: Iterable[str]) -> list[str]:
    if isinstance(trusted_modules, str):
        trusted_modules = [trusted_modules]
    return [str(prefix).strip().rstrip(".") for prefix in trusted_modules if str(prefix).strip()]


def _allowed(target: str, trusted: Sequence[str]) -> bool:
    return target in ALLOWED_TARGETS or any(target == p or target.startswith(p + ".") for p in trusted)


def _module_of(target: Any) -> str:
    return str(target).rsplit(".", 1)[0] if "." in str(target) else str(target)


# --- formats and upgrades -----------------------------------------------------------------------------------------


def checkpoint_format(payload: dict, config: DictConfig, ckpt: str) -> int:
    """The format a checkpoint was written in: its ``vqbench_format``, or for the earlier, unnumbered ones, the
    keys that tell them apart (see the module docstring)."""
    if "vqbench_format" in payload:
        version = payload["vqbench_format"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"ckpt={ckpt}: vqbench_format={version!r} is not a checkpoint format number")
        if version > CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"ckpt={ckpt} was written by a newer vqbench (checkpoint format {version}); this version reads "
                f"formats 1 to {CHECKPOINT_FORMAT}. Update vqbench (git pull) to read it"
            )
        return version
    has_pixel_space = OmegaConf.select(config, "data.pixel_mean") is not None
    if "vqbench_overrides" in payload or ("converted_from" in payload and has_pixel_space):
        return 5  # a conversion holds no training state: it is written by a version of format 5 or 4 alike
    if has_pixel_space:
        return 4
    if OmegaConf.select(config, "model.residual_skip") is not None:
        return 3
    if OmegaConf.select(config, "optimizer.grad_clip", default="absent") != "absent":
        return 2
    return 1


def upgrade(config: DictConfig, version: int, ckpt: str) -> DictConfig:
    """The config of a format-``version`` checkpoint in this version's keys, with the values that reproduce what
    that version computed; refuses (naming the format) what cannot be rebuilt."""
    config = config.copy()
    if version == CHECKPOINT_FORMAT:  # only keys removed by hand can be missing: fill them like an old format's
        return _fill_legacy_values(config)
    _refuse_changed_architectures(config, version, ckpt)
    if version <= 2 and _targets(config, "model.encoder", "SimpleCNNEncoder"):
        # Up to format 2, SimpleCNN's residual blocks computed x + f(x); relu(x) + f(x) is today's default.
        OmegaConf.update(config, "model.residual_skip", "identity", force_add=True)
        for part in ("encoder", "decoder"):
            OmegaConf.update(config, f"model.{part}.residual_skip", "${model.residual_skip}", force_add=True)
    if version <= 2 and _targets(config, "quantizer", "EMAVectorQuantizer"):
        # Up to format 2 the EMA counts started at 1 (they are buffers of the checkpoint; this matters for nothing
        # but a new training from the config).
        OmegaConf.update(config, "quantizer.initial_count", 1.0, force_add=True)
    if version <= 5:
        # Up to format 5 the speed switches were true, false or "cuda" (on for CUDA trainings only), and fused Adam
        # was optimizer.fused; today they are the booleans of the performance group. They change the arithmetic's
        # rounding only, and evaluation runs the plain path whatever a training chose.
        fused = OmegaConf.select(config, "optimizer.fused", default=False)
        if "fused" in config.get("optimizer", {}):
            del config.optimizer["fused"]
        OmegaConf.update(config, "performance.fused_adam", fused is True, force_add=True)
        for switch in ("compile", "channels_last", "tf32"):
            value = OmegaConf.select(config, f"performance.{switch}", default=False)
            OmegaConf.update(config, f"performance.{switch}", value is True, force_add=True)
    if version <= 3:
        # The pixel space before data.pixel_mean / pixel_std existed: x / 255 * 2 - 1, i.e. mean 0.5, std 0.5.
        for key in ("pixel_mean", "pixel_std"):
            if OmegaConf.select(config, f"data.{key}") is None:
                OmegaConf.update(config, f"data.{key}", 0.5, force_add=True)
    return _fill_legacy_values(config)


#: Quantizer keys added after format 5 whose value in the quantizer's conf/quantizer/ file is the behaviour that
#: quantizer had before them (a switch that is off, the initialisation it always had): a checkpoint written before
#: gets them from that file, where the file has them.
LATER_QUANTIZER_KEYS = (
    "rotation_trick",
    "init",
    "kmeans_iterations",
    "kmeans_batches",
    "dead_code_threshold",
    "usage_decay",
    "distributed_update",
)


def _quantizer_file(target: str) -> dict:
    """The plain YAML of the conf/quantizer/ file that builds ``target`` (the first one, e.g. vq.yaml), or {}."""
    import yaml

    for path in sorted((CONF_DIR / "quantizer").glob("*.yaml")):
        node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if node.get("_target_") == target:
            return node
    return {}


def _fill_legacy_values(config: DictConfig) -> DictConfig:
    for key, value in LEGACY_VALUES.items():
        if OmegaConf.select(config, key, default="absent") == "absent":
            OmegaConf.update(config, key, value, force_add=True)
    adversarial = OmegaConf.select(config, "loss.adversarial")
    if adversarial is not None and "recompute_reconstruction" not in adversarial:
        adversarial.recompute_reconstruction = False  # added with the 07352b4 recipes; before, never recomputed
    if "quantizer" in config:
        defaults = _quantizer_file(str(config.quantizer.get("_target_", "")))
        for key in LATER_QUANTIZER_KEYS:
            if key in defaults and key not in config.quantizer:
                config.quantizer[key] = defaults[key]
    if OmegaConf.select(config, "seed") is None:
        config.seed = 0
    return config


def _targets(config: DictConfig, node: str, class_name: str) -> bool:
    return str(OmegaConf.select(config, f"{node}._target_", default="")).endswith("." + class_name)


def _refuse_changed_architectures(config: DictConfig, version: int, ckpt: str) -> None:
    """Networks rebuilt since that version with the same weight names: rebuilding them today would compute something
    else, and what they computed is not kept, so such a checkpoint is refused."""
    changed = []
    if _targets(config, "model.encoder", "LatticeCNNEncoder") and "code_dim" not in config.model.encoder:
        changed.append("lattice_cnn (its encoder now ends in codebook.dim, since 00ec969)")
    if _targets(config, "model.encoder", "VQGANEncoder") and "norm_groups" not in config.model:
        changed.append("vqgan (its normalisation and attention changed in c2a0552)")
    if _targets(config, "model.decoder", "FSQCNNDecoder") and "in_channels" not in config.model.decoder:
        changed.append("fsq_cnn (its decoder reads the codes directly since 2fee601)")
    if changed:
        raise CheckpointError(
            f"ckpt={ckpt} was written by an earlier vqbench (checkpoint format {version}, main up to "
            f"{FORMAT_COMMITS.get(version, '?')}) whose model {changed[0]} cannot be rebuilt as it computed; "
            f"evaluate it with the vqbench of commit {FORMAT_COMMITS.get(version, '?')}"
        )


def check_resumable_format(payload: dict, ckpt: str) -> None:
    """Refuses to resume a checkpoint of a format without the data loader's position (before RESUMABLE_FROM)."""
    version = payload.get("vqbench_format", CHECKPOINT_FORMAT)
    if version < RESUMABLE_FROM:
        raise CheckpointError(
            f"ckpt={ckpt} was written by an earlier vqbench (checkpoint format {version}, main up to "
            f"{FORMAT_COMMITS[version]}), which kept no data-loader position and trained with other code; it cannot "
            "be resumed exactly. Evaluate or tokenize it, or start a new run without ckpt="
        )


# --- what a command line may change in a stored config -------------------------------------------------------

#: Config nodes an evaluation may take from the command line; everything else comes from the checkpoint.
EVAL_OVERRIDABLE = ("data", "metrics", "trainer", "seed")
#: Nodes that define the trained network: overriding them at evaluation time cannot match the weights.
EVAL_FROZEN = ("model", "quantizer", "codebook", "data.pixel_mean", "data.pixel_std")
#: The trainer.* keys an evaluation (``trainer.test``) uses. The others (max_steps, val_check_interval, ...) only
#: shape a training: overriding them at evaluation time is refused instead of silently ignored.
EVAL_TRAINER_KEYS = (
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "deterministic",
    "benchmark",
    "enable_progress_bar",
    "enable_model_summary",
)
#: Command-line keys that say how to run the evaluation, not what to evaluate.
EVAL_RUN_KEYS = ("eval", "ckpt", "hydra", TRUSTED_KEY)


def _touches(override: str, node: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == node or key.startswith(node + ".")


def _check_evaluation_override(override: str) -> None:
    """Refuses a command-line override that evaluation could not honour, naming what it accepts instead."""
    key = override.lstrip("+~").split("=", 1)[0]
    for node in EVAL_FROZEN:
        if _touches(override, node):
            raise ConfigError(f"'{override}': the {node} is fixed by the checkpoint; evaluate without overriding it")
    if _touches(override, "trainer") and key != "trainer" and key.split(".", 1)[1] not in EVAL_TRAINER_KEYS:
        raise ConfigError(
            f"'{override}' does not apply to evaluation; of trainer.*, evaluation takes "
            + ", ".join(f"trainer.{k}" for k in EVAL_TRAINER_KEYS)
        )
    allowed = EVAL_OVERRIDABLE + EVAL_RUN_KEYS
    if not any(key == node or key.startswith((node + ".", node + "/")) for node in allowed):
        raise ConfigError(
            f"'{override}' does not apply to evaluation, which takes data.*, metrics.*, trainer.* and seed "
            "overrides (training settings come from the checkpoint)"
        )


def evaluation_config(trained: DictConfig, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with the command line's changes to the nodes in EVAL_OVERRIDABLE.

    A group choice (``data=celeba``) replaces the whole node with the command line's; a key (``data.root=PATH``)
    changes only that key of the trained node, so evaluating on another copy of the training data keeps its
    preprocessing.
    """
    merged = trained.copy()
    for override in overrides:
        _check_evaluation_override(override)
    for node in EVAL_OVERRIDABLE:
        keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides if _touches(o, node)]
        if node in keys:
            merged[node] = cfg[node]
        for key in keys:
            if key != node and not key.startswith(("hydra.", "eval")):
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    for key in ("pixel_mean", "pixel_std"):  # the network's pixel space, also when data=... replaced the whole node
        value = OmegaConf.select(trained, f"data.{key}")
        if value is not None:
            merged.data[key] = value
    merged.ckpt = cfg.ckpt
    merged[TRUSTED_KEY] = trusted_prefixes(cfg)  # the command line's; a checkpoint's own is dropped on load
    return merged


# --- rebuilding ---------------------------------------------------------------------------------------------------


def load_tokenizer_weights(module, payload: dict, ckpt: str, use_ema: bool) -> None:
    """Loads the tokenizer's weights (or their EMA, ``metrics.use_ema=true``) from a checkpoint's state dict."""
    prefix = "ema.module." if use_ema else "tokenizer."
    weights = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    if use_ema and not weights:
        raise CheckpointError(
            f"ckpt={ckpt} holds no weight EMA; it was trained without ema_decay. Evaluate without metrics.use_ema=true"
        )
    try:
        module.tokenizer.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"ckpt={ckpt} does not match the model in its own config: {error}") from None


def evaluation_module(config: DictConfig, payload: dict, ckpt: str, use_ema: bool):
    """The evaluation-mode TokenizerModule of ``config`` (a checked checkpoint config, or it with a command line's
    data/metrics changes) with the checkpoint's weights."""
    from vqbench.build import build_training_module

    module = build_training_module(config, for_training=False)
    load_tokenizer_weights(module, payload, ckpt, use_ema=use_ema)
    return module
