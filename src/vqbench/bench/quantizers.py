"""Benchmarks (not tests): forward+backward time and peak memory of our quantizers vs vector-quantize-pytorch.

    python -m vqbench.bench quantizers [--repeats 3] [--memory-limit-gb 16] [--case-timeout-s 600] [--device cpu]
                                       [--only lfq ...]

Each (implementation, K, d, N) case runs in a fresh subprocess so its peak memory is its own, under an address-space
limit so that a case that needs more memory than the machine has fails with "out of memory" instead of taking the
machine down, and under a time limit so that a case that would take hours is reported as "out of time". Results are
written as JSON to docs/benchmarks/quantizers-<device>.json and as a table into docs/benchmarks.md (between the
markers of that section); ratios compare the two implementations measured in the same run. Needs the benchmark
extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

from vqbench.bench.common import DOCS, device_name, load_average, write_section

#: FSQ levels with the same K as the VQ rows.
FSQ_LEVELS = {512: [8, 8, 8], 16384: [8, 8, 8, 6, 5]}
#: (K, d, N) per quantizer: SimpleCNN's 512 x 64 on 256 images of 16x16 tokens, LlamaGen-size codebooks, and for LFQ
#: MAGVIT-v2-size codebooks (2^16, 2^18). d is the width the quantizer sees (FSQ: levels, LFQ: bits = log2 K).
SIZES = {
    "vq": [(512, 64, 65536), (16384, 8, 16384), (16384, 8, 65536)],
    "ema": [(512, 64, 65536), (16384, 8, 16384), (16384, 8, 65536)],
    "fsq": [(512, 3, 65536), (16384, 5, 65536)],
    "lfq": [(512, 9, 65536), (2**14, 14, 16384), (2**14, 14, 65536), (2**16, 16, 65536), (2**18, 18, 65536)],
    # the options and quantizers of issue 24, at sizes a shared 2-core machine measures in minutes
    "vq_rotation": [(512, 64, 16384), (16384, 8, 4096)],
    "vq_dead_codes": [(512, 64, 16384), (16384, 8, 4096)],
    "vq_kmeans": [(512, 64, 16384)],
    "bsq": [(512, 9, 16384), (2**14, 14, 4096)],
    "ibq": [(512, 64, 16384), (16384, 8, 4096)],
}
#: (ours, theirs); theirs None where vector-quantize-pytorch has no such method (IBQ)
PAIRS = [
    ("vq", "vqp_vq"),
    ("ema", "vqp_ema"),
    ("fsq", "vqp_fsq"),
    ("lfq", "vqp_lfq"),
    ("vq_rotation", "vqp_vq_rotation"),
    ("vq_dead_codes", "vqp_vq_dead_codes"),
    ("vq_kmeans", "vqp_vq_kmeans"),
    ("bsq", "vqp_bsq"),
    ("ibq", None),
]
#: vector-quantize-pytorch's default dead-code threshold pairing: restart below 2 (EMA of per-batch counts)
DEAD_CODE_THRESHOLD = 2.0


def _lfq_bits(size: int) -> int:
    return int(math.log2(size))


def _build(impl: str, size: int, dim: int):
    """Returns (module, input width). Competitor settings follow the issue: rotation trick off, EMA decay 0.99."""
    if impl == "vq":
        from vqbench.quantizers import VectorQuantizer

        return VectorQuantizer(size, dim), dim
    if impl == "ema":
        from vqbench.quantizers import EMAVectorQuantizer

        return EMAVectorQuantizer(size, dim, decay=0.99), dim
    if impl == "fsq":
        from vqbench.quantizers import FSQ

        levels = FSQ_LEVELS[size]
        return FSQ(len(levels), levels=levels), len(levels)
    if impl == "lfq":
        from vqbench.quantizers import LookupFreeQuantizer

        bits = _lfq_bits(size)
        return LookupFreeQuantizer(bits, bits=bits), bits
    if impl in ("vq_rotation", "vq_dead_codes", "vq_kmeans"):
        from vqbench.quantizers import VectorQuantizer

        options = {
            "vq_rotation": {"rotation_trick": True},
            "vq_dead_codes": {"dead_code_threshold": DEAD_CODE_THRESHOLD},
            "vq_kmeans": {"init": "kmeans", "kmeans_iterations": 10},
        }[impl]
        return VectorQuantizer(size, dim, **options), dim
    if impl == "bsq":
        from vqbench.quantizers import BinarySphericalQuantizer

        bits = _lfq_bits(size)
        return BinarySphericalQuantizer(bits, bits=bits), bits
    if impl == "ibq":
        from vqbench.quantizers import IndexBackpropagationQuantizer

        return IndexBackpropagationQuantizer(size, dim), dim
    import vector_quantize_pytorch as vqp

    if impl in ("vqp_vq_rotation", "vqp_vq_dead_codes", "vqp_vq_kmeans"):
        options = {
            "vqp_vq_rotation": {"rotation_trick": True},
            "vqp_vq_dead_codes": {"rotation_trick": False, "threshold_ema_dead_code": DEAD_CODE_THRESHOLD},
            "vqp_vq_kmeans": {"rotation_trick": False, "kmeans_init": True, "kmeans_iters": 10},
        }[impl]
        module = vqp.VectorQuantize(
            dim=dim, codebook_size=size, learnable_codebook=True, ema_update=False, commitment_weight=0.25, **options
        )
        return module, dim
    if impl == "vqp_bsq":
        bits = _lfq_bits(size)
        module = vqp.LFQ(
            dim=bits, codebook_size=2**bits, spherical=True, entropy_loss_weight=0.1, commitment_loss_weight=0.0
        )
        return module, bits

    if impl == "vqp_vq":
        module = vqp.VectorQuantize(
            dim=dim,
            codebook_size=size,
            learnable_codebook=True,
            ema_update=False,
            rotation_trick=False,
            commitment_weight=0.25,
        )
        return module, dim
    if impl == "vqp_ema":
        module = vqp.VectorQuantize(
            dim=dim, codebook_size=size, decay=0.99, rotation_trick=False, commitment_weight=0.25
        )
        return module, dim
    if impl == "vqp_fsq":
        levels = FSQ_LEVELS[size]
        return vqp.FSQ(levels=levels, dim=len(levels)), len(levels)
    if impl == "vqp_lfq":
        bits = _lfq_bits(size)
        module = vqp.LFQ(dim=bits, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25)
        return module, bits
    raise ValueError(f"unknown implementation {impl!r}")


def _step(impl: str, module, x):
    """One forward+backward with every auxiliary loss of the method. The k-means cases re-arm the initialisation
    first, so each step is one k-means on the batch plus the forward and backward."""
    import torch

    if impl == "vq_kmeans":
        module.kmeans.is_done = False
        module.kmeans.done.fill_(False)
    elif impl == "vqp_vq_kmeans":
        module._codebook.initted.data.copy_(torch.tensor(False))

    if impl.startswith("vqp_"):
        out = module(x.unsqueeze(0))
        codes = out[0]
        aux = out[2] if len(out) > 2 and torch.is_tensor(out[2]) else codes.new_zeros(())
        loss = codes.square().mean() + aux.sum()
    else:
        out = module(x.t().reshape(1, x.shape[1], x.shape[0], 1))
        loss = out.codes.square().mean() + sum(out.losses.values(), out.codes.new_zeros(()))
    loss.backward()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak_rss() -> None:
    """Resets the kernel's high-water mark of resident memory (Linux >= 4.0), so the peak that follows counts the
    measured steps only, not library code pages first touched by the warm-up."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) * 1024


def run_case(impl: str, size: int, dim: int, tokens: int, repeats: int, memory_limit_gb: float, device: str) -> dict:
    """Measured inside the child process."""
    import torch

    if device == "cpu":
        with open("/proc/self/status") as f:
            base = int(f.read().split("VmSize:")[1].split()[0]) * 1024
        limit = base + int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.manual_seed(0)
    result = {"impl": impl, "K": size, "d": dim, "N": tokens, "device": device}
    try:
        module, width = _build(impl, size, dim)
        module = module.to(device).train()
        x = torch.randn(tokens, width, device=device, requires_grad=True)
        _step(impl, module, x)  # warm-up
        x.grad = None
        module.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_cuda = torch.cuda.memory_allocated()
        else:
            rss_before = _rss_bytes()
            _reset_peak_rss()
        times = []
        # Fast cases repeat until at least a second of samples, so the median is not one scheduler hiccup.
        while len(times) < repeats or (sum(times) < 1.0 and len(times) < 500):
            x.grad = None
            module.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _step(impl, module, x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        result["seconds"] = statistics.median(times)
        if device == "cuda":
            result["peak_bytes"] = torch.cuda.max_memory_allocated() - base_cuda
        else:
            result["peak_bytes"] = _peak_rss_bytes() - rss_before
    except (RuntimeError, MemoryError) as error:
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        result["error"] = "out of memory"
    return result


def _run_in_subprocess(case: dict, timeout_s: float) -> dict:
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "vqbench.bench", "_case", json.dumps(case)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {**case, "error": f"out of time (> {timeout_s:g} s)"}
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {**case, "error": f"crashed: {tail[0]}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _fmt_case(row: dict | None) -> tuple[str, str]:
    if row is None:
        return "—", "—"
    if "error" in row:
        return row["error"], "—"
    return f"{row['seconds'] * 1000:.1f} ms", f"{row['peak_bytes'] / 2**20:.0f} MiB"


def _ratio(ours: dict | None, theirs: dict | None, key: str) -> str:
    if not ours or not theirs or "error" in ours:
        return "—"
    if "error" in theirs:
        return "theirs " + ("OOM" if "memory" in theirs["error"] else "out of time")
    return f"{theirs[key] / max(ours[key], 1e-12):.2f}x"


def markdown(results: list[dict], meta: dict) -> str:
    by_key = {(r["impl"], r["K"], r["N"]): r for r in results}  # (K, N) name a case: d follows from K where it varies
    lines = [
        f"Device: {meta['device_name']}; {meta['load']}; torch {meta['torch']}, "
        f"vector-quantize-pytorch {meta['vqp']}; "
        f"median of at least {meta['repeats']} forward+backward steps (at least 1 s of them) after one warm-up; peak = "
        + (
            "high-water mark of resident memory during the measured steps, over the resident memory before them."
            if meta["device"] == "cpu"
            else "max CUDA allocation during the measured steps."
        ),
        "Speed-up and memory ratio are theirs / ours (> 1 means ours is faster or smaller).",
        "",
        "| ours | theirs | K | d | N | ours time | theirs time | speed-up | ours peak | theirs peak | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ours_impl, theirs_impl in PAIRS:
        for size, dim, tokens in SIZES[ours_impl]:
            ours = by_key.get((ours_impl, size, tokens))
            theirs = by_key.get((theirs_impl, size, tokens))
            if ours is None and theirs is None:
                continue
            (ot, om), (tt, tm) = _fmt_case(ours), _fmt_case(theirs)
            theirs_name = theirs_impl.replace("vqp_", "vqp.") if theirs_impl else "(none)"
            lines.append(
                f"| {ours_impl} | {theirs_name} | {size} | {dim} | {tokens} | {ot} | {tt} "
                f"| {_ratio(ours, theirs, 'seconds')} | {om} | {tm} | {_ratio(ours, theirs, 'peak_bytes')} |"
            )
    runs = {}
    for row in results:
        runs.setdefault(row.get("run"), set()).add(row["impl"].replace("vqp_", ""))
    if len(runs) > 1:
        lines += ["", "Measured in more than one run (each pair's ratio within one run):"]
        lines += [f"- {', '.join(sorted(impls))}: {run}" for run, impls in runs.items()]
    return "\n".join(lines)


def _carried_over(path, results: list[dict]) -> list[dict]:
    """With --only: the earlier run's rows of the pairs not measured now (each pair's ratio stays within one run)."""
    if not path.is_file():
        return []
    previous = json.loads(path.read_text())
    measured = {pair for pair in PAIRS if any(r["impl"] in pair for r in results)}
    kept = [r for r in previous["results"] if not any(r["impl"] in pair for pair in measured)]
    earlier = f"an earlier run: `{previous['meta']['command']}`"
    return [{**r, "run": r.get("run", earlier)} for r in kept]


def bench_quantizers(args: argparse.Namespace) -> int:
    import torch

    try:
        from importlib.metadata import version

        import vector_quantize_pytorch  # noqa: F401

        vqp_version = version("vector-quantize-pytorch")
    except ImportError:
        print('error: vector-quantize-pytorch is not installed; pip install -e ".[bench]"', file=sys.stderr)
        return 2
    device = args.device
    load_before = load_average()
    results = []
    for ours_impl, theirs_impl in PAIRS:
        if args.only and ours_impl not in args.only:
            continue
        for size, dim, tokens in SIZES[ours_impl]:
            for impl in (ours_impl, theirs_impl):
                if impl is None:
                    continue
                case = {
                    "impl": impl,
                    "K": size,
                    "d": dim,
                    "N": tokens,
                    "repeats": args.repeats,
                    "memory_limit_gb": args.memory_limit_gb,
                    "device": device,
                }
                row = _run_in_subprocess(case, args.case_timeout_s)
                print(json.dumps(row), flush=True)
                results.append(row)
    load = f"load average {load_before:.1f} at the start, {load_average():.1f} at the end"
    command = " ".join(["python -m vqbench.bench", *sys.argv[1:]])
    for row in results:
        row["run"] = f"{time.strftime('%Y-%m-%d')}, {load}: `{command}`"
    meta = {
        "device": device,
        "device_name": device_name(device),
        "load": load,
        "torch": torch.__version__,
        "vqp": vqp_version,
        "repeats": args.repeats,
        "command": command,
    }
    out = DOCS / "benchmarks" / f"quantizers-{device}.json"
    results = _carried_over(out, results) + results if args.only else results
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = markdown(results, meta)
    print(table)
    write_section(f"quantizers ({device})", table, meta["command"])
    return 0
