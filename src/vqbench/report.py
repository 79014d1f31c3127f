"""Turns the metrics.json files under a run or sweep directory into a markdown table.

    python -m vqbench.report multirun/sweeps/celeba64_vq_dim --table celeba64_vq_dim [--out table.md]
    python -m vqbench.report multirun/2026-11-23/12-00-00 [--out table.md]

With ``--table NAME`` (one of ``vqbench.published``): the published table in its own layout (same rows, same columns),
each cell "measured / published (difference)"; published rows no job has finished are marked "—", and finished
jobs that match no published row are appended with "—" for the published side. Without it: one row per job, its
command-line overrides as columns, then its metrics. Partial sweeps give partial tables either way; the jobs that
failed (their failed.json: the error and the step) or have not finished are listed below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from vqbench.published import Column, PublishedTable, load_table, table_names
from vqbench.results import FAILED_FILE, INTERRUPTED_FILE, METRICS_FILE, read_metrics

#: Overrides that say how a job ran, not what it is; they would only add noise columns.
IGNORED_OVERRIDES = ("hydra.", "+eval", "ckpt")
MISSING = "—"


def _override_columns(overrides: list[str]) -> dict[str, str]:
    columns = {}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(IGNORED_OVERRIDES) and not override.startswith(IGNORED_OVERRIDES):
            columns[key] = value
    return columns


def _natural_order(path: Path) -> list[tuple[int, int, str]]:
    """Sort key: numeric folder names (Hydra's job numbers) by value, before any other names, which sort by text."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def collect(directory: Path) -> list[dict]:
    """One entry per metrics.json below ``directory``, in path order:
    {'job', 'kind', 'overrides', 'metrics', 'config', 'choices', 'written_at'}."""
    rows = []
    for path in sorted(directory.rglob(METRICS_FILE), key=_natural_order):
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
                "config": record.get("config", {}),
                "choices": record.get("choices", {}),
                "written_at": record.get("written_at", ""),
            }
        )
    return rows


def unfinished_jobs(directory: Path) -> list[str]:
    """One line per job below ``directory`` without a metrics.json: failed (with its error and step, from
    failed.json) or not finished (a Hydra job folder, ``.hydra/``, with neither file: running or interrupted)."""
    lines = []
    for hydra_dir in sorted(directory.rglob(".hydra"), key=lambda p: [str(s).zfill(12) for s in p.parts]):
        job = hydra_dir.parent
        if (job / METRICS_FILE).is_file():
            continue
        name = str(job.relative_to(directory)) if job != directory else "."
        failure = job / FAILED_FILE
        interruption = job / INTERRUPTED_FILE
        if not failure.is_file() and interruption.is_file():
            with contextlib.suppress(OSError, ValueError):
                record = read_metrics(interruption)
                lines.append(
                    f"- {name}: interrupted by {record.get('signal')} at step {record.get('step')} (checkpoint "
                    "saved): re-running the command resumes it"
                )
                continue
        if not failure.is_file():
            lines.append(f"- {name}: not finished (running, or interrupted: re-running the command resumes it)")
            continue
        try:
            record = read_metrics(failure)
        except (OSError, ValueError) as error:
            lines.append(f"- {name}: failed ({FAILED_FILE} unreadable: {error})")
            continue
        overrides = " ".join(o for o in record.get("overrides", []) if not o.startswith(IGNORED_OVERRIDES))
        step = "" if record.get("step") is None else f" at step {record['step']}"
        lines.append(f"- {name} ({overrides}): failed{step}: {record.get('error')}")
    return lines


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
        cells += [_format(row["metrics"][k]) if k in row["metrics"] else MISSING for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the published layout ------------------------------------------------------------------------------------------


def key_value(row: dict, key: str) -> Any:
    """A job's value for a table key: ``choice:GROUP`` (the composed option) or a dotted key of its config."""
    if key.startswith("choice:"):
        return row["choices"].get(key.removeprefix("choice:"))
    node: Any = row["config"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _same(measured: Any, published: Any) -> bool:
    if isinstance(published, float) or isinstance(measured, float):
        try:
            return abs(float(measured) - float(published)) < 1e-9
        except (TypeError, ValueError):
            return False
    return measured == published


def _cell(column: Column, measured: float | None, published: float | None) -> str:
    digits = 4 if column.decimals is None else column.decimals

    def show(value: float) -> str:
        return f"{value:,.{digits}f}{column.unit}"

    if column.key is None:  # a column vqbench does not measure
        return f"{MISSING} / {show(published)}" if published is not None else MISSING
    ours = None if measured is None else measured * column.scale
    if ours is None and published is None:
        return MISSING
    if ours is None:
        return f"{MISSING} / {show(published)}"
    if published is None:
        return f"{show(ours)} / {MISSING}"
    return f"{show(ours)} / {show(published)} ({ours - published:+,.{digits}f})"


def _label(column: Column, value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return column.names.get(value, str(value))


def published_table(rows: list[dict], table: PublishedTable) -> str:
    """The published table with "measured / published (measured − published)" in every metric cell."""
    matchable = [i for i, column in enumerate(table.keys) if column.key is not None]
    finished = [row for row in rows if any(m.startswith("test/") for m in row["metrics"])]
    used: set[int] = set()
    header = [c.label for c in table.keys] + [c.label for c in table.metrics]
    lines = [
        f"**{table.title}**: measured / published (difference)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def line(key_cells: list[str], measured: dict | None, values: list[float | None]) -> str:
        cells = list(key_cells)
        for column, published in zip(table.metrics, values, strict=True):
            value = None if measured is None or column.key is None else measured["metrics"].get(column.key)
            cells.append(_cell(column, value, published))
        return "| " + " | ".join(cells) + " |"

    for key_values, values in table.rows:
        matches = [
            i
            for i, row in enumerate(finished)
            if all(_same(key_value(row, table.keys[k].key), key_values[k]) for k in matchable)
        ]
        if len(matches) > 1:
            jobs = ", ".join(finished[i]["job"] for i in matches)
            print(f"warning: jobs {jobs} all match row {key_values}; using the newest", file=sys.stderr)
        used.update(matches)
        measured = max((finished[i] for i in matches), key=lambda r: r["written_at"]) if matches else None
        key_cells = [_label(column, value) for column, value in zip(table.keys, key_values, strict=True)]
        lines.append(line(key_cells, measured, values))
    for i, row in enumerate(finished):
        if i not in used:  # measured, but the published table has no such row
            key_cells = [_label(c, key_value(row, c.key) if c.key else None) for c in table.keys]
            lines.append(line(key_cells, row, [None] * len(table.metrics)))
    lines += ["", f"Source: {table.source}."]
    if table.note:
        lines.append(f"Note: {table.note}")
    if any(MISSING in cell_line for cell_line in lines if cell_line.startswith("| ")):
        lines.append(
            f"{MISSING}: not measured yet (no finished job for the row), or not measured here (the job's metrics.json "
            "says why under 'unavailable', e.g. missing LPIPS/Inception weights)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or sweep directory (searched recursively)")
    parser.add_argument("--table", help=f"lay out as a published table: {', '.join(table_names())}")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory; pass a run or sweep output directory", file=sys.stderr)
        return 2
    table = None
    if args.table is not None:
        try:
            table = load_table(args.table)
        except KeyError as error:
            print(f"error: {error.args[0]}", file=sys.stderr)
            return 2
    rows = collect(args.directory)
    unfinished = unfinished_jobs(args.directory)
    if not rows and table is None and not unfinished:
        print(f"error: no {METRICS_FILE} under {args.directory}; has any job of this sweep finished?", file=sys.stderr)
        return 1
    text = published_table(rows, table) if table is not None else markdown_table(rows) if rows else ""
    if unfinished:
        text += f"\n\nJobs not in the table ({len(unfinished)}):\n" + "\n".join(unfinished)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
