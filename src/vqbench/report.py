"""Collects every metrics.json under a run or sweep directory into one markdown table.

    python -m vqbench.report multirun/2026-11-23/12-00-00 [--out table.md]

One row per job; the job's command-line overrides become columns (so a sweep over quantizer and codebook.dim gives
one column for each), followed by its metrics. Jobs that have not written metrics.json yet (failed or still
running) are simply absent, so a partial sweep still gives a partial table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vqbench.results import METRICS_FILE, read_metrics

#: Overrides that say how a job ran, not what it is; they would only add noise columns.
IGNORED_OVERRIDES = ("hydra.", "+eval", "ckpt")


def _override_columns(overrides: list[str]) -> dict[str, str]:
    columns = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(IGNORED_OVERRIDES) and not override.startswith(IGNORED_OVERRIDES):
            columns[key] = value
    return columns


def collect(directory: Path) -> list[dict]:
    """One entry per metrics.json below ``directory``, in path order: {'job', 'kind', 'overrides', 'metrics'}."""
    rows = []
    for path in sorted(directory.rglob(METRICS_FILE), key=lambda p: [int(s) if s.isdigit() else s for s in p.parts]):
        try:
            record = read_metrics(path)
        except (OSError, ValueError) as error:
            print(f"warning: skipping unreadable {path}: {error}", file=sys.stderr)
            continue
        rows.append(
            {
                "job": str(path.parent.relative_to(directory)) if path.parent != directory else ".",
                "kind": record.get("kind", "?"),
                "overrides": _override_columns(record.get("overrides", [])),
                "metrics": record.get("metrics", {}),
            }
        )
    return rows


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    override_keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    metric_keys = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    header = ["job", "kind", *override_keys, *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["job"], row["kind"]]
        cells += [row["overrides"].get(k, "") for k in override_keys]
        cells += [_format(row["metrics"][k]) if k in row["metrics"] else "—" for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or sweep directory (searched recursively)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory; pass a run or sweep output directory", file=sys.stderr)
        return 2
    rows = collect(args.directory)
    if not rows:
        print(f"error: no {METRICS_FILE} under {args.directory}; has any job of this sweep finished?", file=sys.stderr)
        return 1
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
