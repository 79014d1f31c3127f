"""Training throughput of every experiment recipe, with the speed options compared in the same run.

    python -m vqbench.bench train [--device cpu|cuda] [--recipes NAME ...] [--options fp32 bf16-mixed ...]
                                  [--steps N] [--warmup N] [--turn N] [--batch-size N] [--max-pixels N]

Each recipe (``+experiment=NAME``) is built with ``vqbench.build`` at its real resolution and trained through the
real ``TokenizerModule`` step under ``lightning.Trainer.fit``: generator step and, for the GAN recipes, discriminator
step (``loss.adversarial.start_step=0`` forces the adversarial part on, the cost after the start step). Images are
random tensors already on the device, so data loading is not measured here (``python -m vqbench.bench data``).
LPIPS uses a randomly initialised VGG16 (``loss.perceptual.pretrained=false``): same FLOPs, no download.

Every option gets its own copy of the model; after a warm-up (which includes compilation), the options take turns
of ``--turn`` steps until each has had ``--steps`` timed steps, so a change in the machine's load affects them alike.
Model FLOPs per image are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one full eager fp32 step
(matmuls, convolutions and attention, forward and backward; elementwise work is not counted, as usual for MFU).
MFU = achieved FLOP/s / the device's peak: on CUDA the dense tensor-core (bf16, TF32) or fp32 peak of the device
from ``PEAK_TFLOPS``; on a CPU the fp32 matmul rate measured in the same run.

Results go to docs/benchmarks/train-<device>.json and the "train (<device>)" section of docs/benchmarks.md
(with ``--name NAME``: train-<device>-NAME.json and the section "train (<device>, NAME)").
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field

from torch.utils.data import IterableDataset

from vqbench.bench.common import DOCS, ROOT, device_name, load_average, write_section

#: The speed options: one lever each on top of the plain path (IEEE fp32, eager, NCHW, PyTorch's default Adam,
#: deterministic kernels: the base config), except ``recipe``, the recipe's own fast path (conf/experiment/*.yaml).
PLAIN = [
    "trainer.precision=32-true",
    "trainer.deterministic=warn",
    "trainer.benchmark=null",
    "performance.compile=false",
    "performance.channels_last=false",
    "performance.tf32=false",
    "performance.fused_adam=false",
]
OPTIONS = {
    "fp32": PLAIN,
    "bf16-mixed": [*PLAIN, "trainer.precision=bf16-mixed"],
    "compile": [*PLAIN, "performance.compile=true"],
    "channels_last": [*PLAIN, "performance.channels_last=true"],
    "fused-adam": [*PLAIN, "performance.fused_adam=true"],
    "tf32": [*PLAIN, "performance.tf32=true"],
    "nondeterministic": [*PLAIN, "trainer.deterministic=false", "trainer.benchmark=true"],
    "recipe": [],
    "recipe+bf16": ["trainer.precision=bf16-mixed"],
}
DEFAULT_OPTIONS = {
    "cpu": ["fp32", "bf16-mixed", "compile", "channels_last", "fused-adam"],
    "cuda": [
        "fp32",
        "tf32",
        "bf16-mixed",
        "compile",
        "channels_last",
        "fused-adam",
        "nondeterministic",
        "recipe",
        "recipe+bf16",
    ],
}
#: Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: (fp32 on CUDA cores, TF32 tensor cores, bf16 tensor
#: cores). Matched against torch.cuda.get_device_name() in this order; --peak-tflops covers any other device.
PEAK_TFLOPS = [
    ("H100 PCIe", (51.2, 378.0, 756.0)),
    ("H100 NVL", (60.0, 417.5, 835.5)),
    ("H100", (66.9, 494.7, 989.4)),  # SXM
    ("H200", (66.9, 494.7, 989.4)),
    ("A100", (19.5, 156.0, 312.0)),
    ("L40S", (91.6, 183.0, 362.1)),
    ("L4", (30.3, 60.0, 121.0)),
    ("A10", (31.2, 62.5, 125.0)),
]


def recipes() -> list[str]:
    return sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))


def compose_recipe(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+experiment={name}", *overrides])


def bench_overrides(cfg, batch_size: int, adversarial: bool = True) -> list[str]:
    """What every option of a recipe shares: the batch, LPIPS without downloaded weights, and for a GAN recipe the
    adversarial part on from the first step (or, ``adversarial=False``, never: the steps before the start step)."""
    overrides = [f"data.batch_size={batch_size}"]
    if cfg.loss.perceptual.weight > 0:
        overrides.append("loss.perceptual.pretrained=false")
    if cfg.loss.get("adversarial") is not None:
        overrides.append(f"loss.adversarial.start_step={0 if adversarial else 2**62}")
    return overrides


def peak_flops(device: str, precision: str, tf32: bool, measured_cpu_peak: float, override: float | None) -> float:
    """The FLOP/s an option's MFU is a fraction of (see the module docstring)."""
    if override:
        return override * 1e12
    if device == "cpu":
        return measured_cpu_peak
    import torch

    name = torch.cuda.get_device_name()
    for key, (fp32, tf32_peak, bf16) in PEAK_TFLOPS:
        if key in name:
            return 1e12 * (bf16 if precision.startswith("bf16") else tf32_peak if tf32 else fp32)
    return math.nan


def measure_cpu_matmul_peak(size: int = 2048, repeats: int = 2) -> float:
    """The best of ``repeats`` fp32 size x size matmuls, in FLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _rss_bytes() -> int:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) * 1024


@dataclass
class StepRecord:
    """Seconds, the memory high-water mark above what was resident at the start, and the loss, per step."""

    seconds: list[float] = field(default_factory=list)
    peak_above_start: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def _timer(device: str, record: StepRecord, flops: list[float] | None = None):
    """A callback timing each training step (synchronised on CUDA); with ``flops``, counting the step's FLOPs."""
    import lightning as L
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.resident = torch.cuda.memory_allocated()
            else:
                self.resident = _rss_bytes()
                _reset_peak_rss()
            self.counter = FlopCounterMode(display=False) if flops is not None else None
            if self.counter is not None:
                self.counter.__enter__()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if device == "cuda":
                torch.cuda.synchronize()
            record.seconds.append(time.perf_counter() - self.start)
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
                flops.append(float(self.counter.get_total_flops()))
            peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss_bytes()
            record.peak_above_start.append(peak - self.resident)
            record.losses.append(float(outputs["loss"]))  # after the timing: a host-device sync

    return StepTimer()


class Contender:
    """One option of one recipe: its own TokenizerModule, trained a few steps at a time through Trainer.fit."""

    def __init__(self, recipe: str, option: str, overrides: list[str], device: str, images):
        import lightning as L

        from vqbench.build import build_training_module, check_config
        from vqbench.training.performance import set_tf32

        self.option = option
        self.cfg = compose_recipe(recipe, [*overrides, *OPTIONS[option]])
        check_config(self.cfg)
        self.device = device
        self.images = images
        L.seed_everything(0, verbose=False)
        set_tf32(self.cfg.performance.tf32)
        self.module = build_training_module(self.cfg)
        # the common start of every contender (same seed), kept by the plain one to measure updates against
        tokenizer = self.module.tokenizer.state_dict()
        self.initial = {k: v.detach().cpu().clone() for k, v in tokenizer.items()} if option == "fp32" else None
        # The optimizers (and their Adam moments) carry over from one fit to the next, as in one long training.
        configure = self.module.configure_optimizers
        configured = []

        def configure_once():
            if not configured:
                configured.append(configure())
            return configured[0]

        self.module.configure_optimizers = configure_once
        self.optimizers = configured
        self.steps = StepRecord()

    def fit(self, steps: int, record: StepRecord, flops: list[float] | None = None) -> None:
        import lightning as L
        from torch.utils.data import DataLoader

        from vqbench.training.performance import set_tf32

        set_tf32(self.cfg.performance.tf32)  # a process-wide flag: each contender sets its own before its turn
        trainer = L.Trainer(
            accelerator="gpu" if self.device == "cuda" else "cpu",
            devices=1,
            precision=self.cfg.trainer.precision,
            deterministic=self.cfg.trainer.deterministic,
            benchmark=self.cfg.trainer.get("benchmark"),
            max_steps=steps,
            max_epochs=-1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[_timer(self.device, record, flops)],
        )
        trainer.fit(self.module, DataLoader(self.images, batch_size=None))

    def state_bytes(self) -> int:
        """Weights, buffers, gradients and optimizer state: what stays resident between steps."""
        import torch

        tensors = list(self.module.parameters()) + list(self.module.buffers())
        tensors += [p.grad for p in self.module.parameters() if p.grad is not None]
        for optimizer in _optimizers(self.optimizers):
            for state in optimizer.state.values():
                tensors += [t for t in state.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in tensors)


def _differences(contender: Contender, plain: Contender) -> dict:
    """After the same steps from the same weights: how far the option's training went from the plain path's.

    update_difference = ||u - u_plain|| / ||u_plain||, u = the tokenizer's weights minus their common start (all
    tensors as one vector), and the |difference| of the last step's loss. (The largest difference of a single
    weight says little: Adam moves a weight by about lr whatever the size of its gradient, so rounding noise in a
    near-zero gradient flips a step of 2 lr.)
    """
    import torch

    weights = contender.module.tokenizer.state_dict()
    reference = plain.module.tokenizer.state_dict()
    keys = [k for k, v in reference.items() if v.is_floating_point()]
    start = torch.cat([plain.initial[k].flatten().double() for k in keys])
    update = torch.cat([weights[k].flatten().double().cpu() for k in keys]) - start
    update_plain = torch.cat([reference[k].flatten().double().cpu() for k in keys]) - start
    return {
        "update_difference": float((update - update_plain).norm() / update_plain.norm()),
        "loss_difference": abs(contender.steps.losses[-1] - plain.steps.losses[-1]),
    }


def _optimizers(configured: list) -> list:
    if not configured:
        return []
    result = configured[0]
    optimizers = result[0] if isinstance(result, tuple) else result
    return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]


def synthetic_batches(cfg, batch_size: int, device: str, count: int = 2):
    """``count`` batches of random images in [-1, 1] on the device, cycled by the loader."""
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    batches = [torch.rand(shape, generator=generator).mul_(2).sub_(1).to(device) for _ in range(count)]
    return Cycle(batches)


class Cycle(IterableDataset):
    """An endless dataset of a few ready batches (one epoch never ends, so one fit can take any number of steps)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


def default_batch_size(cfg, device: str, max_pixels: int | None) -> int:
    recipe_batch = int(cfg.data.batch_size)
    if device == "cuda" or not max_pixels:
        return recipe_batch
    return max(1, min(recipe_batch, max_pixels // (cfg.data.resolution**2)))


def bench_recipe(recipe: str, args: argparse.Namespace) -> list[dict]:
    import torch

    base = compose_recipe(recipe, [])
    batch = args.batch_size or default_batch_size(base, args.device, args.max_pixels)
    while True:
        try:
            return _bench_recipe_at(recipe, base, batch, args)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            print(f"{recipe}: batch {batch} does not fit; trying {batch // 2}", flush=True)
        # out of the except block, where the traceback no longer holds the models of the failed attempt
        batch //= 2
        gc.collect()
        torch.cuda.empty_cache()


def _bench_recipe_at(recipe: str, base, batch: int, args: argparse.Namespace) -> list[dict]:
    images = synthetic_batches(base, batch, args.device)
    shared = bench_overrides(base, batch)
    contenders = [Contender(recipe, option, shared, args.device, images) for option in args.options]
    warmup = {}
    for contender in contenders:
        record = StepRecord()
        contender.fit(args.warmup, record)
        warmup[contender.option] = sum(record.seconds)
        print(f"{recipe} {contender.option}: warm-up {warmup[contender.option]:.1f} s", flush=True)
    timed, cpu_peaks = 0, []
    while timed < args.steps:
        turn = min(args.turn, args.steps - timed)
        for contender in contenders:
            contender.fit(turn, contender.steps)
        timed += turn
        if args.device == "cpu":  # the CPU's peak under the same load as the steps of this round
            cpu_peaks.append(measure_cpu_matmul_peak())
    cpu_peak = max(cpu_peaks, default=math.nan)
    # Every contender started from the same weights and saw the same batches: compare them with the plain path.
    plain = next((c for c in contenders if c.option == "fp32"), None)
    differences = {c.option: _differences(c, plain) for c in contenders} if plain else {}
    flops: list[float] = []
    counted = next((c for c in contenders if not c.cfg.performance.compile), None)
    if counted is None:  # every option compiles: count on a plain eager copy
        counted = Contender(recipe, "fp32", shared, args.device, images)
    counted.fit(1, StepRecord(), flops)
    flops_per_image = flops[0] / batch
    gan = base.loss.get("adversarial") is not None
    if gan:  # the steps before the start step: generator only
        generator_only = Contender(recipe, "fp32", bench_overrides(base, batch, adversarial=False), args.device, images)
        generator_only.fit(1, StepRecord(), flops)
        del generator_only
    rows = []
    for contender in contenders:
        seconds = statistics.median(contender.steps.seconds)
        cfg = contender.cfg
        peak = peak_flops(args.device, cfg.trainer.precision, cfg.performance.tf32, cpu_peak, args.peak_tflops)
        achieved = flops_per_image * batch / seconds
        rows.append(
            {
                "recipe": recipe,
                "option": contender.option,
                "resolution": int(cfg.data.resolution),
                "batch_size": batch,
                "recipe_batch_size": int(base.data.batch_size),
                "precision": cfg.trainer.precision,
                "compile": cfg.performance.compile,
                "channels_last": cfg.performance.channels_last,
                "tf32": cfg.performance.tf32,
                "fused_adam": cfg.performance.fused_adam,
                "adversarial": cfg.loss.get("adversarial") is not None,
                "timed_steps": len(contender.steps.seconds),
                "step_seconds": seconds,
                "step_seconds_all": contender.steps.seconds,
                "steps_per_s": 1 / seconds,
                "images_per_s": batch / seconds,
                "warmup_seconds": warmup[contender.option],
                "state_bytes": contender.state_bytes(),
                "step_peak_bytes": max(contender.steps.peak_above_start),
                "flops_per_image": flops_per_image,
                "flops_per_image_generator_only": flops[1] / batch if gan else flops_per_image,
                "achieved_flops": achieved,
                "peak_flops": peak,
                "mfu": achieved / peak,
                "trained_steps": args.warmup + args.steps,
                **differences.get(contender.option, {}),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "step_seconds_all"}), flush=True)
    fp32 = next((r for r in rows if r["option"] == "fp32"), None)
    for row in rows:
        row["speedup_vs_fp32"] = fp32["step_seconds"] / row["step_seconds"] if fp32 else None
    del contenders, counted
    gc.collect()
    return rows


#: Training images per epoch of the epoch-based recipes (the splits of docs/datasets.md), by data module.
TRAIN_IMAGES = {"celeba": 162_770, "ffhq": 60_000, "fashion_mnist": 55_000}


def projection(recipe: str, rows: list[dict], mfu: float, device: str = "H100") -> dict:
    """One row of the recipe's table on one GPU: total FLOPs / (MFU x peak), at the recipe's precision and in
    bf16-mixed, and the images/s its data loading must then deliver."""
    cfg = compose_recipe(recipe, [])
    batch = int(cfg.data.batch_size)
    if cfg.trainer.max_steps > 0:
        steps = int(cfg.trainer.max_steps)
    else:
        dataset = cfg.data.make_dataset._target_.split(".")[-2]
        steps = int(cfg.trainer.max_epochs) * (TRAIN_IMAGES[dataset] // batch)
    row = rows[0]
    start = int(cfg.loss.adversarial.start_step) if cfg.loss.get("adversarial") is not None else steps
    before, after = min(start, steps), max(0, steps - start)
    total = batch * (before * row["flops_per_image_generator_only"] + after * row["flops_per_image"])
    fp32, tf32, bf16 = dict(PEAK_TFLOPS)[device]
    recipe_peak = 1e12 * (bf16 if cfg.trainer.precision.startswith("bf16") else tf32 if cfg.performance.tf32 else fp32)
    precision = cfg.trainer.precision + (" + TF32" if cfg.performance.tf32 else "")
    seconds = total / (mfu * recipe_peak)
    return {
        "recipe": recipe,
        "batch_size": batch,
        "steps": steps,
        "adversarial_from": start if start < steps else None,
        "total_flops": total,
        "precision": precision,
        "peak_flops": recipe_peak,
        "assumed_mfu": mfu,
        "seconds": seconds,
        "seconds_bf16": total / (mfu * 1e12 * bf16),
        "images_per_s_needed": batch * steps / seconds,
        "images_per_s_needed_bf16": batch * steps / (total / (mfu * 1e12 * bf16)),
    }


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def projection_markdown(projections: list[dict], mfu: float) -> str:
    fp32, tf32, bf16 = dict(PEAK_TFLOPS)["H100"]
    lines = [
        f"One row of each table on one H100 SXM: total model FLOPs (FLOPs/image from the table above, counted on this "
        f"machine, x the recipe's batch x its steps) / ({mfu:.0%} assumed MFU x the dense peak: {bf16:g} TFLOP/s "
        f"bf16, {tf32:g} TF32, {fp32:g} fp32). GAN recipes count the generator-only step before the adversarial "
        "start and the full step after it. The assumed MFU is a guess for well-fed convolutional autoencoders; "
        "`--device cuda` measures the real one. Small models at small resolution (SimpleCNN, lattice_cnn) are "
        "unlikely to reach it, so their times are lower bounds. Images/s needed = what the data loaders must "
        "deliver to keep the GPU busy at that speed.",
        "",
        "| recipe | batch | steps | PFLOP total | precision | time | images/s needed | time in bf16-mixed "
        "| images/s needed (bf16) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in projections:
        steps = f"{p['steps']:,}" + (f" (GAN from {p['adversarial_from']:,})" if p["adversarial_from"] else "")
        lines.append(
            f"| {p['recipe']} | {p['batch_size']} | {steps} | {p['total_flops'] / 1e15:,.0f} | {p['precision']} "
            f"| {_duration(p['seconds'])} | {p['images_per_s_needed']:,.0f} | {_duration(p['seconds_bf16'])} "
            f"| {p['images_per_s_needed_bf16']:,.0f} |"
        )
    return "\n".join(lines)


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Device: {meta['device_name']}; {meta['load']}; torch {meta['torch']}, lightning {meta['lightning']}. "
        f"Peak for MFU: {meta['peak_note']}.",
        f"Timed steps per option: {meta['steps']} (median shown), taken in turns of {meta['turn']} across the options "
        f"after {meta['warmup']} warm-up step(s); 'first steps' is the warm-up time, compilation included. "
        "FLOPs/image: FlopCounterMode on one eager fp32 step (forward + backward of generator, LPIPS and "
        "discriminator; matmuls and convolutions). Memory: weights, gradients, Adam moments and buffers, plus the "
        "step's high-water mark above them ("
        + ("CUDA allocations" if meta["device"] == "cuda" else "resident set")
        + "). GAN recipes run with the adversarial part on (start_step=0); LPIPS's VGG16 is randomly initialised.",
        "",
        "| recipe | px | batch | option | step | steps/s | images/s | memory | GFLOP/image | TFLOP/s | MFU "
        "| vs fp32 | first steps | update diff | loss diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = f"{r['speedup_vs_fp32']:.2f}x" if r.get("speedup_vs_fp32") else "—"
        mfu = "—" if math.isnan(r["mfu"]) else f"{100 * r['mfu']:.1f}%"
        weight_diff = f"{r['update_difference']:.1e}" if "update_difference" in r else "—"
        loss_diff = f"{r['loss_difference']:.1e}" if "loss_difference" in r else "—"
        lines.append(
            f"| {r['recipe']} | {r['resolution']} | {r['batch_size']} | {r['option']} | "
            f"{r['step_seconds'] * 1000:,.0f} ms | {r['steps_per_s']:.3g} | {r['images_per_s']:.3g} | "
            f"{_bytes(r['state_bytes'] + r['step_peak_bytes'])} | {r['flops_per_image'] / 1e9:,.1f} | "
            f"{r['achieved_flops'] / 1e12:.3g} | {mfu} | {speedup} | {r['warmup_seconds']:.0f} s | {weight_diff} "
            f"| {loss_diff} |"
        )
    return "\n".join(lines)


def bench_train(args: argparse.Namespace) -> int:
    import lightning
    import torch

    for noisy in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device; run on a GPU machine or use --device cpu")
        return 2
    args.options = args.options or DEFAULT_OPTIONS[args.device]
    defaults = {"cpu": (1, 2, 1), "cuda": (3, 10, 5)}[args.device]
    args.warmup = args.warmup if args.warmup is not None else defaults[0]
    args.steps = args.steps if args.steps is not None else defaults[1]
    args.turn = args.turn if args.turn is not None else defaults[2]
    load_before = load_average()
    rows, projections = [], []
    for recipe in args.recipes or recipes():
        recipe_rows = bench_recipe(recipe, args)
        rows += recipe_rows
        projections.append(projection(recipe, recipe_rows, args.assumed_mfu))
    if args.device == "cpu":
        peaks = ", ".join(
            f"{r['recipe']} {r['peak_flops'] / 1e9:.0f}" for r in rows if r["option"] == rows[0]["option"]
        )
        peak_note = (
            "the fastest 2048x2048 fp32 matmul, measured after each round of steps of the recipe's options, in "
            f"GFLOP/s: {peaks} (also the reference of the bf16 option)"
        )
    elif args.peak_tflops:
        peak_note = f"{args.peak_tflops} TFLOP/s (--peak-tflops)"
    else:
        peak_note = "NVIDIA's dense datasheet peak of the device for the option's precision (bf16, TF32 or fp32)"
    meta = {
        "device": args.device,
        "device_name": device_name(args.device),
        "load": f"load average {load_before:.1f} at the start, {load_average():.1f} at the end",
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "command": " ".join(["python -m vqbench.bench", *sys.argv[1:]]),
        "warmup": args.warmup,
        "steps": args.steps,
        "turn": args.turn,
        "peak_note": peak_note,
    }
    suffix = f"-{args.name}" if args.name else ""
    out = DOCS / "benchmarks" / f"train-{args.device}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows, "projection": projections}, indent=2) + "\n")
    table = markdown(rows, meta) + "\n\n" + projection_markdown(projections, args.assumed_mfu)
    print(table)
    write_section(f"train ({args.device}{', ' + args.name if args.name else ''})", table, meta["command"])
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--recipes", nargs="*", choices=recipes(), help="default: every conf/experiment recipe")
    parser.add_argument("--options", nargs="*", choices=list(OPTIONS), help="default: " + str(DEFAULT_OPTIONS))
    parser.add_argument("--steps", type=int, help="timed steps per option (default: 2 on cpu, 10 on cuda)")
    parser.add_argument("--warmup", type=int, help="untimed first steps per option (default: 1 on cpu, 3 on cuda)")
    parser.add_argument("--turn", type=int, help="steps per turn of each option (default: 1 on cpu, 5 on cuda)")
    parser.add_argument("--batch-size", type=int, help="the same batch for every recipe (default: see --max-pixels)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=65536,
        help="on cpu, the recipe's batch capped at this many pixels per batch (1 image at 256x256); on cuda the "
        "recipe's batch, halved until it fits",
    )
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for a GPU not in PEAK_TFLOPS")
    parser.add_argument("--assumed-mfu", type=float, default=0.3, help="MFU of the projected H100 wall times")
    parser.add_argument("--name", help="keep this run apart: train-<device>-NAME.json and its own section")
