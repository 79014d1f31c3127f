"""Data-loading benchmark: can the loaders feed the recipes?

    python -m vqbench.bench data [--images 4000] [--workers 2] [--seconds 5] [--core-seconds 3] [--root PATH]

Part 1, loaders: images/s of the plain and the cached CelebA loaders through the same ImageDataModule, with the same
workers and batch size; the first batch (worker start-up) is not timed. Without ``--root`` it writes a CelebA-format
folder (178x218 JPEGs of real photographs + list_eval_partition.txt) into a temporary directory.

Part 2, per CPU core: images/s of one process (one torch thread) reading, decoding and preprocessing the items of
each recipe's training split (and ImageNet's evaluation transform) from files in the real formats: CelebA JPEGs,
ImageNet JPEGs of 500x375 (the most common ImageNet size), FFHQ PNGs of 1024x1024, FashionMNIST IDX. A loader with
N workers delivers about N times that. With results of ``python -m vqbench.bench train`` present
(docs/benchmarks/train-*.json), the table adds the images/s each recipe needs on one H100 (its projection) and the
cores that takes.

Results go to docs/benchmarks/data-cpu.json and the "data" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from vqbench.bench.common import DOCS, cpu_model, load_average, write_section

#: Images written per generated dataset of part 2 (the rate does not depend on how many there are).
CORE_IMAGES = {"imagenet": 64, "ffhq": 8}


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


def per_core_rate(dataset, min_seconds: float) -> float:
    """Items per second of ``dataset[i]`` in this process on one torch thread (PIL decodes on one thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            dataset[count % len(dataset)]
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def _loaders_part(args: argparse.Namespace, root: Path, scratch: Path) -> dict:
    from vqbench.data.celeba import celeba_split
    from vqbench.data.module import ImageDataModule

    make = partial(celeba_split, root=str(root), resolution=64)
    common = {"batch_size": args.batch_size, "num_workers": args.workers, "flip": True}
    plain = ImageDataModule(make, **common)
    plain_rate, plain_images = images_per_second(plain, args.seconds)
    print(f"plain: {plain_rate:.0f} images/s", flush=True)
    cached = ImageDataModule(make, cache=True, cache_dir=str(scratch / "cache"), **common)
    started = time.perf_counter()
    cached.prepare_data()
    build_seconds = time.perf_counter() - started
    cached_rate, cached_images = images_per_second(cached, args.seconds)
    print(f"cached: {cached_rate:.0f} images/s (build {build_seconds:.1f} s)", flush=True)
    return {
        "train_images": len(plain.dataset("train")),
        "plain_images_per_s": round(plain_rate, 1),
        "plain_images_timed": plain_images,
        "cached_images_per_s": round(cached_rate, 1),
        "cached_images_timed": cached_images,
        "cache_build_s": round(build_seconds, 2),
        "speedup": round(cached_rate / plain_rate, 2),
    }


def _core_cases(celeba: Path, scratch: Path) -> list[tuple[str, list[str], object]]:
    """(what is read, the recipes whose training it feeds, a zero-argument dataset factory)."""
    from vqbench.data.celeba import celeba_split
    from vqbench.data.fashion_mnist import fashion_mnist_split
    from vqbench.data.ffhq import ffhq_split
    from vqbench.data.fixtures import write_fashion_mnist, write_imagenet, write_png_folder
    from vqbench.data.imagenet import imagenet_split
    from vqbench.data.module import ImageDataModule

    half = CORE_IMAGES["imagenet"] // 2
    imagenet = write_imagenet(scratch / "imagenet", classes=2, per_class=half, val=half, sizes=((500, 375),))
    ffhq = write_png_folder(scratch / "ffhq", CORE_IMAGES["ffhq"], 1024)
    fashion = write_fashion_mnist(scratch / "fashion_mnist", train=1000, test=10)

    def cached(make):
        module = ImageDataModule(make, cache=True, cache_dir=str(scratch / "core_cache"))
        module.prepare_data()
        return module.dataset("train")

    celeba64 = partial(celeba_split, root=str(celeba), crop="seed", resolution=64)
    celeba148 = partial(celeba_split, root=str(celeba), crop="llvq", resolution=148)
    ffhq1024 = partial(ffhq_split, root=str(ffhq), resolution=1024)
    vqgan = ["imagenet256_vqgan_taming", "imagenet256_vqgan_llamagen"]
    return [
        ("CelebA JPEG, 128 crop -> 64", ["celeba64_vqvae"], lambda: celeba64("train")),
        ("CelebA cached 64 (`data.cache=true`)", ["celeba64_vqvae"], lambda: cached(celeba64)),
        ("CelebA JPEG, centre crop 148", ["llvq_celeba"], lambda: celeba148("train")),
        ("CelebA cached 148 (`data.cache=true`)", ["llvq_celeba"], lambda: cached(celeba148)),
        ("FFHQ PNG 1024", ["llvq_ffhq1024"], lambda: ffhq1024("train")),
        ("FFHQ cached 1024 (`data.cache=true`)", ["llvq_ffhq1024"], lambda: cached(ffhq1024)),
        ("FashionMNIST IDX (in memory)", ["llvq_fashion_mnist"], lambda: fashion_mnist_split("train", str(fashion))),
        (
            "ImageNet JPEG 500x375, train random resized crop -> 256",
            vqgan,
            lambda: imagenet_split("train", str(imagenet), 256),
        ),
        ("ImageNet JPEG 500x375, eval centre crop -> 256", [], lambda: imagenet_split("val", str(imagenet), 256)),
        (
            "ImageNet JPEG 500x375, train random resized crop -> 128",
            ["imagenet128_fsq"],
            lambda: imagenet_split("train", str(imagenet), 128),
        ),
        ("ImageNet JPEG 500x375, eval centre crop -> 128", [], lambda: imagenet_split("val", str(imagenet), 128)),
    ]


def _needed_rates() -> dict[str, dict]:
    """The H100 projections of every recipe in the train benchmark's results (train-*.json)."""
    rates = {}
    for path in sorted((DOCS / "benchmarks").glob("train-*.json")):
        rates |= {p["recipe"]: p for p in json.loads(path.read_text()).get("projection", [])}
    return rates


def _core_part(args: argparse.Namespace, celeba: Path, scratch: Path) -> list[dict]:
    needed = _needed_rates()
    rows = []
    for name, feeds, make in _core_cases(celeba, scratch):
        rate = per_core_rate(make(), args.core_seconds)
        row = {"loader": name, "feeds": feeds, "images_per_s_per_core": round(rate, 1)}
        projections = [needed[r] for r in feeds if r in needed]
        if projections:
            row["needed_images_per_s"] = max(p["images_per_s_needed"] for p in projections)
            row["needed_images_per_s_bf16"] = max(p["images_per_s_needed_bf16"] for p in projections)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _core_table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    lines = [
        f"Per CPU core: one process, one torch thread, at least {args.core_seconds:g} s per row, reading, decoding "
        "and preprocessing training items as the loader workers do (uint8 out; normalisation and flip run on the "
        "accelerator). Needed: the images/s of the recipe's projected speed on one H100 (train section, assumed "
        "MFU), at the recipe's precision and in bf16-mixed; cores = needed / per-core rate.",
        "",
        "| what is read | feeds | images/s per core | needed (recipe precision) | cores | needed (bf16-mixed) "
        "| cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        feeds = ", ".join(r["feeds"]) or "evaluation"
        rate = r["images_per_s_per_core"]
        if "needed_images_per_s" in r:
            need, need_bf16 = r["needed_images_per_s"], r["needed_images_per_s_bf16"]
            cells = f"{need:,.0f} | {math.ceil(need / rate)} | {need_bf16:,.0f} | {math.ceil(need_bf16 / rate)}"
        else:
            cells = "— | — | — | —"
        lines.append(f"| {r['loader']} | {feeds} | {rate:,.0f} | {cells} |")
    return lines


def bench_data(args: argparse.Namespace) -> int:
    from vqbench.data.fixtures import write_celeba

    load_before = load_average()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        if args.root:
            root = Path(args.root)
        else:
            root = write_celeba(scratch / "celeba", partitions=(args.images, 1, 1))
            print(f"wrote {args.images} CelebA-format JPEGs to {root}", flush=True)
        loaders = _loaders_part(args, root, scratch)
        core_rows = _core_part(args, root, scratch)

    meta = {
        "machine": cpu_model(),
        "load": f"load average {load_before:.1f} at the start, {load_average():.1f} at the end",
        "command": " ".join(["python -m vqbench.bench", *sys.argv[1:]]),
        "dataset": args.root or f"generated CelebA-format folder, {args.images} JPEGs of 178x218",
        "workers": args.workers,
        "batch_size": args.batch_size,
    }
    out = DOCS / "benchmarks" / "data-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": loaders, "per_core": core_rows}, indent=2) + "\n")
    plain_rate, cached_rate = loaders["plain_images_per_s"], loaders["cached_images_per_s"]
    build_seconds, train_images = loaders["cache_build_s"], loaders["train_images"]
    table = "\n".join(
        [
            f"Machine: {meta['machine']}; {meta['load']}; {meta['dataset']} ({train_images} train images); CelebA-64 "
            "preprocessing (128x128 crop at 57, 25, bilinear resize to 64x64); uint8 batches as they leave the "
            f"loader (normalisation and flip happen on the accelerator); batch {args.batch_size}, "
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
            "",
            *_core_table(core_rows, args),
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
    parser.add_argument("--core-seconds", type=float, default=3.0, help="minimum timed seconds per per-core row")
    parser.add_argument("--root", help="a real CelebA folder instead of the generated one")
