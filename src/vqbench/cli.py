"""What ``run.py`` does with a composed config: train (default) or evaluate (``+eval=true ckpt=PATH``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from vqbench.build import build_datamodule, build_evaluation_metrics, build_training_module, check_config
from vqbench.errors import CheckpointError, ConfigError, VqbenchError
from vqbench.results import METRICS_FILE, format_table, read_metrics, write_metrics
from vqbench.training.callbacks import (
    CodeUsageHistogram,
    ReconstructionGrid,
    SaveReconstructions,
    StopOnNonFiniteLoss,
)
from vqbench.training.module import TokenizerModule
from vqbench.training.performance import set_tf32

log = logging.getLogger("vqbench")

#: Config nodes an evaluation may take from the command line; everything else comes from the checkpoint.
EVAL_OVERRIDABLE = ("data", "metrics", "trainer", "seed")
#: Nodes that define the trained network: overriding them at evaluation time cannot match the weights.
EVAL_FROZEN = ("model", "quantizer", "codebook")


def run(cfg: DictConfig) -> dict[str, float]:
    """Entry point behind run.py. User errors end the process with one line naming the problem and the fix."""
    try:
        if cfg.get("eval", False):
            return evaluate(cfg)
        return train(cfg)
    except VqbenchError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


def _choices() -> dict[str, str]:
    """The config group options this job composed (data, quantizer, experiment, ...), for reports to match rows."""
    choices = HydraConfig.get().runtime.choices
    return {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def _trainer(**kwargs) -> L.Trainer:
    """lightning.Trainer, with its complaints about trainer.* values turned into a one-line ConfigError."""
    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise ConfigError(f"trainer: {error}") from None


def _plain(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _finished_results(cfg: DictConfig, out: Path) -> dict | None:
    """With ``skip_finished=true``: the metrics of a job this directory already finished, or None to run it."""
    path = out / METRICS_FILE
    if not cfg.get("skip_finished", False) or not path.is_file():
        return None
    record = read_metrics(path)
    if record.get("overrides") != _task_overrides():
        raise ConfigError(
            f"{out} holds the finished results of another job (overrides {record.get('overrides')}); they are kept. "
            "Give this sweep its own directory with hydra.sweep.dir=..."
        )
    return record


def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    out = _output_dir()
    finished = _finished_results(cfg, out)
    if finished is not None:
        log.info("skipping %s: it already finished (%s); delete that file to run it again", out, METRICS_FILE)
        print(f"skipped (already finished): {out}")
        return finished["metrics"]
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    set_tf32(cfg.performance.tf32)
    datamodule = build_datamodule(cfg)
    module = build_training_module(cfg)
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0)
    trainer = _trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=out,
        logger=TensorBoardLogger(save_dir=out, name="tensorboard", version="", default_hp_metric=False),
        callbacks=[
            checkpoints,
            ReconstructionGrid(cfg.metrics.grid_images),
            CodeUsageHistogram(),
            StopOnNonFiniteLoss(),
        ],
    )
    checkpoint = out / "checkpoints" / "last.ckpt"
    resume = cfg.ckpt
    if resume is not None and not Path(resume).is_file():
        raise CheckpointError(f"ckpt={resume} does not exist; give the path of a .ckpt file to resume from")
    if resume is None and cfg.get("skip_finished", False) and checkpoint.is_file():
        resume = str(checkpoint)  # an interrupted sweep job continues from its last validation
        log.info("resuming the interrupted job from %s", resume)
    datamodule.check(("train", "val"))  # a missing or malformed dataset fails here, before the first step
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    trainer.save_checkpoint(checkpoint, weights_only=False)  # keep optimizer state so training can resume
    metrics = _plain(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
    record = {
        "kind": "train",
        "metrics": metrics,
        "step": trainer.global_step,
        "checkpoint": str(checkpoint),
        "overrides": _task_overrides(),
        "choices": _choices(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if cfg.get("evaluate_after_training", False):
        # Through the file just written, exactly as `+eval=true ckpt=...` would (weights or their EMA, eval module)
        payload = load_checkpoint(str(checkpoint))
        test_metrics, protocol, unavailable = evaluate_checkpoint(cfg, payload, str(checkpoint), out)
        metrics |= test_metrics
        record |= {"kind": "train+eval", "metrics": metrics, "protocol": protocol, "unavailable": unavailable}
    if trainer.is_global_zero:
        write_metrics(out, record)  # last: its presence means the job finished (skip_finished relies on it)
    print(format_table(metrics, f"final metrics after {trainer.global_step} steps ({out})"))
    _print_unavailable(record.get("unavailable", {}))
    return metrics


def _print_unavailable(unavailable: dict[str, str]) -> None:
    for name, reason in unavailable.items():
        print(f"{name}: not computed. {reason}")


def load_checkpoint(path: str | None) -> dict:
    """Reads a vqbench checkpoint with ``weights_only=True``: tensors and plain data only, no code runs."""
    if path is None:
        raise CheckpointError("+eval=true needs a checkpoint: add ckpt=path/to/last.ckpt")
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"ckpt={path} does not exist; give the path of a .ckpt file written by a training run")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"ckpt={path} cannot be read as a tensors-only checkpoint ({error})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or not payload.get("vqbench_config"):
        raise CheckpointError(
            f"ckpt={path} is not a vqbench checkpoint (no state_dict or embedded config); "
            "evaluate a checkpoints/last.ckpt written by `python run.py`"
        )
    return payload


def load_tokenizer_weights(module: TokenizerModule, payload: dict, ckpt: str, use_ema: bool) -> None:
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


def load_tokenizer(ckpt: str, use_ema: bool = False):
    """The trained Tokenizer of a checkpoint (eval mode, on the CPU) and its config, for notebooks and scripts."""
    payload = load_checkpoint(ckpt)
    cfg = OmegaConf.create(payload["vqbench_config"])
    module = build_training_module(cfg, for_training=False)
    load_tokenizer_weights(module, payload, ckpt, use_ema=use_ema)
    return module.tokenizer.eval(), cfg


def _touches(override: str, node: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == node or key.startswith(node + ".")


def evaluation_config(trained: DictConfig, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with the command line's changes to the nodes in EVAL_OVERRIDABLE.

    A group choice (``data=celeba``) replaces the whole node with the command line's; a key (``data.root=PATH``)
    changes only that key of the trained node, so evaluating on another copy of the training data keeps its
    preprocessing.
    """
    merged = trained.copy()
    for override in overrides:
        for node in EVAL_FROZEN:
            if _touches(override, node):
                raise ConfigError(
                    f"'{override}': the {node} is fixed by the checkpoint; evaluate without overriding it"
                )
    for node in EVAL_OVERRIDABLE:
        keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides if _touches(o, node)]
        if node in keys:
            merged[node] = cfg[node]
        for key in keys:
            if key != node and not key.startswith(("hydra.", "eval")):
                OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    merged.ckpt = cfg.ckpt
    return merged


def evaluate_checkpoint(
    eval_cfg: DictConfig, payload: dict, ckpt: str, out: Path
) -> tuple[dict[str, float], dict, dict[str, str]]:
    """SPEC §6 on the test split: the metrics, the protocol that produced them, and the metrics that could not be
    computed (missing pretrained weights) with the reason."""
    set_tf32(False)  # the protocol's numbers come from IEEE fp32, also right after a TF32 training in this process
    module = build_training_module(eval_cfg, for_training=False)
    load_tokenizer_weights(module, payload, ckpt, use_ema=bool(eval_cfg.metrics.get("use_ema", False)))
    datamodule = build_datamodule(eval_cfg)
    datamodule.check(("test",))
    first_image = next(image for image in datamodule.dataset("test") if image is not None)
    extra, unavailable = build_evaluation_metrics(eval_cfg, tuple(first_image.shape[-2:]))
    module.add_test_metrics(extra)
    callbacks = []
    if eval_cfg.metrics.get("save_reconstructions", False):
        callbacks.append(SaveReconstructions(out / "reconstructions"))
    trainer = _trainer(
        accelerator=eval_cfg.trainer.accelerator,
        devices=eval_cfg.trainer.devices,
        num_nodes=eval_cfg.trainer.get("num_nodes", 1),
        strategy=eval_cfg.trainer.get("strategy", "auto"),
        precision=eval_cfg.trainer.precision,
        # Every process gets distinct images (StridedShardSampler); Lightning's sampler would pad with repeats.
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=eval_cfg.trainer.enable_progress_bar,
        callbacks=callbacks,
    )
    metrics = _plain(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    window = eval_cfg.metrics.get("usage_window")
    tokens = f"a FIFO queue of the last {window} tokens" if window else "every token of the split"
    protocol = {
        "split": "test",
        "images": len(datamodule.dataset("test")),
        "processes": trainer.world_size,
        "weights": "weight EMA" if eval_cfg.metrics.get("use_ema", False) else "trained weights",
        "data_range": "reconstructions clamped to [-1, 1], mapped to [0, 1]",
        "psnr": "per image on [0, 1], then the mean (skimage.metrics.peak_signal_noise_ratio)",
        "ssim": "per image, 7x7 uniform window, K1 0.01, K2 0.03, sample covariance, then the mean "
        "(skimage.metrics.structural_similarity defaults)",
        "l1": "mean absolute error per image on [0, 1], then the mean",
        "lpips": "lpips package, AlexNet, inputs in [-1, 1], per image then the mean",
        "rfid": "torchmetrics FrechetInceptionDistance over torch-fidelity's inception-v3-compat (2048-d pool "
        "features, TF1 bilinear resize); reference = the evaluated originals; both sides quantised to uint8",
        "codebook_usage": f"used codes / K over {tokens}",
        "perplexity": f"exp(entropy of the code histogram over {tokens})",
        "effective_codebook_size": "distinct token vectors over every token of the split",
    }
    return metrics, protocol, unavailable


def evaluate(cfg: DictConfig) -> dict[str, float]:
    payload = load_checkpoint(cfg.ckpt)
    trained = OmegaConf.create(payload["vqbench_config"])
    overrides = _task_overrides()
    eval_cfg = evaluation_config(trained, cfg, overrides)
    check_config(eval_cfg)
    out = _output_dir()
    L.seed_everything(eval_cfg.seed, workers=True, verbose=False)
    metrics, protocol, unavailable = evaluate_checkpoint(eval_cfg, payload, cfg.ckpt, out)
    if rank_zero_only.rank == 0:  # under multi-process evaluation, one writer
        write_metrics(
            out,
            {
                "kind": "eval",
                "metrics": metrics,
                "checkpoint": str(Path(cfg.ckpt).resolve()),
                "step": payload.get("global_step"),
                "protocol": protocol,
                "unavailable": unavailable,
                "overrides": overrides,
                "config": OmegaConf.to_container(eval_cfg, resolve=True),
            },
        )
    print(format_table(metrics, f"evaluation of {cfg.ckpt} on {protocol['images']} test images"))
    _print_unavailable(unavailable)
    return metrics
