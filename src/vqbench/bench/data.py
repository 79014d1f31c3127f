"""Data-loading benchmark: images/s of the plain and the cached CelebA loaders.

    python -m vqbench.bench data [--images 4000] [--workers 2] [--root PATH]

Without ``--root`` it writes a CelebA-format folder (178x218 JPEGs of real photographs + list_eval_partition.txt)
into a temporary directory. Both loaders produce the CelebA-64 preprocessing (128x128 crop at 57, 25 -> 64x64) through
the same ImageDataModule, with the same workers and batch size; the first batch (worker start-up) is not timed.
Results go to docs/benchmarks/data-<host>.json and the "data" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from vqbench.bench.common import DOCS, cpu_model, write_section


def images_per_second(module, min_seconds: float) -> tuple[float, int]:
    """Iterates the train loader (epoch after epoch, persistent workers as in training) for at least ``min_seconds``
    after its first batch."""
    images, started = 0, None
    loader = module.train_dataloader()
    while True:
        for batch in loader:
            if started is None:
                started = time.perf_counter()  # the first batch pays for the workers' start
                continue
            images += batch.shape[0]
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds and images > 0:
                return images / elapsed, images


def bench_data(args: argparse.Namespace) -> int:
    from vqbench.data.celeba import celeba_split
    from vqbench.data.fixtures import write_celeba
    from vqbench.data.module import ImageDataModule

    with tempfile.TemporaryDirectory() as scratch:
        if args.root:
            root = Path(args.root)
        else:
            root = write_celeba(Path(scratch) / "celeba", partitions=(args.images, 1, 1))
            print(f"wrote {args.images} CelebA-format JPEGs to {root}", flush=True)
        make = partial(celeba_split, root=str(root), resolution=64)
        common = {"batch_size": args.batch_size, "num_workers": args.workers, "flip": True}
        plain = ImageDataModule(make, **common)
        plain_rate, plain_images = images_per_second(plain, args.seconds)
        print(f"plain: {plain_rate:.0f} images/s", flush=True)
        cached = ImageDataModule(make, cache=True, cache_dir=str(Path(scratch) / "cache"), **common)
        started = time.perf_counter()
        cached.prepare_data()
        build_seconds = time.perf_counter() - started
        cached_rate, cached_images = images_per_second(cached, args.seconds)
        print(f"cached: {cached_rate:.0f} images/s (build {build_seconds:.1f} s)", flush=True)
        train_images = len(plain.dataset("train"))

    meta = {
        "machine": cpu_model(),
        "command": " ".join(["python -m vqbench.bench", *sys.argv[1:]]),
        "dataset": args.root or f"generated CelebA-format folder, {args.images} JPEGs of 178x218",
        "train_images": train_images,
        "workers": args.workers,
        "batch_size": args.batch_size,
    }
    results = {
        "plain_images_per_s": round(plain_rate, 1),
        "plain_images_timed": plain_images,
        "cached_images_per_s": round(cached_rate, 1),
        "cached_images_timed": cached_images,
        "cache_build_s": round(build_seconds, 2),
        "speedup": round(cached_rate / plain_rate, 2),
    }
    out = DOCS / "benchmarks" / "data-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    table = "\n".join(
        [
            f"Machine: {meta['machine']}; {meta['dataset']} ({train_images} train images); CelebA-64 preprocessing "
            "(128x128 crop at 57, 25, bilinear resize to 64x64); uint8 batches as they leave the loader "
            f"(normalisation and flip happen on the accelerator); batch {args.batch_size}, "
            f"{args.workers} loader workers; images/s after the first batch, at least {args.seconds:g} s per loader.",
            "",
            "| loader | images/s | speed-up |",
            "|---|---|---|",
            f"| plain (decode JPEG, crop, resize per image) | {plain_rate:,.0f} | 1.00x |",
            f"| cached (`data.cache=true`, memory-mapped uint8) | {cached_rate:,.0f} "
            f"| {cached_rate / plain_rate:.1f}x |",
            "",
            f"Building the cache took {build_seconds:.1f} s ({train_images / build_seconds:,.0f} images/s, "
            "once; later runs reuse it).",
        ]
    )
    print(table)
    write_section("data", table, meta["command"])
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=4000, help="JPEGs in the generated train split")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for both loaders")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per loader")
    parser.add_argument("--root", help="a real CelebA folder instead of the generated one")
