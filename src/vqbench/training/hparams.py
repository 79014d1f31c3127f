"""A run's hyperparameters and final metrics in its logger, so that a sweep's jobs can be compared side by side
(TensorBoard's HParams tab, a wandb or MLflow run table, csv/hparams.yaml).

The hyperparameters are the config group options the job composed (``choice/quantizer``, ...) and every key of the
nodes that define the experiment, flattened with ``/`` (``codebook/dim``, ``optimizer/lr``); the final metrics are
the ``metrics.json`` values under ``final/`` (``final/val/psnr``, ``final/test/rfid``), tags of their own so that
they do not add a point to the training curves.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger

#: The config nodes that define an experiment (the rest says where it runs and what it prints).
HPARAM_NODES = ("codebook", "quantizer", "model", "loss", "optimizer", "data", "trainer", "seed", "ema_decay")


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not str(key).startswith("_"):  # _target_ / _partial_: implementation, not a hyperparameter
                _flatten(f"{prefix}/{key}" if prefix else str(key), item, into)
    elif isinstance(value, (bool, int, float, str)):
        into[prefix] = value
    else:  # lists, None: TensorBoard's HParams takes numbers, booleans and strings
        into[prefix] = str(value)


def hyperparameters(config: dict, choices: dict[str, str]) -> dict[str, Any]:
    """Flat ``name -> number | bool | str`` of a resolved config (a plain dict) and its group choices."""
    flat: dict[str, Any] = {f"choice/{group}": option for group, option in sorted(choices.items())}
    for node in HPARAM_NODES:
        if node in config:
            _flatten(node, config[node], flat)
    return flat


def log_final(logger: Logger | None, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """Writes the hyperparameters and the final metrics (under ``final/``) to the run's logger."""
    if logger is None:
        return
    final = {f"final/{name}": value for name, value in metrics.items()}
    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(params, metrics=final)  # the hparams summary names the metric tags
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(final, step=step)
    logger.save()
