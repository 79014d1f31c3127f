"""Every published number (the ``published:`` block of each sweeps/NAME.yaml, read by ``vqbench.published``) is the
source's number in the source's row and column.

The sources are transcribed by hand, in their own layout, under ``tests/published_sources/`` (one file per source
document, with its citation). Each published row is matched to the transcribed row with the same identifying cells,
and each published value, printed as the report prints it (decimals and unit), must equal the transcribed cell of
its column. A swapped, shifted or mistyped number therefore fails, and so does a published row or value that no
transcribed table backs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vqbench.published import Column, PublishedTable, load_table, table_names

SOURCES_DIR = Path(__file__).parent / "published_sources"
EMPTY_CELLS = ("", "--", "-")


@dataclass(frozen=True)
class Source:
    """Where a published table's numbers are in a transcription.

    ``constants``: published key label -> the cell that stands for every row of this source table (the table's
    caption says it). ``columns``: published label -> the source's header, where they differ. ``derived``: published
    key label -> the cell computed from a source row (the source splits it over two columns). ``where``: source
    header -> the cells of the rows that are published (default: every row).
    """

    file: str
    section: str
    constants: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    derived: dict[str, Callable[[dict[str, str]], str]] = field(default_factory=dict)
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)


CELEBA = "visual-tokenizer-pytorch_benchmark-celeba64.md"
IMAGENET256 = "visual-tokenizer-pytorch_benchmark-imagenet256.md"
IMAGENET256_351D29D = "visual-tokenizer-pytorch_benchmark-imagenet256_351d29d.md"
IMAGENET64 = "visual-tokenizer-pytorch_benchmark-imagenet64.md"
CELEBA_SIMVQ = "visual-tokenizer-pytorch_benchmark-celeba64_ff3c255.md"
FSQ = "vector-quantize_README.md"


def _fsq_row_name(row: dict[str, str]) -> str:
    """The source's name and levels columns as the sweep's row names them: ``fsq_8-6-5``, or ``ema``."""
    return row["name"] if row["levels"] == "-" else f"{row['name']}_{row['levels']}"


SOURCES: dict[str, list[Source]] = {
    "celeba64_vq_dim": [Source(CELEBA, "VQVAE: Effect of codebook dimension")],
    "celeba64_vq_size": [Source(CELEBA, "VQVAE: Effect of codebook size")],
    "celeba64_vq_l2": [Source(CELEBA, "VQVAE: Effect of l2-norm codes")],
    "celeba64_vq_ema": [Source(CELEBA, "VQVAE: Effect of EMA update")],
    "celeba64_vq_entropy": [Source(CELEBA, "VQVAE: Effect of entropy regularization")],
    "celeba64_fsq": [Source(CELEBA, "FSQ-VAE")],
    "celeba64_lfq": [Source(CELEBA, "LFQ-VAE")],
    "celeba64_simvq": [Source(CELEBA_SIMVQ, "SimVQ-VAE")],
    "imagenet64_vq": [Source(IMAGENET64, "VQVAE")],
    "imagenet64_fsq": [Source(IMAGENET64, "FSQ-VAE")],
    "imagenet64_lfq": [Source(IMAGENET64, "LFQ-VAE")],
    "imagenet64_simvq": [Source(IMAGENET64, "SimVQ-VAE")],
    "imagenet64_ibq": [Source(IMAGENET64, "IBQ-VAE")],
    "imagenet256_vqgan": [
        Source(IMAGENET256, 'Using hyperparameters from "Taming Transformers" paper', constants={"Recipe": "Taming"}),
        Source(IMAGENET256, 'Using hyperparameters from "LlamaGen" paper', constants={"Recipe": "LlamaGen"}),
    ],
    "imagenet256_vqgan_351d29d": [
        Source(IMAGENET256_351D29D, "VQGAN (Taming Transformers)", constants={"Recipe": "Taming"}),
        Source(IMAGENET256_351D29D, "VQGAN (LlamaGen)", constants={"Recipe": "LlamaGen"}),
    ],
    "llvq": [Source("ll-vq-vae_README.md", "Pretrained checkpoints")],
    "imagenet128_fsq": [
        Source(FSQ, "Repreduced result", constants={"dtype": "fp32"}, derived={"name / levels": _fsq_row_name}),
        Source(FSQ, "Bf16 result", constants={"dtype": "bf16"}, derived={"name / levels": _fsq_row_name}),
    ],
    "imagenet256_pretrained": [
        Source(
            "taming-transformers_README.md",
            "Overview of pretrained models: autoencoders",
            columns={"Model": "Dataset", "rFID↓": "FID vs val"},
            where={"Dataset": ("VQGAN ImageNet (f=16), 1024", "VQGAN ImageNet (f=16), 16384")},
        ),
        Source(
            "LlamaGen_README.md",
            "Class-conditional image generation on ImageNet: VQ-VAE models",
            columns={"Model": "Method", "rFID↓": "rFID (256x256)"},
            where={"tokens": ("16x16",), "Method": ("vq_ds16_c2i",)},
        ),
        Source(
            "LlamaGen_README.md",
            "The paper's PSNR and SSIM of vq_ds16_c2i at 16x16 tokens",
            columns={"Model": "Method", "PSNR↑": "PSNR", "SSIM↑": "SSIM", "rFID↓": "rFID"},
        ),
    ],
}


# --- reading the transcriptions -------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_transcription(file: str) -> dict[str, list[dict[str, str]]]:
    """Section title -> the rows of the section's table, each a dict header -> cell text."""
    sections: dict[str, list[dict[str, str]]] = {}
    title, header = None, None
    for line in (SOURCES_DIR / file).read_text().splitlines():
        if line.startswith("## "):
            title, header = line[3:].strip(), None
            sections[title] = []
        elif line.startswith("|") and title is not None:
            cells = _cells(line)
            if header is None:
                header = cells
            elif not all(re.fullmatch(r"-+", c) for c in cells):
                assert len(cells) == len(header), f"{file} / {title}: {line!r} has {len(cells)} cells"
                sections[title].append(dict(zip(header, cells, strict=True)))
    return sections


def repository(file: str) -> str:
    """The ``owner/name`` in a transcription's first line (``# owner/name: path``)."""
    first = (SOURCES_DIR / file).read_text().splitlines()[0]
    return first.removeprefix("# ").split(":")[0]


# --- what the report prints -----------------------------------------------------------------------------------------


def key_cell(column: Column, value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(column.names.get(value, value))


def metric_cell(column: Column, value: float | None) -> str:
    if value is None:
        return ""
    digits = 4 if column.decimals is None else column.decimals
    return f"{value:,.{digits}f}{column.unit}"


def _same_whole_number(column: Column, value: float | None, cell: str) -> bool:
    """A source cell printed without decimals ("100%") against a value the column prints with them ("100.00%")."""
    number = cell.removesuffix(column.unit).replace(",", "")
    return value is not None and re.fullmatch(r"\d+", number) is not None and float(number) == value


# --- the comparison -------------------------------------------------------------------------------------------------


def mismatches(table: PublishedTable, sources: list[Source]) -> list[str]:
    """Every disagreement between a published table and its transcribed sources (empty: they agree)."""
    problems: list[str] = []
    covered: set[tuple[int, str]] = set()
    matched: set[int] = set()
    for source in sources:
        sections = read_transcription(source.file)
        if source.section not in sections:
            problems.append(f"{source.file} has no section {source.section!r}")
            continue
        rows = [
            row
            for row in sections[source.section]
            if all(row.get(header) in cells for header, cells in source.where.items())
        ]
        if not rows:
            problems.append(f"{source.file} / {source.section}: no row is selected")
        for row in rows:
            expected = {}
            for column in table.keys:
                header = source.columns.get(column.label, column.label)
                if column.label in source.constants:
                    expected[column.label] = source.constants[column.label]
                elif column.label in source.derived:
                    expected[column.label] = source.derived[column.label](row)
                elif header in row:
                    expected[column.label] = row[header]
            found = [
                i
                for i, (key_values, _) in enumerate(table.rows)
                if all(
                    key_cell(column, value) == expected[column.label]
                    for column, value in zip(table.keys, key_values, strict=True)
                    if column.label in expected
                )
            ]
            if len(found) != 1:
                problems.append(f"{source.section}: source row {expected} matches {len(found)} published rows")
                continue
            index = found[0]
            matched.add(index)
            for column, value in zip(table.metrics, table.rows[index][1], strict=True):
                header = source.columns.get(column.label, column.label)
                if header not in row:
                    continue
                cell = "" if row[header] in EMPTY_CELLS else row[header]
                if metric_cell(column, value) != cell and not _same_whole_number(column, value, cell):
                    problems.append(
                        f"{source.section}, row {expected}, column {column.label!r}: published "
                        f"{metric_cell(column, value)!r}, source {cell!r}"
                    )
                covered.add((index, column.label))
    for index, (key_values, values) in enumerate(table.rows):
        if index not in matched:
            problems.append(f"published row {key_values} is in no transcribed source table")
        for column, value in zip(table.metrics, values, strict=True):
            if value is not None and (index, column.label) not in covered:
                problems.append(f"published row {key_values}, {column.label!r} = {value} has no source cell")
    return problems


def test_every_published_table_has_its_transcribed_sources():
    assert set(SOURCES) == set(table_names())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_published_numbers_are_the_sources_numbers_row_and_column(name):
    assert mismatches(load_table(name), SOURCES[name]) == []


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_published_source_cites_every_transcribed_repository(name):
    source = " ".join(load_table(name).source.split())
    for repo in {repository(s.file) for s in SOURCES[name]}:
        assert repo in source, f"{name}.yaml's source does not name {repo}"


def _swap(rows, a: tuple[int, int], b: tuple[int, int]):
    rows = [(list(keys), list(values)) for keys, values in rows]
    (ra, ca), (rb, cb) = a, b
    rows[ra][1][ca], rows[rb][1][cb] = rows[rb][1][cb], rows[ra][1][ca]
    return rows


def test_the_comparison_catches_swapped_rows_swapped_columns_and_typos():
    table = load_table("celeba64_vq_dim")
    assert mismatches(table, SOURCES["celeba64_vq_dim"]) == []
    for broken_rows in (
        _swap(table.rows, (0, 1), (1, 1)),  # PSNR of two rows swapped
        _swap(table.rows, (2, 1), (2, 2)),  # PSNR and SSIM of one row swapped
    ):
        assert mismatches(dataclasses.replace(table, rows=broken_rows), SOURCES["celeba64_vq_dim"])
    typo = [(list(k), list(v)) for k, v in table.rows]
    typo[3][1][4] = 16.3979
    assert mismatches(dataclasses.replace(table, rows=typo), SOURCES["celeba64_vq_dim"])
    extra = [*table.rows, ([128, 512], [1.0, 2.0, 3.0, 4.0, 5.0])]
    assert mismatches(dataclasses.replace(table, rows=extra), SOURCES["celeba64_vq_dim"])
    ema = load_table("celeba64_vq_ema")  # a key column swapped: the EMA row's numbers under "VQ loss"
    relabelled = [([*k[:2], {"vq": "ema", "ema": "vq"}[k[2]]], v) for k, v in ema.rows]
    assert mismatches(dataclasses.replace(ema, rows=relabelled), SOURCES["celeba64_vq_ema"])


# --- the documents that hold the numbers ------------------------------------------------------------------------------

#: where the original repositories are on disk (bare clones), if anywhere: owner/name -> git directory
MIRRORS = Path("/work/.mirror")


def _mirror(repository: str) -> Path | None:
    path = MIRRORS / repository.replace("/", "+") / "repo"
    return path if (path / "HEAD").is_file() else None


def _git_show(mirror: Path, commit: str, path: str) -> str | None:
    import subprocess

    shown = subprocess.run(
        ["git", "--git-dir", str(mirror), "show", f"{commit}:{path}"], capture_output=True, text=True, check=False
    )
    return shown.stdout if shown.returncode == 0 else None


@pytest.mark.parametrize("name", table_names())
def test_every_table_names_the_commit_of_the_document_that_holds_its_numbers(name):
    """``documents`` names a repository, a commit (7 to 40 hex digits) and a file, or a paper and its table; each
    repository is one the transcriptions cite, and the commit appears in the table's source text."""
    table = load_table(name)
    assert table.documents, f"{name}.yaml names no document"
    source = " ".join(table.source.split())
    for document in table.documents:
        if "repository" in document:
            assert re.fullmatch(r"[0-9a-f]{7,40}", str(document["commit"])), document
            assert document["repository"] in {repository(s.file) for s in SOURCES[name]}, document
            assert str(document["commit"])[:7] in source, f"{name}.yaml's source does not name {document['commit']}"
        else:
            assert document["paper"] in source and document["table"] in source, document


@pytest.mark.parametrize("name", table_names())
def test_the_named_commits_document_holds_every_published_number(name):
    """Against the original repositories where a clone is on disk (skipped elsewhere): the named file at the named
    commit prints every published value (as the report prints it, or as a whole number)."""
    table = load_table(name)
    texts = []
    for document in table.documents:
        if "repository" not in document:
            continue
        mirror = _mirror(document["repository"])
        if mirror is None:
            continue
        text = _git_show(mirror, str(document["commit"]), document["path"])
        assert text is not None, f"{document['repository']} has no {document['path']} at {document['commit']}"
        texts.append(text)
    if not texts:
        pytest.skip(f"no clone of {name}'s repositories under {MIRRORS}")
    text = "\n".join(texts)
    skip_papers = any("paper" in d for d in table.documents)
    for key_values, values in table.rows:
        for column, value in zip(table.metrics, values, strict=True):
            if value is None:
                continue
            printed = metric_cell(column, value).removesuffix(column.unit)
            whole = f"{value:.0f}" if float(value).is_integer() else None
            found = printed in text or printed.replace(",", "") in text or (whole is not None and whole in text)
            assert found or skip_papers, f"{name}: {key_values} {column.label} = {printed} is not in the document"
