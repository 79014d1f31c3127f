"""A run's name, hyperparameters and final metrics in its logger, so that a sweep's jobs can be compared side by side
(TensorBoard's HParams tab, a wandb or MLflow run table, csv/hparams.yaml).

What a sweep compares is what it sweeps: a job of ``python run.py -m quantizer=vq,ema codebook.dim=4,64 data=sample``
is named ``quantizer=vq,codebook.dim=4`` (its TensorBoard run), and TensorBoard's HParams tab gets those keys
(``quantizer``, ``codebook.dim``) and the final metrics, so the table lines up the jobs by the swept values. The swept
keys are read from the sweep's ``multirun.yaml`` (Hydra writes it before the first job): the command line's sweep
overrides (``a=1,2``, ``range(...)``, ...) and ``hydra.sweeper.params`` (a ``+sweep=NAME`` file). A single run, or a
job whose sweep cannot be read, is named by all its command-line overrides. The final metrics are the
``metrics.json`` values under ``final/`` (``final/val/psnr``, ``final/test/rfid``), logged at the run's last step.

Loggers with a run table of their own (wandb, MLflow, csv) get every hyperparameter: the config group options
(``choice/quantizer``, ...) and every key of the nodes that define the experiment, flattened with ``/``
(``codebook/dim``, ``optimizer/lr``). TensorBoard's ``hparams.yaml`` holds the whole resolved config.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

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


#: Command-line overrides that say how or where a job runs, not what it is.
NOT_HYPERPARAMETERS = ("hydra", "ckpt", "skip_finished", "eval")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def swept_keys(sweep_dir: Path) -> list[str] | None:
    """The keys a multirun sweeps, from its ``multirun.yaml``, in command-line order; None if it cannot be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        saved = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        task = list(OmegaConf.select(saved, "hydra.overrides.task", default=[]) or [])
        params = OmegaConf.select(saved, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params) if params is not None else {}
        arguments = task + [f"{key}={value}" for key, value in params.items()]
        overrides = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # no or an unreadable multirun.yaml: the caller names the job by all its overrides
        return None
    return list(dict.fromkeys(o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()))


def _value(text: str) -> bool | int | float | str:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, str)) else text


def compared_overrides(overrides: list[str], swept: list[str] | None) -> list[str]:
    """The overrides a job is compared by: those of the swept keys, or (``swept`` None or empty) every override
    but those in NOT_HYPERPARAMETERS."""
    if swept:
        return [o for o in overrides if _key(o) in swept]
    return [o for o in overrides if _key(o).split(".")[0] not in NOT_HYPERPARAMETERS]


#: Longest run name: a folder name (most file systems allow 255 bytes).
MAX_RUN_NAME = 200


def run_name(compared: list[str]) -> str:
    """``quantizer=vq,codebook.dim=4``: the TensorBoard run of a job; ``default`` for a run without overrides. A name
    longer than MAX_RUN_NAME bytes is cut and ends with a hash of the whole name, so that it stays unique."""
    name = ",".join(o.lstrip("+~") for o in compared) or "default"
    if len(name.encode()) <= MAX_RUN_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return name.encode()[: MAX_RUN_NAME - 12].decode(errors="ignore") + "~" + digest


def compared_hyperparameters(compared: list[str]) -> dict[str, Any]:
    """``{key: value}`` of the overrides a job is compared by (numbers and booleans as such, the rest as text)."""
    return {_key(o): _value(o.split("=", 1)[1]) if "=" in o else "" for o in compared}


def write_config(logger: Logger | None, config: dict) -> None:
    """TensorBoard's ``hparams.yaml`` (in the run's log folder): the resolved config. Lightning would write the
    LightningModule's saved hyperparameters there (none: ``{}``), and only if the file does not exist yet."""
    if isinstance(logger, TensorBoardLogger):
        folder = Path(logger.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TensorBoardLogger.NAME_HPARAMS_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def log_final(
    logger: Logger | None,
    params: dict[str, Any],
    metrics: dict[str, float],
    step: int,
    config: dict | None = None,
    choices: dict[str, str] | None = None,
) -> None:
    """Writes the run's hyperparameters and its final metrics (under ``final/``, at ``step``) to its logger.

    TensorBoard gets ``params`` (the compared keys) in its HParams tab, with the final metrics as the tab's metrics,
    and the resolved ``config`` in hparams.yaml; the other loggers get every hyperparameter of ``config`` and
    ``choices`` plus ``params``."""
    if logger is None:
        return
    final = {f"final/{name}": value for name, value in metrics.items()}
    if isinstance(logger, TensorBoardLogger):
        from torch.utils.tensorboard.summary import hparams

        logger.log_metrics(final, step=step)
        logger.hparams.update(params)
        if rank_zero_only.rank == 0:  # the other processes of a DDP run have no event file
            writer = logger.experiment._get_file_writer()  # as TensorBoardLogger.log_hyperparams writes its summary
            for summary in hparams(params, final):
                writer.add_summary(summary)
            if config is not None:
                write_config(logger, config)
    else:
        everything = hyperparameters(config, choices or {}) if config is not None else {}
        logger.log_hyperparams({**everything, **params})
        logger.log_metrics(final, step=step)
    logger.save()
