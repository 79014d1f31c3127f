"""Figures of a sweep: every metric against the swept value, one line per series, the published numbers beside.

    from vqbench.plots import plot_results
    figures = plot_results(collect(SWEEP), table=load_table(NAME), out=Path("figures"))  # PNG + SVG per metric

The x axis is the first swept key (an override whose value differs between the jobs) whose values are all numbers
(``codebook.dim``), else the first swept key, as categories; numbers spanning a factor of 8 or more are drawn on a
log2 axis. Every other swept key splits the jobs into series, one line each (``quantizer=vq``, ``quantizer=ema``).
With a published table, each metric column it has is drawn in the table's unit (its ``scale``: codebook usage in
percent) and each published row whose key columns name an x value becomes a hollow marker in its series' colour
(grey when no series matches), so measured and published numbers stand side by side. ``python -m vqbench.report DIR
--plot OUT`` and ``notebooks/sweep_results.ipynb`` call this function.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vqbench.published import PublishedTable

#: Figure formats written for every metric.
FORMATS = ("png", "svg")


def varying_overrides(rows: list[dict]) -> list[str]:
    """The override keys whose value differs between jobs (a key a job lacks counts as its own value): the swept
    keys of a sweep, in the order the jobs first use them."""
    keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    return [k for k in keys if len({row["overrides"].get(k) for row in rows}) > 1]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _table_key(override_key: str) -> str:
    """The table key a command-line override sets: ``quantizer`` (a group) -> ``choice:quantizer``."""
    return override_key if "." in override_key else f"choice:{override_key}"


def _axes(rows: list[dict]) -> tuple[str | None, list[str]]:
    swept = varying_overrides(rows)
    numeric = [k for k in swept if all(_number(row["overrides"].get(k)) is not None for row in rows)]
    x_key = numeric[0] if numeric else (swept[0] if swept else None)
    return x_key, [k for k in swept if k != x_key]


def _show(value: Any) -> str:
    """One spelling for a value from an override (text) and from a table (YAML): true, 4, 0.1, vq."""
    if isinstance(value, bool):
        return str(value).lower()
    number = _number(value)
    return f"{number:g}" if number is not None else str(value)


def _series_name(values: dict[str, Any], series_keys: list[str]) -> str:
    return ", ".join(f"{k}={_show(values.get(k))}" for k in series_keys) or "measured"


def _file_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_")


def plot_results(
    rows: list[dict], table: PublishedTable | None = None, out: Path | None = None, metrics: list[str] | None = None
) -> dict[str, Any]:
    """``{metric: matplotlib Figure}`` for the jobs ``rows`` (``vqbench.report.collect``); with ``out``, each is
    also written as ``out/METRIC.png`` and ``.svg`` (``/`` in the name becomes ``_``). ``metrics``: which to draw
    (default: every metric of the jobs)."""
    import matplotlib.pyplot as plt  # without a display matplotlib draws with Agg

    x_key, series_keys = _axes(rows)
    names = metrics or list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    columns = {c.key: c for c in table.metrics if c.key} if table is not None else {}
    x_of = (lambda row: row["overrides"].get(x_key)) if x_key else (lambda row: row["job"])
    xs = [x_of(row) for row in rows]
    numeric = x_key is not None and all(_number(x) is not None for x in xs)
    categories = list(dict.fromkeys(str(x) for x in xs))

    def position(x: Any) -> float | None:
        if numeric:
            return _number(x)
        return float(categories.index(str(x))) if str(x) in categories else None

    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(_series_name(row["overrides"], series_keys), []).append(row)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {name: colours[i % len(colours)] for i, name in enumerate(series)}
    figures: dict[str, Any] = {}
    for metric in names:
        column = columns.get(metric)
        scale = column.scale if column is not None else 1.0
        figure, axis = plt.subplots(figsize=(6, 4))
        drawn = False
        for name, members in series.items():
            points = sorted(
                (position(x_of(row)), row["metrics"][metric] * scale)
                for row in members
                if metric in row["metrics"] and position(x_of(row)) is not None
            )
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", color=colour_of[name], label=name)
                drawn = True
        if column is not None:
            drawn |= _published_markers(axis, table, column, x_key, series_keys, position, colour_of)
        if not drawn:
            plt.close(figure)
            continue
        values = [position(x) for x in xs if position(x) is not None]
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 8:
            axis.set_xscale("log", base=2)
            axis.set_xticks(sorted(set(values)), [f"{v:g}" for v in sorted(set(values))])
        if not numeric:
            axis.set_xticks(range(len(categories)), categories)
        axis.set_xlabel(x_key or "job")
        unit = f" ({column.unit})" if column is not None and column.unit else ""
        axis.set_ylabel(metric + unit)
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
        figure.tight_layout()
        figures[metric] = figure
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for suffix in FORMATS:
                figure.savefig(out / f"{_file_name(metric)}.{suffix}")
    return figures


def _published_markers(axis, table, column, x_key, series_keys, position, colour_of) -> bool:
    """Hollow markers for the published values of ``column``; True if any was drawn."""
    if x_key is None:
        return False
    keys = [c.key for c in table.keys]
    x_table = _table_key(x_key)
    if x_table not in keys:
        return False
    index = table.metrics.index(column)
    labelled = False
    for key_values, values in table.rows:
        published = values[index]
        x = position(key_values[keys.index(x_table)])
        if published is None or x is None:
            continue
        series_values = {}
        for key in series_keys:
            if _table_key(key) in keys:
                series_values[key] = key_values[keys.index(_table_key(key))]
        name = _series_name(series_values, series_keys) if len(series_values) == len(series_keys) else None
        colour = colour_of.get(name, "grey") if name is not None else "grey"
        label = None if labelled else f"published ({table.name})"
        axis.plot([x], [published], marker="D", markersize=8, markerfacecolor="none", color=colour, label=label,
                  linestyle="none")  # fmt: skip
        labelled = True
    return labelled
