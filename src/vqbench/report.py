"""Turns the metrics.json files under a run or sweep directory into a markdown table.

    python -m vqbench.report multirun/sweeps/celeba64_vq_dim [--table celeba64_vq_dim] [--out table.md]
    python -m vqbench.report multirun/2026-11-23/12-00-00 [--out table.md] [--efficiency] [--plot FIGURES_DIR]

The jobs of a table's sweep (``python run.py -m +sweep=NAME``) name their table (``report_table``), so their report is
the published layout below without ``--table``; ``--table none`` gives the plain table.

Plain table: one row per job, its command-line overrides as columns, then its metrics; a column with the same
value in every job is folded into one line above the table. ``--efficiency`` adds the compression and cost columns of
metrics.json (tokens per image, bits per pixel, compression ratio, training images/s, wall time, peak memory).
``--plot DIR`` also draws every metric against the swept value (``vqbench.plots``), with the published numbers as
markers when ``--table`` names a table.

Published layout, ``--table NAME`` (the ``published:`` block of ``sweeps/NAME.yaml``, ``vqbench.published``): the
published table in its own layout (same rows, same columns), each cell "measured / published (difference)"; published
rows no job has finished are marked "—", and finished jobs that match no published row are appended with "—" for the
published side. A measured row that ran fewer steps (or epochs) than the table's recipe, or on other data, is marked not
comparable, with the reason below the table.
Partial sweeps give partial tables either way; the jobs that failed (their failed.json: the error and the step) or have
not finished are listed below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from vqbench.published import Column, PublishedTable, TableError, load_table, table_names
from vqbench.results import FAILED_FILE, INTERRUPTED_FILE, METRICS_FILE, read_metrics

#: The rFID protocol of metrics.json files written before protocols were recorded: the only one vqbench computed then.
LEGACY_RFID_PROTOCOL = "torch_fidelity"

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
                "rfid_protocol": rfid_protocol(record),
                "step": record.get("step"),
                "compression": record.get("compression", {}),
                "cost": record.get("cost", {}),
            }
        )
    return rows


def rfid_protocol(record: dict) -> str | None:
    """The id of the rFID protocol behind a metrics.json's rFID values (None when it has none)."""
    if not any(key.endswith("/rfid") for key in record.get("metrics", {})):
        return None
    return record.get("protocol", {}).get("rfid_protocol", LEGACY_RFID_PROTOCOL)


def _is_rfid(key: str | None) -> bool:
    return key is not None and key.endswith("/rfid")


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


#: ``--efficiency`` columns: (header, section of metrics.json, key, ...) for compression and cost.
EFFICIENCY_COLUMNS = (
    ("tokens/image", ("compression", "tokens_per_image")),
    ("bits/pixel", ("compression", "bits_per_pixel")),
    ("compression ratio", ("compression", "compression_ratio")),
    ("train images/s", ("cost", "train", "images_per_second")),
    ("train wall time (s)", ("cost", "train", "wall_time_s")),
    ("train peak memory (MiB)", ("cost", "train", "peak_memory_mib")),
    ("test images/s", ("cost", "test", "images_per_second")),
)


def _efficiency_value(row: dict, path: tuple[str, ...]) -> Any:
    node: Any = row
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def markdown_table(rows: list[dict], efficiency: bool = False) -> str:
    """One row per job. With more than one job, a column holding the same value in every row is folded into one
    line above the table ("Same in every job: ..."). An rFID column is named with its protocol
    (``test/rfid [clean_fid]``), so rFIDs of different protocols land in different columns."""

    def named(key: str, row: dict) -> str:
        return f"{key} [{row.get('rfid_protocol')}]" if _is_rfid(key) else key

    rows = [row | {"metrics": {named(k, row): v for k, v in row["metrics"].items()}} for row in rows]
    override_keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    metric_keys = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    columns = [("kind", lambda row: row["kind"])]
    columns += [(k, lambda row, k=k: row["overrides"].get(k, "")) for k in override_keys]
    columns += [(k, lambda row, k=k: _format_or_missing(row["metrics"].get(k))) for k in metric_keys]
    if efficiency:
        for label, path in EFFICIENCY_COLUMNS:
            if any(_efficiency_value(row, path) is not None for row in rows):
                columns.append((label, lambda row, p=path: _format_or_missing(_efficiency_value(row, p))))
    lines = []
    if len(rows) > 1:
        constant = [(name, cell(rows[0])) for name, cell in columns if len({cell(row) for row in rows}) == 1]
        if constant:
            lines += ["Same in every job: " + ", ".join(f"{name}={value}" for name, value in constant), ""]
            folded = {name for name, _ in constant}
            columns = [(name, cell) for name, cell in columns if name not in folded]
    header = ["job", *(name for name, _ in columns)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row["job"], *(cell(row) for _, cell in columns)]) + " |")
    return "\n".join(lines)


def _format_or_missing(value: Any) -> str:
    return MISSING if value is None else _format(value)


# --- the published layout ------------------------------------------------------------------------------------------


def key_value(row: dict, key: str, missing: Any = None) -> Any:
    """A job's value for a table key: ``choice:GROUP`` (the composed option) or a dotted key of its config;
    ``missing`` where the job has no such key."""
    if key.startswith("choice:"):
        return row["choices"].get(key.removeprefix("choice:"), missing)
    node: Any = row["config"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
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


def dataset_name(row: dict) -> str | None:
    """The data a job ran on: the module of its ``data.make_dataset._target_`` (``vqbench.data.celeba.celeba_split``
    -> ``celeba``), or None if its config does not say."""
    target = key_value(row, "data.make_dataset._target_")
    return str(target).split(".")[-2] if isinstance(target, str) and target.count(".") >= 2 else None


def _recipe_value(row: dict, spec: Any) -> Any:
    """A recipe entry of a published table: one value, or ``{by: KEY, VALUE_OF_KEY: value, ...}`` per row."""
    if isinstance(spec, dict):
        return spec.get(key_value(row, spec["by"]))
    return spec


def not_comparable(row: dict, table: PublishedTable) -> list[str]:
    """Why a measured job cannot stand beside the published numbers: fewer training steps or epochs than the table's
    recipe, or other data. Empty when it can, or when its metrics.json does not say (an older record)."""
    reasons = []
    data = _recipe_value(row, table.recipe.get("data"))
    ours = dataset_name(row)
    if data is not None and ours is not None and ours != data:
        reasons.append(f"data={ours}, the table's data is {data}")
    steps = _recipe_value(row, table.recipe.get("steps"))
    if steps is not None and row.get("step") is not None and row["step"] < steps:
        reasons.append(f"{row['step']:,} training steps, the recipe's {steps:,}")
    epochs = _recipe_value(row, table.recipe.get("epochs"))
    max_steps, max_epochs = key_value(row, "trainer.max_steps"), key_value(row, "trainer.max_epochs")
    if epochs is not None and isinstance(max_steps, int) and max_steps > 0:
        reasons.append(f"stopped by trainer.max_steps={max_steps:,}, the recipe trains {epochs} epochs")
    elif epochs is not None and isinstance(max_epochs, int) and 0 <= max_epochs < epochs:
        reasons.append(f"{max_epochs} epochs, the recipe's {epochs}")
    return reasons


def published_table(rows: list[dict], table: PublishedTable) -> str:
    """The published table with "measured / published (measured − published)" in every metric cell, and a
    "Comparable" column when a measured row is not comparable with the recipe (the reasons below the table)."""
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

    other_protocols: set[tuple[str, str]] = set()
    reasons: list[str] = []

    def line(key_cells: list[str], measured: dict | None, values: list[float | None]) -> list[str]:
        cells = list(key_cells)
        for column, published in zip(table.metrics, values, strict=True):
            value = None if measured is None or column.key is None else measured["metrics"].get(column.key)
            cell = _cell(column, value, published)
            protocol = measured.get("rfid_protocol") if measured is not None else None
            if value is not None and _is_rfid(column.key) and column.protocol and protocol != column.protocol:
                cell += f" [{protocol}]"  # never an unmarked comparison of two protocols
                other_protocols.add((protocol, column.protocol))
            cells.append(cell)
        why = not_comparable(measured, table) if measured is not None else []
        if why:
            reasons.append(f"({len(reasons) + 1}) job {measured['job']}: " + "; ".join(why))
        cells.append(MISSING if measured is None else f"no ({len(reasons)})" if why else "yes")
        return cells

    table_rows: list[list[str]] = []

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
        table_rows.append(line(key_cells, measured, values))
    for i, row in enumerate(finished):
        if i not in used:  # measured, but the published table has no such row
            key_cells = [_label(c, key_value(row, c.key) if c.key else None) for c in table.keys]
            table_rows.append(line(key_cells, row, [None] * len(table.metrics)))
    if reasons:
        lines[2] = lines[2][:-1] + "| Comparable |"
        lines[3] += "---|"
    for cells in table_rows:
        lines.append("| " + " | ".join(cells if reasons else cells[:-1]) + " |")
    if reasons:
        lines += ["", "Not comparable with the published recipe (its numbers need the full training on its data):"]
        lines += reasons
    lines += ["", f"Source: {table.source}.", f"Numbers from: {'; '.join(table.document_citations())}."]
    for measured_protocol, published_protocol in sorted(other_protocols):
        lines.append(
            f"[{measured_protocol}]: rFID measured under protocol {measured_protocol}, the published rFID under "
            f"{published_protocol}; the two are not comparable (docs/protocol.md, metrics.rfid.protocol)."
        )
    if table.note:
        lines.append(f"Note: {table.note}")
    if any(MISSING in cell_line for cell_line in lines if cell_line.startswith("| ")):
        lines.append(
            f"{MISSING}: not measured yet (no finished job for the row), or not measured here (the job's metrics.json "
            "says why under 'unavailable', e.g. missing LPIPS/Inception weights)."
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict]) -> str | None:
    """The published table the jobs' sweep reproduces (``report_table`` of sweeps/NAME.yaml, in each job's config),
    when every job names the same one; else None."""
    named = {row["config"].get("report_table") for row in rows}
    return named.pop() if len(named) == 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vqbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a run or sweep directory (searched recursively)")
    try:
        tables = ", ".join(table_names())
    except TableError:  # no sweeps/ folder: --table says so when given
        tables = "a sweeps/NAME.yaml with a published: block"
    parser.add_argument(
        "--table",
        help=f"lay out as a published table: {tables}. Default: the table of the sweep that ran the jobs "
        "(their report_table), if they share one; 'none' for the plain table",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--efficiency",
        action="store_true",
        help="add the compression (tokens/image, bits/pixel, ratio) and cost (images/s, wall time, memory) columns",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="DIR", help="also draw every metric against the swept value into DIR (PNG, SVG)"
    )
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory; pass a run or sweep output directory", file=sys.stderr)
        return 2
    rows = collect(args.directory)
    name = args.table if args.table is not None else sweep_table(rows)
    table = None
    if name is not None and name != "none":
        try:
            table = load_table(name)
        except TableError as error:
            print(f"error: {error.args[0]}", file=sys.stderr)
            return 2
    unfinished = unfinished_jobs(args.directory)
    if not rows and table is None and not unfinished:
        print(f"error: no {METRICS_FILE} under {args.directory}; has any job of this sweep finished?", file=sys.stderr)
        return 1
    text = published_table(rows, table) if table is not None else markdown_table(rows, args.efficiency) if rows else ""
    if table is not None and args.efficiency and rows:
        text += "\n\n" + markdown_table(rows, efficiency=True)
    if unfinished:
        text += f"\n\nJobs not in the table ({len(unfinished)}):\n" + "\n".join(unfinished)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.plot is not None and rows:
        return _plot(rows, table, args.plot)
    return 0


def _plot(rows: list[dict], table: PublishedTable | None, out: Path) -> int:
    try:
        from vqbench.plots import plot_results
    except ImportError as error:
        print(f"error: --plot needs matplotlib ({error}); pip install -e '.[plot]'", file=sys.stderr)
        return 2
    try:
        figures = plot_results(rows, table, out)
    except OSError as error:
        print(f"error: cannot write the figures into {out} ({error.strerror or error}); choose another --plot folder",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"\n{len(figures)} figures (PNG and SVG) in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
