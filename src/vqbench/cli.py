"""What ``run.py`` does with a composed config: train (default) or evaluate (``+eval=true ckpt=PATH``).

Failures: in a single run, a user error ends the process with one ``error:`` line and status 2. In a multirun, a job
that fails writes ``failed.json`` into its folder and returns, so that the other jobs still run; ``FailedJobsSummary``
(a Hydra callback) lists the failed jobs when the sweep ends and sets the exit status. Every failing job, in either
mode, leaves its ``failed.json`` (the error, the step, the overrides) for ``vqbench.report``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from vqbench.build import (
    build_datamodule,
    build_evaluation_metrics,
    build_logger,
    build_token_count,
    build_training_module,
    check_config,
    check_shapes,
    effective_size_splits,
    reconcile_codebook_size,
)
from vqbench.checkpoint import (
    EVAL_TRAINER_KEYS,
    TRUSTED_KEY,
    check_resumable_format,
    check_targets,
    evaluation_config,
    evaluation_module,
    load_checkpoint,
    trusted_prefixes,
)
from vqbench.compression import compression_figures
from vqbench.console import tidy_console
from vqbench.cost import CostMeter, TrainingCost
from vqbench.errors import CheckpointError, ConfigError, OutputError, VqbenchError
from vqbench.jobs import holding, refuse_training_folder
from vqbench.metrics.aggregate import MAX_DISTINCT_TOKENS
from vqbench.metrics.fid_reference import dataset_fingerprint, save_reference
from vqbench.metrics.settings import reconstructions_folder
from vqbench.results import (
    FAILED_FILE,
    METRICS_FILE,
    format_table,
    new_failures,
    read_metrics,
    remove_failure,
    snapshot_failures,
    write_failure,
    write_metrics,
)
from vqbench.training.callbacks import (
    CodeUsageHistogram,
    ReconstructionGrid,
    SaveReconstructions,
    SeedEachStep,
)
from vqbench.training.checkpoints import AtomicCheckpointIO, LastCheckpoint
from vqbench.training.final_validation import REPORTED, FinalValidation
from vqbench.training.hparams import (
    compared_hyperparameters,
    compared_overrides,
    log_final,
    run_name,
    swept_keys,
    write_config,
)
from vqbench.training.interrupts import (
    SaveOnSignal,
    SignalFlag,
    TrainingInterrupted,
    report_interruption,
    resume_command,
)
from vqbench.training.nonfinite import NonFiniteGuard
from vqbench.training.performance import set_tf32, trains_on_cuda
from vqbench.training.progress import StepProgressBar

log = logging.getLogger("vqbench")

#: Keys a resumed training may change: how long and where it runs, what it measures, where the data lives. Any other
#: difference from the checkpoint's config (model, quantizer, codebook, loss, optimizer, seed, the data's
#: preprocessing) would silently continue another experiment, so it is refused.
RESUME_MAY_CHANGE = (
    "trainer",
    "performance",
    "metrics",
    "checkpoint",
    "ckpt",
    "skip_finished",
    "evaluate_after_training",
    "data.root",
    "data.num_workers",
    "data.cache",
    "data.cache_dir",
    "data.eval_batch_size",
    TRUSTED_KEY,
)
#: Exit status of a user error (bad config value, data, checkpoint, output folder), and of any other failure.
USER_ERROR_STATUS, FAILURE_STATUS = 2, 1


@dataclass
class Progress:
    """How far the job got, for failed.json, and the signals that end a training (training/interrupts.py)."""

    trainer: L.Trainer | None = None
    signals: SignalFlag = field(default_factory=SignalFlag)
    failed_step: int | None = None  # the step an error names (the first non-finite step), else the trainer's

    @property
    def step(self) -> int | None:
        if self.failed_step is not None:
            return self.failed_step
        return None if self.trainer is None else self.trainer.global_step


def run(cfg: DictConfig) -> dict[str, float] | None:
    """Entry point behind run.py (see the module docstring for what happens on failure). The job holds its folder
    (vqbench.jobs) while it runs; an evaluation never runs in a training's folder."""
    out = _output_dir()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    tidy_console()  # each log line once (Hydra's handlers), no advertisements
    evaluation = bool(cfg.get("eval", False))
    with contextlib.ExitStack() as stack:
        try:
            if evaluation:
                refuse_training_folder(out)
            stack.enter_context(holding(out, "eval" if evaluation else "train"))
        except OutputError as error:  # another run's folder, or none that takes files: nothing is written there
            print(f"error: {error}" if not multirun else f"error: job {out} not run: {error}", file=sys.stderr)
            if multirun:
                return None
            raise SystemExit(USER_ERROR_STATUS) from None
        return _run_job(cfg, out, multirun)


def _run_job(cfg: DictConfig, out: Path, multirun: bool) -> dict[str, float] | None:
    remove_failure(out)  # a retried job starts without its previous failure or interruption
    progress = Progress()
    try:
        if cfg.get("eval", False):
            return evaluate(cfg)
        with progress.signals:
            try:
                return train(cfg, progress)
            except SIGTERMException:  # Lightning's SystemExit after SIGTERM, in a trainer without SaveOnSignal
                progress.signals.raise_if_received(progress.step or 0)
                raise
    except TrainingInterrupted as interruption:
        checkpoint = out / "checkpoints" / "last.ckpt"
        needs_ckpt = cfg.get("ckpt") is not None or not cfg.get("skip_finished", False)
        command = resume_command(checkpoint, out, single_run=not multirun, needs_ckpt=needs_ckpt)
        if rank_zero_only.rank == 0:
            report_interruption(out, interruption, command, _task_overrides())
        raise SystemExit(interruption.exit_status) from None
    except VqbenchError as error:
        message, status = str(error), USER_ERROR_STATUS
        progress.failed_step = getattr(error, "step", None)
    except torch.OutOfMemoryError as error:
        first_line = str(error).strip().splitlines()[0]
        message, status = (
            f"out of memory at step {progress.step}: {first_line}. Lower data.batch_size, or try "
            "trainer.precision=bf16-mixed",
            FAILURE_STATUS,
        )
    except Exception as error:
        if not multirun:
            _record_failure(out, cfg, progress, f"{type(error).__name__}: {error}", FAILURE_STATUS)
            raise  # a bug: its traceback is what a report needs
        log.error("job failed:\n%s", traceback.format_exc())
        message, status = f"{type(error).__name__}: {error}", FAILURE_STATUS
    log.error("%s", message)
    _record_failure(out, cfg, progress, message, status)
    if not multirun:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(status) from None
    print(f"error: job {out} failed: {message}", file=sys.stderr)
    return None


def _record_failure(out: Path, cfg: DictConfig, progress: Progress, message: str, status: int) -> None:
    if rank_zero_only.rank != 0:
        return
    record = {
        "kind": "eval" if cfg.get("eval", False) else "train",
        "error": message,
        "exit_status": status,
        "step": progress.step,
        "overrides": _task_overrides(),
    }
    try:
        write_failure(out, record)
    except OSError as error:
        log.warning("could not write %s into %s: %s", FAILED_FILE, out, error)


class FailedJobsSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): after a multirun, lists the jobs that failed in it
    (the ``failed.json`` files it wrote) and exits non-zero: 2 if every failure was a user error, else 1."""

    def __init__(self) -> None:
        self.before: dict[Path, tuple[int, int]] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.before = snapshot_failures(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failures = new_failures(sweep, self.before)
        if not failures:
            return
        lines = [f"error: {len(failures)} job(s) of the sweep in {sweep} failed; the others ran:"]
        for directory, record in failures:
            overrides = " ".join(record.get("overrides", []))
            step = "" if record.get("step") is None else f" at step {record['step']}"
            lines.append(f"  {directory} ({overrides}){step}: {record.get('error')}")
        lines.append("Fix the cause and re-run the same command: it retries only the failed and unfinished jobs.")
        print("\n".join(lines), file=sys.stderr)
        statuses = {record.get("exit_status", FAILURE_STATUS) for _, record in failures}
        raise SystemExit(USER_ERROR_STATUS if statuses == {USER_ERROR_STATUS} else FAILURE_STATUS)


class WritableOutput(Callback):
    """Hydra callback (``hydra.callbacks``): the run's (or the sweep's) output folder must take files. Checked before
    Hydra creates it, so that an unwritable ``hydra.run.dir`` / ``hydra.sweep.dir`` is one line, not a traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._require(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._require(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    @staticmethod
    def _require(folder: Path, key: str) -> None:
        try:
            _check_writable(folder, key)
        except OutputError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(USER_ERROR_STATUS) from None


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
    """The metrics of the job this directory already finished (with ``skip_finished=true``), or None to run it.

    A directory holding finished results is never written over: those of another job (other overrides), or any with
    ``skip_finished=false``, are refused.
    """
    path = out / METRICS_FILE
    if not path.is_file():
        return None
    try:
        record = read_metrics(path)
    except (OSError, ValueError) as error:
        raise OutputError(f"{path} cannot be read ({error}); move it away or choose another output folder") from None
    if not cfg.get("skip_finished", False):
        raise OutputError(
            f"{out} already holds the finished results of a run ({METRICS_FILE}); they are kept. Choose another "
            "output folder (hydra.run.dir=... / hydra.sweep.dir=...), or pass skip_finished=true to skip it"
        )
    if record.get("overrides") != _task_overrides():
        raise OutputError(
            f"{out} holds the finished results of another job (overrides {record.get('overrides')}); they are kept. "
            "Give this sweep its own directory with hydra.sweep.dir=..."
        )
    return record


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _resolved(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves elsewhere: compare the text
        return OmegaConf.to_container(cfg, resolve=False)


def config_differences(trained: DictConfig, requested: DictConfig, may_change: tuple[str, ...]) -> list[str]:
    """The dotted keys whose values differ between two configs, except those under ``may_change``, as
    ``key (trained -> requested)``. A node built from another class (its ``_target_`` differs, e.g. another
    quantizer) is one entry, not one per key."""
    old, new = _flatten(_resolved(trained)), _flatten(_resolved(requested))
    keys = [
        key
        for key in sorted(old.keys() | new.keys())
        if old.get(key, "absent") != new.get(key, "absent")
        and not any(key == p or key.startswith(p + ".") for p in may_change)
    ]
    replaced = [key.removesuffix("._target_") for key in keys if key.endswith("._target_")]
    keys = [k for k in keys if k.endswith("._target_") or not any(k.startswith(n + ".") for n in replaced)]
    return [f"{key} ({old.get(key, 'absent')} -> {new.get(key, 'absent')})" for key in keys]


def _check_resumable(payload: dict, cfg: DictConfig, ckpt: str) -> None:
    """Refuses a checkpoint whose config differs from this run's in anything but RESUME_MAY_CHANGE."""
    differences = config_differences(OmegaConf.create(payload["vqbench_config"]), cfg, RESUME_MAY_CHANGE)
    if differences:
        shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise CheckpointError(
            f"ckpt={ckpt} was trained with another config: {shown}. Resume it with its own settings (drop those "
            "overrides), or start a new run without ckpt="
        )


def _resume_from(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint this training continues from: ``ckpt=PATH``, or (``skip_finished=true``) the job's own
    ``checkpoints/last.ckpt`` after an interruption. Either is read tensors-only and must match this run's config;
    a checkpoint of another unfinished run in the output folder is never written over."""
    own = out / "checkpoints" / "last.ckpt"
    if cfg.ckpt is not None:
        payload = load_checkpoint(str(cfg.ckpt), "resume training from", trusted_prefixes(cfg))
        check_resumable_format(payload, str(cfg.ckpt))
        _check_resumable(payload, cfg, str(cfg.ckpt))
        if own.is_file() and own.resolve() != Path(cfg.ckpt).resolve():
            raise OutputError(
                f"{out} holds the checkpoint of another unfinished run ({own}); resuming ckpt={cfg.ckpt} there would "
                "overwrite it. Choose another output folder (hydra.run.dir=...)"
            )
        return str(cfg.ckpt)
    if not own.is_file():
        return None
    if not cfg.get("skip_finished", False):
        raise OutputError(
            f"{out} holds the checkpoint of an unfinished run ({own}); resume it with ckpt={own}, or choose another "
            "output folder (hydra.run.dir=...)"
        )
    try:
        payload = load_checkpoint(str(own), "resume the interrupted job from", trusted_prefixes(cfg))
        check_resumable_format(payload, str(own))
    except CheckpointError as error:
        raise CheckpointError(f"{error}. Delete {own} to run this job from the start") from None
    if payload.get("vqbench_overrides") != _task_overrides():
        raise CheckpointError(
            f"{own} belongs to another job (overrides {payload.get('vqbench_overrides')}); it is kept. Give this "
            "sweep its own directory with hydra.sweep.dir=..."
        )
    _check_resumable(payload, cfg, str(own))
    log.info("resuming the interrupted job from %s (step %s)", own, payload.get("global_step"))
    return str(own)


def train(cfg: DictConfig, progress: Progress | None = None) -> dict[str, float]:
    progress = progress or Progress()
    # before anything reads a _target_ (check_config resolves the quantizer's class): docs/checkpoints.md
    check_targets(OmegaConf.to_container(cfg, resolve=False), trusted_prefixes(cfg))
    check_config(cfg)
    reconcile_codebook_size(cfg, _task_overrides())
    out = _output_dir()
    finished = _finished_results(cfg, out)
    if finished is not None:
        log.info("skipping %s: it already finished (%s); delete that file to run it again", out, METRICS_FILE)
        print(f"skipped (already finished): {out}")
        return finished["metrics"]
    _check_writable(out)
    resume = _resume_from(cfg, out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    set_tf32(bool(cfg.performance.tf32))
    if trains_on_cuda(cfg) and not any(cfg.performance.values()):
        log.info(
            "training on CUDA on the plain path; performance=gpu turns on compile, channels_last, TF32 and fused Adam"
        )
    datamodule = build_datamodule(cfg)
    module = build_training_module(cfg)
    checkpoint = out / "checkpoints" / "last.ckpt"
    compared = _compared_overrides()
    final_validation, training_cost = FinalValidation(), TrainingCost(int(cfg.data.batch_size))
    trainer_settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    guard = NonFiniteGuard()  # before LastCheckpoint: a step's flag is recorded before its checkpoint is written
    last = LastCheckpoint(checkpoint, cfg.checkpoint.every_n_steps, _task_overrides(), guard.check_before_save)
    trainer = _trainer(
        **trainer_settings,
        default_root_dir=out,
        logger=build_logger(cfg, out, _sweep_run(compared)),
        enable_checkpointing=False,  # LastCheckpoint writes the one checkpoint a run keeps
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            guard,
            last,
            SaveOnSignal(progress.signals, last),  # after LastCheckpoint: saves only a step it has not saved
            SeedEachStep(cfg.seed),
            ReconstructionGrid(cfg.metrics.grid_images),
            CodeUsageHistogram(),
            final_validation,
            training_cost,
            # trainings are set in steps: one bar over the run's steps, with the rate and the time left
            *([StepProgressBar()] if trainer_settings.get("enable_progress_bar", True) else []),
        ],
    )
    progress.trainer = trainer
    config = OmegaConf.to_container(cfg, resolve=True)
    if trainer.is_global_zero:
        write_config(trainer.logger, config)
    # A missing or malformed dataset, or a model that does not fit the data, fails here, before the first step.
    datamodule.check(("train", "val"), world_size=trainer.world_size)
    check_shapes(cfg, module, datamodule)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)  # last.ckpt: see LastCheckpoint
    progress.signals.raise_if_received(trainer.global_step)  # a signal after the last step: last.ckpt is that step's
    cost = {"train": training_cost.result or {"steps": 0}}
    # The validation that ended the training scored the final weights already; validate only if none did.
    metrics = final_validation.metrics_at(trainer.global_step)
    if metrics is None:
        validated = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        metrics = _plain({k: v for k, v in validated.items() if k.startswith(REPORTED)})
    record = {
        "kind": "train",
        "metrics": metrics,
        "step": trainer.global_step,
        "checkpoint": str(checkpoint),
        "overrides": _task_overrides(),
        "choices": _choices(),
        "config": config,
    }
    stage = "val"
    if cfg.get("evaluate_after_training", False):
        # Through the file just written, exactly as `+eval=true ckpt=...` would (weights or their EMA, eval module)
        payload = load_checkpoint(str(checkpoint), trusted_modules=trusted_prefixes(cfg))
        meter = CostMeter(trainer.strategy.root_device).start()
        test_metrics, protocol, unavailable = evaluate_checkpoint(cfg, payload, str(checkpoint), out)
        cost["test"] = meter.finish(int(protocol["images"]))
        metrics |= test_metrics
        record |= {"kind": "train+eval", "metrics": metrics, "protocol": protocol, "unavailable": unavailable}
        stage = "test"
    unavailable = record.get("unavailable", {})
    record |= _compression_record(module.tokenizer, cfg, metrics, stage, unavailable)
    if unavailable:
        record["unavailable"] = unavailable
    record["cost"] = cost
    params = compared_hyperparameters(compared)
    log_final(trainer.logger, params, metrics, trainer.global_step, config=config, choices=record["choices"])
    progress.signals.raise_if_received(trainer.global_step)  # interrupted: no metrics.json, it would look finished
    if trainer.is_global_zero:
        _write_results(out, record)  # last: its presence means the job finished (skip_finished relies on it)
    print(format_table(metrics, f"final metrics after {trainer.global_step} steps ({out})"))
    _print_unavailable(record.get("unavailable", {}))
    print(f"results: {out}")
    return metrics


def _compared_overrides() -> list[str]:
    """The overrides this job is compared by: the swept ones in a multirun, else all (training/hparams.py)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    swept = swept_keys(Path(HydraConfig.get().sweep.dir)) if multirun else None
    return compared_overrides(_task_overrides(), swept)


def _sweep_run(compared: list[str]) -> tuple[Path, str] | None:
    """(sweep folder, run name) of a multirun job, for its TensorBoard run; None for a single run."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep, out = Path(HydraConfig.get().sweep.dir).resolve(), _output_dir().resolve()
    # A job folder outside its sweep folder (a custom hydra.sweep.subdir) keeps its curves in its own folder.
    return (sweep if out.is_relative_to(sweep) else out), run_name(compared)


def _compression_record(tokenizer, cfg: DictConfig, metrics: dict, stage: str, unavailable: dict) -> dict:
    """``{"compression": ...}`` for metrics.json (vqbench/compression.py), or the reason under ``unavailable``."""
    figures, reason = compression_figures(tokenizer, cfg, metrics, stage)
    if reason is not None:
        unavailable["compression"] = reason
        return {}
    return {"compression": figures}


def _check_writable(out: Path, key: str = "hydra.run.dir") -> None:
    """The output folder must take files before any work is done (its checkpoints and metrics.json)."""
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(
            f"cannot write into the output folder {out} ({error.strerror or error}); choose a writable one with "
            f"{key}=..."
        ) from None


def _write_results(out: Path, record: dict) -> None:
    try:
        write_metrics(out, record)
    except OSError as error:
        raise OutputError(
            f"cannot write {out / METRICS_FILE} ({error.strerror or error}); the checkpoint {out}/checkpoints/"
            "last.ckpt is complete. Free disk space and evaluate it with +eval=true ckpt=..."
        ) from None


def _print_unavailable(unavailable: dict[str, str]) -> None:
    for name, reason in unavailable.items():
        print(f"{name}: not computed. {reason}")


SSIM_PROTOCOLS = {
    "uniform": "per image, 7x7 uniform window, K1 0.01, K2 0.03, sample covariance, then the mean "
    "(skimage.metrics.structural_similarity defaults)",
    "gaussian": "per image, 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population covariance, then the "
    "mean (Wang et al. 2004; piqa.SSIM)",
}


def evaluation_trainer_settings(eval_cfg: DictConfig) -> dict:
    """The lightning.Trainer arguments of an evaluation: the config's values of EVAL_TRAINER_KEYS."""
    settings = OmegaConf.to_container(eval_cfg.trainer, resolve=True)
    settings = {key: value for key, value in settings.items() if key in EVAL_TRAINER_KEYS}
    if eval_cfg.metrics.get("precision"):  # a recipe's evaluation precision (the ImageNet-128 tables: fp32)
        settings["precision"] = eval_cfg.metrics.precision
    return settings


def evaluate_checkpoint(
    eval_cfg: DictConfig, payload: dict, ckpt: str, out: Path
) -> tuple[dict[str, float], dict, dict[str, str]]:
    """The evaluation protocol (docs/protocol.md) on the test split: the metrics, the protocol that produced them,
    and the metrics that could not be computed (missing pretrained weights) with the reason."""
    set_tf32(False)  # the protocol's numbers come from IEEE fp32, also right after a TF32 training in this process
    module = evaluation_module(eval_cfg, payload, ckpt, use_ema=bool(eval_cfg.metrics.get("use_ema", False)))
    datamodule = build_datamodule(eval_cfg)
    size_splits = effective_size_splits(eval_cfg)
    datamodule.check(tuple(dict.fromkeys(["test", *size_splits])))
    first_image = next(image for image in datamodule.dataset("test") if image is not None)
    test_images = len(datamodule.dataset("test"))
    data_config = OmegaConf.to_container(eval_cfg.data, resolve=True)
    fingerprint = dataset_fingerprint(data_config, "test", test_images, first_image)
    extra, unavailable = build_evaluation_metrics(eval_cfg, tuple(first_image.shape[-2:]), fingerprint)
    module.add_test_metrics(extra)
    callbacks = []
    if eval_cfg.metrics.get("save_reconstructions", False):
        folder = reconstructions_folder(eval_cfg.metrics, out)
        try:  # before the test pass, not at its first batch
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(
                f"cannot create the reconstructions folder {folder} ({error.strerror or error}); give a writable "
                "folder with metrics.reconstructions_dir=..."
            ) from None
        callbacks.append(SaveReconstructions(folder))
    trainer_settings = dict(
        evaluation_trainer_settings(eval_cfg),
        # Every process gets distinct images (StridedShardSampler); Lightning's sampler would pad with repeats.
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer = _trainer(**trainer_settings, callbacks=callbacks)
    metrics = _plain(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    rfid_record = _rfid_record(extra.get("rfid"), trainer.is_global_zero)
    window = eval_cfg.metrics.get("usage_window")
    tokens = f"a FIFO queue of the last {window} tokens" if window else "every token of the split"
    flip = False
    if size_splits != ["test"]:
        metrics.pop("test/effective_codebook_size", None)
        counter = build_token_count(eval_cfg, module.tokenizer, datamodule)
        metrics |= _plain(_trainer(**trainer_settings).test(counter, verbose=False)[0])
        flip = counter.flip
    counted = " + ".join(size_splits)
    if "test/effective_codebook_size" not in metrics:
        unavailable["effective_codebook_size"] = (
            f"more than {MAX_DISTINCT_TOKENS:,} distinct token vectors over the {counted} split(s): nearly every "
            "vector has a token of its own (the dense lattice), too many to hold in memory; LL-VQ-VAE does not "
            "count the dense lattice either"
        )
    protocol = {
        "split": "test",
        "images": test_images,
        "processes": trainer.world_size,
        "weights": "weight EMA" if eval_cfg.metrics.get("use_ema", False) else "trained weights",
        "precision": str(trainer.precision),
        "data_range": "reconstructions mapped from the model's pixel space to [0, 1] (x * pixel_std + pixel_mean) "
        "and clamped",
        "psnr": "per image on [0, 1], then the mean (skimage.metrics.peak_signal_noise_ratio)",
        "ssim": SSIM_PROTOCOLS[eval_cfg.metrics.get("ssim_window", "uniform")],
        "l1": "mean absolute error per image on [0, 1], then the mean",
        "lpips": "lpips package, AlexNet, inputs in [-1, 1], per image then the mean",
        "rfid": rfid_record,
        "codebook_usage": f"used codes / K over {tokens}",
        "perplexity": f"exp(entropy of the code histogram summed over {tokens})",
        "used_codes": "codes chosen at least once over every token of the split (unused_codes: K minus it)",
        "effective_codebook_size": f"distinct token vectors over every token of the {counted} split(s)"
        + (", each image flipped at random first (data.flip), as LL-VQ-VAE's loaders do" if flip else ""),
    }
    if window:
        protocol["codebook_usage_all_tokens"] = "used codes / K over every token of the split"
        protocol["perplexity_all_tokens"] = "exp(entropy of the code histogram summed over every token of the split)"
    if any("/level_" in key for key in metrics):
        protocol["levels"] = "codebook_usage/level_r, perplexity/level_r: the same over stage r's indices alone"
    if rfid_record is None:
        del protocol["rfid"]
    else:
        protocol["rfid_protocol"] = rfid_record["id"]
    if eval_cfg.metrics.get("loss_terms", False):
        protocol["loss/reconstruction"] = (
            f"the training's {eval_cfg.loss.reconstruction} loss per image in the model's pixel space "
            "(data.pixel_mean / pixel_std, unclamped), then the mean"
        )
        protocol["loss/perceptual"] = (
            "the training's LPIPS(VGG16) per image, inputs mapped to loss.perceptual.input_range, then the mean"
        )
    if size_splits != ["test"]:
        protocol["quantized_vectors"] = f"token vectors counted over the {counted} split(s)"
    return metrics, protocol, unavailable


def _rfid_record(metric, writer: bool) -> dict | None:
    """The rFID protocol as metrics.json records it, and where its reference statistics came from; stores newly
    computed reference statistics in the cache (one writer)."""
    if metric is None:
        return None
    record = metric.protocol.as_record()
    cache = metric.reference_cache
    if metric.reference is not None:
        record["reference_statistics"] = f"read from the cache {cache} (checksum verified)"
    elif cache is not None and metric.reference_statistics is not None:
        if writer:
            save_reference(cache, *metric.reference_statistics)
        record["reference_statistics"] = f"computed in this evaluation and cached in {cache}"
    else:
        record["reference_statistics"] = "computed in this evaluation (not cached)"
    return record


def evaluate(cfg: DictConfig) -> dict[str, float]:
    payload = load_checkpoint(cfg.ckpt, trusted_modules=trusted_prefixes(cfg))
    trained = OmegaConf.create(payload["vqbench_config"])
    overrides = _task_overrides()
    eval_cfg = evaluation_config(trained, cfg, overrides)
    check_targets(OmegaConf.to_container(eval_cfg, resolve=False), trusted_prefixes(cfg))
    check_config(eval_cfg)
    reconcile_codebook_size(eval_cfg)  # checkpoints written before the levels defined codebook.size
    out = _output_dir()
    finished = _finished_results(cfg, out)
    if finished is not None:
        print(f"skipped (already evaluated): {out}")
        return finished["metrics"]
    _check_writable(out)
    print(f"evaluating {cfg.ckpt}; results go to {out} (hydra.run.dir)")
    L.seed_everything(eval_cfg.seed, workers=True, verbose=False)
    meter = CostMeter(_evaluation_device(eval_cfg)).start()
    metrics, protocol, unavailable = evaluate_checkpoint(eval_cfg, payload, cfg.ckpt, out)
    cost = {"test": meter.finish(int(protocol["images"]))}
    if rank_zero_only.rank == 0:  # under multi-process evaluation, one writer
        tokenizer = _shape_only_tokenizer(eval_cfg)
        _write_results(
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
                **_compression_record(tokenizer, eval_cfg, metrics, "test", unavailable),
                "cost": cost,
            },
        )
    print(format_table(metrics, f"evaluation of {cfg.ckpt} on {protocol['images']} test images"))
    _print_unavailable(unavailable)
    print(f"results: {out}")
    return metrics


def _shape_only_tokenizer(cfg: DictConfig):
    """The config's tokenizer on the meta device (shapes and the code space, no memory): for its compression figures."""
    from vqbench.build import build_tokenizer

    with torch.device("meta"):
        return build_tokenizer(cfg)[0]


def _evaluation_device(eval_cfg: DictConfig) -> torch.device:
    accelerator = str(eval_cfg.trainer.get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda and torch.cuda.is_available() else "cpu")
