"""``python run.py``: one training, from a composed config to its checkpoint and metrics.json.

The run's folder holds ``checkpoints/last.ckpt`` (one checkpoint, written atomically, never with non-finite weights),
the TensorBoard log, and — written last, only when the training finished — ``metrics.json``. Signals end the run at a
step boundary with a checkpoint (training/interrupts.py); ``evaluate_after_training=true`` then runs the evaluation
protocol on the file just written, exactly as ``+eval=true ckpt=...`` would (vqbench.evaluate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightning as L
from omegaconf import DictConfig, OmegaConf

from vqbench.build import build_datamodule, build_logger, build_training_module, check_config, check_shapes
from vqbench.checkpoint import check_targets, load_checkpoint, trusted_prefixes
from vqbench.compression import compression_record
from vqbench.cost import CostMeter, TrainingCost
from vqbench.evaluate import evaluate_checkpoint
from vqbench.job_status import (
    check_writable,
    compared_job_overrides,
    finished_results,
    job_choices,
    output_dir,
    sweep_run,
    task_overrides,
    write_results,
)
from vqbench.quantizer_settings import reconcile_codebook_size
from vqbench.results import METRICS_FILE, format_table, plain_floats, print_unavailable
from vqbench.resume import resume_from
from vqbench.training.callbacks import CodeUsageHistogram, ReconstructionGrid, SeedEachStep
from vqbench.training.checkpoints import AtomicCheckpointIO, LastCheckpoint
from vqbench.training.final_validation import REPORTED, FinalValidation
from vqbench.training.hparams import compared_hyperparameters, log_final, write_config
from vqbench.training.interrupts import SaveOnSignal, SignalFlag
from vqbench.training.nonfinite import NonFiniteGuard
from vqbench.training.performance import set_tf32, trains_on_cuda
from vqbench.training.progress import StepProgressBar
from vqbench.training.trainer_settings import lightning_trainer

log = logging.getLogger("vqbench")


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


def train(cfg: DictConfig, progress: Progress | None = None) -> dict[str, float]:
    progress = progress or Progress()
    # before anything reads a _target_ (check_config resolves the quantizer's class): docs/checkpoints.md
    check_targets(OmegaConf.to_container(cfg, resolve=False), trusted_prefixes(cfg))
    check_config(cfg)
    reconcile_codebook_size(cfg, task_overrides())
    out = output_dir()
    finished = finished_results(cfg, out)
    if finished is not None:
        log.info("skipping %s: it already finished (%s); delete that file to run it again", out, METRICS_FILE)
        print(f"skipped (already finished): {out}")
        return finished["metrics"]
    check_writable(out)
    resume = resume_from(cfg, out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    set_tf32(bool(cfg.performance.tf32))
    if trains_on_cuda(cfg) and not any(cfg.performance.values()):
        log.info(
            "training on CUDA on the plain path; performance=gpu turns on compile, channels_last, TF32 and fused Adam"
        )
    datamodule = build_datamodule(cfg)
    module = build_training_module(cfg)
    checkpoint = out / "checkpoints" / "last.ckpt"
    compared = compared_job_overrides()
    final_validation, training_cost = FinalValidation(), TrainingCost(int(cfg.data.batch_size))
    trainer_settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    guard = NonFiniteGuard()  # before LastCheckpoint: a step's flag is recorded before its checkpoint is written
    last = LastCheckpoint(checkpoint, cfg.checkpoint.every_n_steps, task_overrides(), guard.check_before_save)
    trainer = lightning_trainer(
        **trainer_settings,
        default_root_dir=out,
        logger=build_logger(cfg, out, sweep_run(compared)),
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
        metrics = plain_floats({k: v for k, v in validated.items() if k.startswith(REPORTED)})
    record = {
        "kind": "train",
        "metrics": metrics,
        "step": trainer.global_step,
        "checkpoint": str(checkpoint),
        "overrides": task_overrides(),
        "choices": job_choices(),
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
    record |= compression_record(module.tokenizer, cfg, metrics, stage, unavailable)
    if unavailable:
        record["unavailable"] = unavailable
    record["cost"] = cost
    params = compared_hyperparameters(compared)
    log_final(trainer.logger, params, metrics, trainer.global_step, config=config, choices=record["choices"])
    progress.signals.raise_if_received(trainer.global_step)  # interrupted: no metrics.json, it would look finished
    if trainer.is_global_zero:
        write_results(out, record)  # last: its presence means the job finished (skip_finished relies on it)
    print(format_table(metrics, f"final metrics after {trainer.global_step} steps ({out})"))
    print_unavailable(record.get("unavailable", {}))
    print(f"results: {out}")
    return metrics
