"""Benchmarks (not tests): forward+backward time and peak memory of our quantizers vs vector-quantize-pytorch.

    python -m vqbench.bench quantizers [--repeats 3] [--memory-limit-gb 16] [--device cpu]

Each (implementation, K, d, N) case runs in a fresh subprocess so its peak memory is its own, under an address-space
limit so that a case that needs more memory than the machine has fails with "out of memory" instead of taking the
machine down. Results are written as JSON to docs/benchmarks/quantizers-<device>.json and as a table into
docs/benchmarks.md (between the markers of that section); ratios compare the two implementations measured in the
same run. Needs the benchmark extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

from vqbench.bench.common import DOCS, write_section

#: (K, d, N) of the issue: SimpleCNN's 512 x 64 on 256 images of 16x16 tokens, and LlamaGen-size codebooks.
SIZES = [(512, 64, 65536), (16384, 8, 16384), (16384, 8, 65536)]
#: FSQ levels and LFQ bits with the same K.
FSQ_LEVELS = {512: [8, 8, 8], 16384: [8, 8, 8, 6, 5]}
LFQ_BITS = {512: 9, 16384: 14}
PAIRS = [("vq", "vqp_vq"), ("ema", "vqp_ema"), ("fsq", "vqp_fsq"), ("lfq", "vqp_lfq")]


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

        return LookupFreeQuantizer(LFQ_BITS[size], bits=LFQ_BITS[size]), LFQ_BITS[size]
    import vector_quantize_pytorch as vqp

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
        bits = LFQ_BITS[size]
        module = vqp.LFQ(dim=bits, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25)
        return module, bits
    raise ValueError(f"unknown implementation {impl!r}")


def _step(impl: str, module, x):
    """One forward+backward with every auxiliary loss of the method."""
    import torch

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


def _run_in_subprocess(case: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "vqbench.bench", "_case", json.dumps(case)], capture_output=True, text=True
    )
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
        return "theirs OOM"
    return f"{theirs[key] / max(ours[key], 1e-12):.2f}x"


def markdown(results: list[dict], meta: dict) -> str:
    by_key = {(r["impl"], r["K"], r["d"], r["N"]): r for r in results}
    lines = [
        f"Device: {meta['device_name']}; torch {meta['torch']}, vector-quantize-pytorch {meta['vqp']}; "
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
        for size, dim, tokens in SIZES:
            ours = by_key.get((ours_impl, size, dim, tokens))
            theirs = by_key.get((theirs_impl, size, dim, tokens))
            if ours is None and theirs is None:
                continue
            (ot, om), (tt, tm) = _fmt_case(ours), _fmt_case(theirs)
            shown_dim = {"fsq": len(FSQ_LEVELS[size]), "lfq": LFQ_BITS[size]}.get(ours_impl, dim)
            theirs_name = theirs_impl.replace("vqp_", "vqp.")
            lines.append(
                f"| {ours_impl} | {theirs_name} | {size} | {shown_dim} | {tokens} | {ot} | {tt} "
                f"| {_ratio(ours, theirs, 'seconds')} | {om} | {tm} | {_ratio(ours, theirs, 'peak_bytes')} |"
            )
    return "\n".join(lines)


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
    device_name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"
    )
    results = []
    for ours_impl, theirs_impl in PAIRS:
        if args.only and ours_impl not in args.only:
            continue
        for size, dim, tokens in SIZES:
            if ours_impl == "fsq" and (size, dim, tokens) == (16384, 8, 16384):
                continue  # FSQ does not depend on d; the larger N at K = 16384 is kept
            if ours_impl == "lfq" and (size, dim, tokens) == (16384, 8, 65536):
                continue  # the 2^14-way entropy over 65,536 tokens takes minutes per step on a CPU
            for impl in (ours_impl, theirs_impl):
                case = {
                    "impl": impl,
                    "K": size,
                    "d": dim,
                    "N": tokens,
                    "repeats": args.repeats,
                    "memory_limit_gb": args.memory_limit_gb,
                    "device": device,
                }
                row = _run_in_subprocess(case)
                print(json.dumps(row), flush=True)
                results.append(row)
    meta = {
        "device": device,
        "device_name": device_name,
        "torch": torch.__version__,
        "vqp": vqp_version,
        "repeats": args.repeats,
        "command": " ".join(["python -m vqbench.bench", *sys.argv[1:]]),
    }
    out = DOCS / "benchmarks" / f"quantizers-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = markdown(results, meta)
    print(table)
    write_section(f"quantizers ({device})", table, meta["command"])
    return 0
