"""The per-step cost of the non-finite check (training/nonfinite.py), measured in the same run as the step without it.

    python -m vqbench.bench nonfinite [--device cpu|cuda] [--recipes NAME ...] [--steps N] [--turn N] [--warmup N]
                                      [--batch-size N] [--repeats N]

Two numbers per recipe:

- the training step (``TokenizerModule`` under ``lightning.Trainer.fit``, as ``bench train`` runs it) with the check
  (the module's finiteness flags and NonFiniteGuard) and without it (the module's flags replaced by a constant, no
  guard), the two copies taking turns of ``--turn`` steps from the same weights on the same batches, so that a
  change in the machine's load affects both alike; the ratio of their median step times;
- the check's own work per step, timed alone over ``--repeats`` repetitions on a loss and a gradient norm on the
  device (``isfinite``, ``all``, two ``where``): no host-device sync, so on a GPU it is a few kernel launches queued
  behind the step.

On a shared CPU the step-time ratio is within the noise of the machine (a step takes 10^5 times the check's work);
the isolated cost is the number to read. Results go to docs/benchmarks/nonfinite-<device>.json and the "nonfinite
(<device>)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from unittest import mock

from vqbench.bench.common import DOCS, device_name, load_average, write_section
from vqbench.bench.train import (
    Contender,
    StepRecord,
    _timer,
    bench_overrides,
    compose_recipe,
    synthetic_batches,
)


class Checked(Contender):
    """A recipe's training step with (``checked=True``) or without the non-finite check."""

    def __init__(self, recipe: str, overrides: list[str], device: str, images, checked: bool):
        super().__init__(recipe, "fp32", overrides, device, images)
        self.checked = checked
        self.option = "with check" if checked else "without check"

    def fit(self, steps: int, record: StepRecord, flops=None) -> None:
        import lightning as L
        import torch
        from torch.utils.data import DataLoader

        from vqbench.training.nonfinite import NonFiniteGuard

        callbacks = [NonFiniteGuard()] if self.checked else []
        callbacks.append(_timer(self.device, record))  # after the guard: its work is inside the timed step
        trainer = L.Trainer(
            accelerator="gpu" if self.device == "cuda" else "cpu",
            devices=1,
            precision="32-true",
            deterministic=self.cfg.trainer.deterministic,
            max_steps=steps,
            max_epochs=-1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        constant = torch.ones((), dtype=torch.bool, device=self.device)
        patch = mock.patch("vqbench.training.module.all_finite", lambda *a, **k: constant)
        with contextlib.nullcontext() if self.checked else patch:
            trainer.fit(self.module, DataLoader(self.images, batch_size=None))


def isolated_check_seconds(device: str, repeats: int) -> float:
    """Seconds per step of the check's own work (what training_step and NonFiniteGuard add), synchronised once."""
    import torch

    from vqbench.training.nonfinite import all_finite

    loss, norm = torch.tensor(0.5, device=device), torch.tensor(1.5, device=device)
    first_step = torch.zeros((), dtype=torch.long, device=device)
    what = torch.zeros((), dtype=torch.long, device=device)

    def one_step(step: int) -> None:
        nonlocal first_step, what
        loss_finite, grad_finite = all_finite([loss]), all_finite([norm], device)
        code = (~loss_finite).long() + 2 * (~grad_finite).long()
        first = (code > 0) & (first_step == 0)
        first_step = torch.where(first, step, first_step)
        what = torch.where(first, code, what)

    for step in range(100):  # warm-up
        one_step(step)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(repeats):
        one_step(step)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def bench_recipe(recipe: str, args: argparse.Namespace) -> dict:
    base = compose_recipe(recipe, [])
    batch = args.batch_size or int(base.data.batch_size)
    images = synthetic_batches(base, batch, args.device)
    shared = bench_overrides(base, batch)
    contenders = [Checked(recipe, shared, args.device, images, checked) for checked in (False, True)]
    for contender in contenders:
        contender.fit(args.warmup, StepRecord())
    timed = 0
    while timed < args.steps:
        turn = min(args.turn, args.steps - timed)
        for contender in contenders:
            contender.fit(turn, contender.steps)
        timed += turn
    without, with_check = (statistics.median(c.steps.seconds) for c in contenders)
    check = isolated_check_seconds(args.device, args.repeats)
    row = {
        "recipe": recipe,
        "batch_size": batch,
        "timed_steps": args.steps,
        "step_seconds_without_check": without,
        "step_seconds_with_check": with_check,
        "ratio": with_check / without,
        "check_seconds_per_step": check,
        "check_fraction_of_step": check / without,
        "step_seconds_all": {c.option: c.steps.seconds for c in contenders},
    }
    print(json.dumps({k: v for k, v in row.items() if k != "step_seconds_all"}), flush=True)
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Device: {meta['device']}; load average {meta['load_start']:.1f} at the start, {meta['load_end']:.1f} at "
        f"the end; torch {meta['torch']}. Step: median of {rows[0]['timed_steps']} steps per variant, in turns. "
        f"Check alone: mean over {meta['repeats']:,} repetitions.",
        "",
        "| recipe | batch | step without check | step with check | ratio | check alone per step | check / step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['batch_size']} | {r['step_seconds_without_check'] * 1e3:,.1f} ms | "
            f"{r['step_seconds_with_check'] * 1e3:,.1f} ms | {r['ratio']:.3f} | "
            f"{r['check_seconds_per_step'] * 1e6:,.1f} µs | {r['check_fraction_of_step']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def bench_nonfinite(args: argparse.Namespace) -> int:
    import lightning
    import torch

    logging_off()
    meta = {
        "device": device_name(args.device),
        "load_start": load_average(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "repeats": args.repeats,
    }
    rows = [bench_recipe(recipe, args) for recipe in args.recipes]
    meta["load_end"] = load_average()
    out = DOCS / "benchmarks" / f"nonfinite-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    command = "python -m vqbench.bench nonfinite " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["nonfinite"] else [])
    write_section(f"nonfinite ({args.device})", markdown(rows, meta), command.strip())
    print(f"wrote {out}")
    return 0


def logging_off() -> None:
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--recipes", nargs="+", default=["celeba64_vqvae", "llvq_fashion_mnist"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--turn", type=int, default=5, help="steps per turn")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--repeats", type=int, default=10000, help="repetitions of the check timed alone")
