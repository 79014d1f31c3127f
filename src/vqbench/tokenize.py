"""Token export for downstream models: the token ids of every image of a split, in one memory-mapped array.

    python -m vqbench.tokenize ckpt=PATH out=DIR [split=train] [data=NAME] [data.root=PATH] [data.KEY=VALUE ...]
                               [flip=false] [batch_size=64] [device=cpu|cuda|cuda:N] [use_ema=false]
                               [chunk=1024] [shards=1 shard=0] [trusted_modules=[PREFIX,...]]

Every image goes through the evaluation preprocessing of the checkpoint's data config (the centre crop and resize
of ``+eval=true``, also for the train split, whose random training crops would make the export irreproducible);
``flip=true`` adds the horizontal flip of each image as a second copy. ``data=`` / ``data.KEY=`` change the data as
for an evaluation (``data.root=...`` alone keeps the checkpoint's preprocessing). The layout of ``DIR`` is described
in ``vqbench.tokens``; ``vqbench.tokens.TokenDataset(DIR)`` reads it back.

Images are processed in chunks of ``chunk`` images; a finished chunk is recorded in ``DIR/progress/``, so rerunning
the same command after an interruption continues with the unfinished chunks. ``shards=N shard=I`` (or torchrun's
``WORLD_SIZE`` / ``RANK``, with ``LOCAL_RANK`` picking the GPU) makes this process take chunks I, I+N, I+2N, ...:
N processes on N GPUs together write every row exactly once. Each process can be started, stopped and restarted on
its own; the last one to finish marks the export complete in ``metadata.json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

import vqbench
from vqbench.errors import VqbenchError
from vqbench.permissions import as_created
from vqbench.tokens import INDEX_FILE, METADATA_FILE, PROGRESS_DIR, TOKENS_FILE, index_lines, token_dtype

USAGE = (
    "usage: python -m vqbench.tokenize ckpt=PATH out=DIR [split=train] [data=NAME] [data.KEY=VALUE ...] "
    "[flip=false] [batch_size=64] [device=...] [use_ema=false] [chunk=1024] [shards=1 shard=0]"
)
OPTIONS = {
    "ckpt",
    "out",
    "split",
    "flip",
    "batch_size",
    "device",
    "use_ema",
    "chunk",
    "shards",
    "shard",
    "trusted_modules",
}
#: The metadata that must agree for a rerun to continue an export rather than mix two exports in one array.
INVARIANTS = ("checkpoint", "use_ema", "split", "images", "copies", "token_shape", "dtype", "chunk", "data")


def _boolean(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise VqbenchError(f"{key}={value}: expected true or false")
    return value.lower() == "true"


def _positive(key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise VqbenchError(f"{key}={value}: expected a positive integer")
    return int(value)


def _index(key: str, value: str) -> int:
    if not value.isdigit():
        raise VqbenchError(f"{key}={value}: expected an integer >= 0")
    return int(value)


def parse_arguments(argv: list[str]) -> tuple[dict, list[str]]:
    """(options, data overrides). Every argument is KEY=VALUE; data overrides are those of the data node."""
    options, data_overrides = {}, []
    for argument in argv:
        key, equals, value = argument.partition("=")
        if not equals:
            raise VqbenchError(f"'{argument}' is not KEY=VALUE. {USAGE}")
        if key.lstrip("+~").split(".")[0] == "data":
            data_overrides.append(argument)
        elif key in OPTIONS:
            options[key] = value
        else:
            raise VqbenchError(f"unknown argument '{argument}'. {USAGE}")
    for key in ("ckpt", "out"):
        if not options.get(key):
            raise VqbenchError(f"{key}=... is required. {USAGE}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    parsed = {
        "ckpt": options["ckpt"],
        "out": Path(options["out"]),
        "split": options.get("split", "train"),
        "flip": _boolean("flip", options.get("flip", "false")),
        "use_ema": _boolean("use_ema", options.get("use_ema", "false")),
        "batch_size": _positive("batch_size", options.get("batch_size", "64")),
        "chunk": _positive("chunk", options.get("chunk", "1024")),
        "shards": _positive("shards", options.get("shards", str(world))),
        "shard": _index("shard", options.get("shard", os.environ.get("RANK", "0"))),
        "device": options.get("device") or _default_device(),
        # [a,b] or a,b: module prefixes of your own classes the checkpoint may build (docs/checkpoints.md)
        "trusted_modules": [m.strip() for m in options.get("trusted_modules", "").strip("[]").split(",") if m.strip()],
    }
    out = parsed["out"]
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise VqbenchError(f"out={out}: {blocker} is a file, not a folder; give the folder to write the export into")
    if parsed["split"] not in ("train", "val", "test"):
        raise VqbenchError(f"split={parsed['split']}: expected train, val or test")
    if not 0 <= parsed["shard"] < parsed["shards"]:
        raise VqbenchError(f"shard={parsed['shard']} must be in 0..{parsed['shards'] - 1} (shards={parsed['shards']})")
    return parsed, data_overrides


def _default_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return "cpu"


def _create_once(path: Path, write) -> None:
    """Creates ``path`` with ``write(temporary path)`` unless it exists. The file appears complete or not at all
    (a hard link of the finished temporary file), and when shards race, one creates it and the others keep it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    as_created(fd)  # mkstemp's 0o600 would ignore the umask
    os.close(fd)
    try:
        write(Path(tmp))
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    as_created(fd)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _image_ids(dataset: Dataset, split: str) -> list[str]:
    """The file of each image relative to the data root, or SPLIT/N for in-memory datasets."""
    files, root = getattr(dataset, "files", None), getattr(dataset, "root", None)
    if files is not None and root is not None:
        return [str(Path(f).relative_to(root)) for f in files]
    return [f"{split}/{i}" for i in range(len(dataset))]


def _as_list(items: list) -> list:
    """A batch as the list of its items: unreadable images (None, with data.skip_corrupt=true) keep their place."""
    return items


class Export:
    """One process's share of an export into ``out`` (see the module docstring)."""

    def __init__(self, args: dict, data_overrides: list[str]):
        from vqbench.api import tokenizer_from_checkpoint
        from vqbench.build import build_datamodule
        from vqbench.checkpoint import check_targets, evaluation_config, load_checkpoint
        from vqbench.compose import compose_config
        from vqbench.data.evaluation_transform import evaluation_transform
        from vqbench.data.files import ImageFiles
        from vqbench.data.settings import check_data_settings

        self.args = args
        payload = load_checkpoint(args["ckpt"], trusted_modules=args["trusted_modules"])
        trained = OmegaConf.create(payload["vqbench_config"])
        live = compose_config(data_overrides)
        live.trusted_modules = args["trusted_modules"]
        self.config = evaluation_config(trained, live, data_overrides)
        check_targets(OmegaConf.to_container(self.config, resolve=False), args["trusted_modules"])
        check_data_settings(self.config.data)  # data.num_workers=-1 and the like: one line, not a traceback
        self.tokenizer = tokenizer_from_checkpoint(payload, args["ckpt"], args["use_ema"], args["device"], self.config)
        if self.tokenizer.codebook_size is None:
            raise VqbenchError(
                "this checkpoint's quantizer (the lattice) has no finite codebook; its tokens are unbounded integer "
                "vectors, which tokenize does not export"
            )
        datamodule = build_datamodule(self.config)
        self.dataset = datamodule.source(args["split"])
        if isinstance(self.dataset, ImageFiles):
            self.dataset.transform = evaluation_transform(self.config.data)  # also for train: deterministic crops
            self.num_workers = int(self.config.data.get("num_workers", 0))
        else:
            self.num_workers = 0  # in memory; random crops (sample train split) are seeded per chunk below
        self.step = payload.get("global_step")

    def metadata(self) -> dict:
        args, tok = self.args, self.tokenizer
        size = tok.resolution
        with torch.no_grad():
            probe = tok.encode(torch.zeros(1, tok.channels, size, size, device=tok.device))
        copies = ["original", "horizontal flip"] if args["flip"] else ["original"]
        return {
            "checkpoint": str(Path(args["ckpt"]).resolve()),
            "checkpoint_step": self.step,
            "use_ema": args["use_ema"],
            "split": args["split"],
            "images": len(self.dataset),
            "copies": copies,
            "rows": len(self.dataset) * len(copies),
            "token_grid": list(tok.token_grid),
            "token_shape": list(probe.shape[1:]),
            "codebook_size": tok.codebook_size,
            "dtype": token_dtype(tok.codebook_size).name,
            "chunk": args["chunk"],
            "data": OmegaConf.to_container(self.config.data, resolve=True),
            "config": OmegaConf.to_container(self.config, resolve=True),
            "files": {"tokens": TOKENS_FILE, "index": INDEX_FILE},
            "skipped_rows": [],
            "complete": False,
            "vqbench_version": vqbench.__version__,
        }

    def prepare(self) -> tuple[dict, np.memmap]:
        """The metadata, index and token array of ``out``: created by the first process, checked by the others."""
        out = self.args["out"]
        (out / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
        metadata = self.metadata()
        _create_once(out / METADATA_FILE, lambda tmp: tmp.write_text(json.dumps(metadata, indent=2) + "\n"))
        existing = json.loads((out / METADATA_FILE).read_text())
        different = [key for key in INVARIANTS if existing.get(key) != metadata[key]]
        if different:
            raise VqbenchError(
                f"{out} holds another export (it differs in {', '.join(different)}); give another out=DIR or delete "
                "that one"
            )
        ids = _image_ids(self.dataset, self.args["split"])
        lines = index_lines(ids, self.args["split"], len(metadata["copies"]))
        _create_once(
            out / INDEX_FILE, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines), encoding="ascii")
        )
        shape = (metadata["rows"], *metadata["token_shape"])
        dtype = np.dtype(metadata["dtype"])
        _create_once(out / TOKENS_FILE, lambda tmp: np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))
        return existing, np.load(out / TOKENS_FILE, mmap_mode="r+")

    def run(self) -> str:
        args = self.args
        metadata, tokens = self.prepare()
        images, chunk = metadata["images"], args["chunk"]
        chunks = math.ceil(images / chunk)
        progress = args["out"] / PROGRESS_DIR
        mine = [c for c in range(args["shard"], chunks, args["shards"]) if not (progress / f"{c:06d}.json").exists()]
        todo = sum(min(chunk, images - c * chunk) for c in mine)
        bar = tqdm(total=todo, unit="img", desc=f"tokenize shard {args['shard']}/{args['shards']}", file=sys.stderr)
        for c in mine:
            skipped = self._chunk(c, tokens, metadata, bar)
            tokens.flush()
            _write_json(progress / f"{c:06d}.json", {"shard": args["shard"], "skipped_rows": skipped})
        bar.close()
        return self._finish(metadata, chunks)

    def _chunk(self, c: int, tokens: np.memmap, metadata: dict, bar: tqdm) -> list[int]:
        """Encodes images [c * chunk, (c + 1) * chunk) into their rows; returns the rows of unreadable images."""

        images, chunk, tok = metadata["images"], metadata["chunk"], self.tokenizer
        indices = list(range(c * chunk, min(images, (c + 1) * chunk)))
        torch.manual_seed(c)  # the sample data's random train crops: the same crops on every run and shard
        loader = DataLoader(
            Subset(self.dataset, indices),
            batch_size=self.args["batch_size"],
            num_workers=self.num_workers,
            collate_fn=_as_list,
        )
        copies = len(metadata["copies"])
        skipped, position = [], 0
        for batch in loader:
            rows = [indices[position + i] for i, item in enumerate(batch) if item is not None]
            unreadable = [indices[position + i] for i, item in enumerate(batch) if item is None]
            skipped += [row + images * copy for row in unreadable for copy in range(copies)]
            if rows:
                x = tok.from_uint8(torch.stack([item for item in batch if item is not None]).to(tok.device))
                tokens[rows] = tok.encode(x).cpu().numpy()
                if copies == 2:
                    tokens[[row + images for row in rows]] = tok.encode(x.flip(-1)).cpu().numpy()
            position += len(batch)
            bar.update(len(batch))
        return skipped

    def _finish(self, metadata: dict, chunks: int) -> str:
        out = self.args["out"]
        done = sorted((out / PROGRESS_DIR).glob("*.json"))
        if len(done) < chunks:
            return f"shard {self.args['shard']} finished its chunks; {len(done)} of {chunks} are done in {out}"
        skipped = sorted(row for path in done for row in json.loads(path.read_text())["skipped_rows"])
        final = metadata | {
            "skipped_rows": skipped,
            "complete": True,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _write_json(out / METADATA_FILE, final)
        shape = "x".join(map(str, [metadata["rows"], *metadata["token_shape"]]))
        return (
            f"{out}: {metadata['images']} {metadata['split']} images x {len(metadata['copies'])} -> {TOKENS_FILE} "
            f"({shape}, {metadata['dtype']}, K = {metadata['codebook_size']}); {len(skipped)} rows skipped"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(argument in ("-h", "--help") for argument in argv):
        print(__doc__)
        return 0
    try:
        args, data_overrides = parse_arguments(argv)
        print(Export(args, data_overrides).run())
    except VqbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
