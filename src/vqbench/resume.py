"""Which checkpoint a training continues from, and whether it may: a resumed run must be the same experiment.

``ckpt=PATH`` resumes that checkpoint; with ``skip_finished=true`` (every sweep) an interrupted job resumes its own
``checkpoints/last.ckpt``. Either is read through vqbench.checkpoint (tensors only, allow-listed config) and refused
when its config differs from the run's in anything outside RESUME_MAY_CHANGE (docs/resuming-and-failures.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vqbench.checkpoint import TRUSTED_KEY, check_resumable_format, load_checkpoint, trusted_prefixes
from vqbench.errors import CheckpointError, OutputError
from vqbench.job_status import task_overrides

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


def resume_from(cfg: DictConfig, out: Path) -> str | None:
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
    if payload.get("vqbench_overrides") != task_overrides():
        raise CheckpointError(
            f"{own} belongs to another job (overrides {payload.get('vqbench_overrides')}); it is kept. Give this "
            "sweep its own directory with hydra.sweep.dir=..."
        )
    _check_resumable(payload, cfg, str(own))
    log.info("resuming the interrupted job from %s (step %s)", own, payload.get("global_step"))
    return str(own)
