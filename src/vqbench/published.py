"""The published numbers vqbench is compared with: the ``published:`` block of a sweep file, ``sweeps/NAME.yaml``.

A table is found by discovery: every ``sweeps/*.yaml`` with a top-level ``published`` key is the table NAME (the
file's name), beside the sweep that reproduces it; there is no list to edit. The block is read here and nowhere
else: ``vqbench.sweep_configs`` registers the sweep without it, so a run's config, checkpoint and hyperparameters never
hold it. A file that holds nothing but ``published:`` is a table without a sweep (released weights that are only
evaluated: ``imagenet256_pretrained``).

The block gives the table's ``title``, its ``source`` (repository + file + commit and the table's name, or paper +
arXiv id + table), its ``documents``: each ``{repository, commit, path}`` whose file at that commit holds the numbers
(``git log -S NUMBER`` in the repository finds the commit), or ``{paper, table}`` for numbers quoted from a paper,
its identifying columns (``keys``: a label and where the value is found in a job's metrics.json: a
dotted config key such as ``codebook.dim``, ``choice:GROUP`` for the config group option the job composed, or null
for a column shown only from the source), its metric columns (label, our metric key, ``scale`` to bring our value to
the source's unit, ``unit``, ``decimals`` as printed in the source, default 4; ``protocol`` for rFID: the rFID
protocol of the published numbers), the rows as ``[[key values...], [published values...]]``, and the ``recipe`` a
measured row must follow to be comparable (``data``, ``steps`` or ``epochs``; see ``PublishedTable.recipe``).
``tests/test_published.py`` checks every number, row and column, against a separate hand transcription of each source
table (``tests/published_sources/``); ``tests/test_sweeps.py`` checks every table against its sweep's jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Column:
    label: str
    key: str | None
    scale: float = 1.0
    unit: str = ""
    decimals: int | None = None
    names: dict[Any, str] = field(default_factory=dict)
    #: for an rFID column: the protocol of the published numbers (an id of vqbench.metrics.rfid_protocols.PROTOCOLS,
    #: or a description of one vqbench does not compute); measured rFIDs of another protocol are marked
    protocol: str | None = None


@dataclass(frozen=True)
class PublishedTable:
    name: str
    title: str
    source: str
    keys: list[Column]
    metrics: list[Column]
    rows: list[tuple[list[Any], list[float | None]]]
    note: str = ""
    #: What a measured row needs to stand beside the published numbers (vqbench.report.not_comparable): ``data`` (the
    #: dataset module, e.g. celeba), ``steps`` (at least this many training steps) or ``epochs`` (trained for this
    #: many epochs, not stopped by trainer.max_steps); each one value or ``{by: KEY, KEY_VALUE: value, ...}``.
    recipe: dict[str, Any] = field(default_factory=dict)
    documents: list[dict[str, str]] = field(default_factory=list)

    def document_citations(self) -> list[str]:
        """Each document as one phrase: ``owner/name@commit:path`` or ``arXiv ID, Table N``."""
        return [
            f"{d['repository']}@{d['commit']}:{d['path']}" if "repository" in d else f"{d['paper']}, {d['table']}"
            for d in self.documents
        ]


DOCUMENT_FIELDS = ({"repository", "commit", "path"}, {"paper", "table"})


#: The repository's sweeps/ folder (beside src/, as vqbench.sweep_configs and vqbench.compose expect).
SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
#: The top-level key of a sweep file that holds its published table.
TABLE_KEY = "published"


class TableError(KeyError):
    """No such table, or no sweeps/ folder to find tables in; ``args[0]`` says which and what to do."""


def _sweeps_dir(folder: Path | None) -> Path:
    folder = SWEEPS_DIR if folder is None else folder
    if not folder.is_dir():
        raise TableError(
            f"the published tables live in the repository's sweeps/ folder, which is not at {folder}; run from a "
            "clone of the repository installed with pip install -e ."
        )
    return folder


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def table_names(folder: Path | None = None) -> list[str]:
    """NAME of every ``sweeps/NAME.yaml`` that has a ``published:`` block, sorted."""
    return sorted(path.stem for path in _sweeps_dir(folder).glob("*.yaml") if TABLE_KEY in _read(path))


def load_table(name: str, folder: Path | None = None) -> PublishedTable:
    """The ``published:`` block of ``sweeps/NAME.yaml`` (``folder`` instead of the repository's sweeps/)."""
    path = _sweeps_dir(folder) / f"{name}.yaml"
    data = _read(path).get(TABLE_KEY) if path.is_file() and path.parent == _sweeps_dir(folder) else None
    if data is None:
        tables = ", ".join(table_names(folder))
        raise TableError(
            f"no published table {name!r} (a {TABLE_KEY}: block in sweeps/{name}.yaml); the tables are: {tables}"
        )
    where = f"sweeps/{name}.yaml, {TABLE_KEY}:"
    keys = [Column(**column) for column in data["keys"]]
    metrics = [Column(**column) for column in data["metrics"]]
    rows = []
    for key_values, values in data["rows"]:
        if len(key_values) != len(keys) or len(values) != len(metrics):
            raise ValueError(f"{where} row {key_values} does not have {len(keys)} keys and {len(metrics)} values")
        rows.append((key_values, values))
    documents = data.get("documents") or []
    if not documents or any(set(d) not in DOCUMENT_FIELDS for d in documents):
        raise ValueError(f"{where} documents must list {{repository, commit, path}} or {{paper, table}} entries")
    return PublishedTable(
        name,
        data["title"],
        data["source"],
        keys,
        metrics,
        rows,
        data.get("note", ""),
        data.get("recipe") or {},
        [dict(d) for d in documents],
    )
