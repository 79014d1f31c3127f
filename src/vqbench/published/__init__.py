"""The published numbers vqbench is compared with: one YAML file per published table, each citing its source.

A file gives the table's ``title``, its ``source`` (repository + file + commit and the table's name, or paper +
arXiv id + table), its ``documents``: each ``{repository, commit, path}`` whose file at that commit holds the numbers
(``git log -S NUMBER`` in the repository finds the commit), or ``{paper, table}`` for numbers quoted from a paper,
its identifying columns (``keys``: a label and where the value is found in a job's metrics.json: a
dotted config key such as ``codebook.dim``, ``choice:GROUP`` for the config group option the job composed, or null
for a column shown only from the source), its metric columns (label, our metric key, ``scale`` to bring our value to
the source's unit, ``unit``, ``decimals`` as printed in the source, default 4; ``protocol`` for rFID: the rFID
protocol of the published numbers), the rows as ``[[key values...], [published values...]]``, and the ``recipe`` a
measured row must follow to be comparable (``data``, ``steps`` or ``epochs``; see ``PublishedTable.recipe``).
``tests/test_published.py`` checks every number, row and column, against a separate hand transcription of each source
table (``tests/published_sources/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
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


def table_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml")
    )


def load_table(name: str) -> PublishedTable:
    path = resources.files(__package__) / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no published table {name!r}; the tables are: {', '.join(table_names())}")
    data = yaml.safe_load(path.read_text())
    keys = [Column(**column) for column in data["keys"]]
    metrics = [Column(**column) for column in data["metrics"]]
    rows = []
    for key_values, values in data["rows"]:
        if len(key_values) != len(keys) or len(values) != len(metrics):
            raise ValueError(f"{name}.yaml: row {key_values} does not have {len(keys)} keys and {len(metrics)} values")
        rows.append((key_values, values))
    documents = data.get("documents") or []
    if not documents or any(set(d) not in DOCUMENT_FIELDS for d in documents):
        raise ValueError(f"{name}.yaml: documents must list {{repository, commit, path}} or {{paper, table}} entries")
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
