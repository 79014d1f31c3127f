"""vqbench.report, cell by cell: metrics.json files with known values in, every cell of the printed and written
tables checked against the layout docs/sweeps.md describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqbench.metrics.rfid_protocols import PROTOCOLS
from vqbench.published import Column, PublishedTable, load_table, table_names
from vqbench.report import main as report_main

MISSING = "—"


def _write_job(directory: Path, record: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(record))


def _rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip()[1:-1].split("|")] for line in text.splitlines() if line.startswith("|")
    ]


def _report(tmp_path: Path, capsys, *args: str) -> str:
    out = tmp_path / "out" / "table.md"
    assert report_main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed  # the file is what was printed
    return printed


# --- without a published table: one row per job ----------------------------------------------------------------------


def test_plain_table_has_one_row_per_job_in_natural_order_and_every_cell(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    jobs = {  # folder -> (kind, overrides, metrics)
        "10": ("train", ["quantizer=fsq", "codebook.dim=4", "hydra.run.dir=x"], {"val/psnr": 21.5, "val/ssim": 0.5}),
        "2": ("train", ["quantizer=vq", "codebook.dim=16"], {"val/psnr": 19.123456}),
        "eval": ("eval", ["+eval=true", "ckpt=a.ckpt", "data.root=/d"], {"test/psnr": 18.0, "test/l1": 0.25}),
        "2b/1": ("train+eval", ["seed=3"], {"val/psnr": 17.0, "test/psnr": 16.5}),
    }
    for folder, (kind, overrides, metrics) in jobs.items():
        _write_job(sweep / folder, {"kind": kind, "overrides": overrides, "metrics": metrics})
    (sweep / "broken").mkdir()
    (sweep / "broken" / "metrics.json").write_text("{not json")  # an unreadable file is skipped with a warning

    rows = _rows(_report(tmp_path, capsys, str(sweep)))
    # columns in the order the (sorted) jobs first use them
    header = ["job", "kind", "quantizer", "codebook.dim", "seed", "data.root", "val/psnr", "val/ssim", "test/psnr"]
    header.append("test/l1")
    assert rows[0] == header
    assert set(rows[1]) == {"---"}
    assert rows[2:] == [  # numbers by value (2 before 10), before names; hydra.*, +eval and ckpt are not columns
        ["2", "train", "vq", "16", "", "", "19.1235", MISSING, MISSING, MISSING],
        ["10", "train", "fsq", "4", "", "", "21.5000", "0.5000", MISSING, MISSING],
        ["2b/1", "train+eval", "", "", "3", "", "17.0000", MISSING, "16.5000", MISSING],
        ["eval", "eval", "", "", "", "/d", MISSING, MISSING, "18.0000", "0.2500"],
    ]


def test_plain_table_errors(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert report_main([str(tmp_path)]) == 1
    assert report_main([str(tmp_path), "--table", "no_such_table"]) == 2
    assert "no published table 'no_such_table'" in capsys.readouterr().err


# --- in a published table's layout ------------------------------------------------------------------------------------


def _number(value: float, column: Column) -> str:
    digits = 4 if column.decimals is None else column.decimals
    return f"{value:,.{digits}f}{column.unit}"


def _key_label(column: Column, value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return column.names.get(value, str(value))


def _job_for(table: PublishedTable, key_values: list) -> dict:
    """A finished job whose config and group choices give ``key_values`` for the table's key columns."""
    config: dict = {}
    choices: dict = {}
    for column, value in zip(table.keys, key_values, strict=True):
        if column.key is None:
            continue
        if column.key.startswith("choice:"):
            choices[column.key.removeprefix("choice:")] = value
            continue
        node = config
        *parents, leaf = column.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    # measured under the published rFID's protocol where vqbench has it (else the default, which gets marked)
    protocol = next((c.protocol for c in table.metrics if c.protocol in PROTOCOLS), "torch_fidelity")
    return {
        "kind": "train+eval",
        "overrides": [],
        "config": config,
        "choices": choices,
        "protocol": {"rfid_protocol": protocol},
    }


def _unlike_any_row(table: PublishedTable, index: int):
    values = [row[0][index] for row in table.rows]
    return 99_991 if all(isinstance(v, (int, float)) for v in values) else "not_a_published_row"


@pytest.mark.parametrize("name", table_names())
def test_published_table_every_cell(name, tmp_path, capsys):
    """Every published row but the last gets a job with known metric values; one more job matches no row. The
    output must be the table's title, its key and metric columns, each row's key labels, every metric cell as
    "measured x scale / published (difference)" (or "—" where a side is missing), the unmatched job appended, and
    the source line."""
    table = load_table(name)
    measurable = [c for c in table.metrics if c.key is not None]
    assert any(c.key.startswith("test/") for c in measurable)

    def measured_value(row: int, metric: int) -> float:
        return 10.0 * (row + 1) + metric + 0.123456  # distinct in every cell, in vqbench's own unit

    sweep = tmp_path / "sweep"
    expected_rows = []
    for r, (key_values, published) in enumerate(table.rows):
        finished = r < len(table.rows) - 1
        if finished:
            record = _job_for(table, key_values)
            record["metrics"] = {c.key: measured_value(r, j) for j, c in enumerate(table.metrics) if c.key}
            record["written_at"] = f"2026-01-01T00:00:{r:02d}+00:00"
            _write_job(sweep / str(r), record)
        cells = [_key_label(c, v) for c, v in zip(table.keys, key_values, strict=True)]
        for j, (column, value) in enumerate(zip(table.metrics, published, strict=True)):
            ours = measured_value(r, j) * column.scale if finished and column.key else None
            cells.append(_expected_cell(column, ours, value) + _mark(column, ours))
        expected_rows.append(cells)
    extra_keys = [_unlike_any_row(table, i) if c.key else None for i, c in enumerate(table.keys)]
    record = _job_for(table, extra_keys) | {"metrics": {c.key: 1.5 for c in measurable}}
    _write_job(sweep / "extra", record)
    extra = [_key_label(c, v) if c.key else MISSING for c, v in zip(table.keys, extra_keys, strict=True)]
    extra += [_expected_cell(c, 1.5 * c.scale if c.key else None, None) + _mark(c, 1.5) for c in table.metrics]
    expected_rows.append(extra)

    text = _report(tmp_path, capsys, str(sweep), "--table", name)
    lines = text.splitlines()
    assert lines[0] == f"**{table.title}**: measured / published (difference)"
    rows = _rows(text)
    assert rows[0] == [c.label for c in table.keys] + [c.label for c in table.metrics]
    assert rows[2:] == expected_rows
    assert f"Source: {table.source}." in lines
    documents = [
        f"{d['repository']}@{d['commit']}:{d['path']}" if "repository" in d else f"{d['paper']}, {d['table']}"
        for d in table.documents
    ]
    assert documents and f"Numbers from: {'; '.join(documents)}." in lines  # each table beside its own document
    assert (f"Note: {table.note}" in lines) == bool(table.note)
    assert any(line.startswith(f"{MISSING}: not measured yet") for line in lines)  # the last row is unfinished


def _mark(column: Column, ours: float | None) -> str:
    """A measured rFID whose protocol differs from the published one's is marked with the measured protocol."""
    if ours is None or column.protocol is None or column.protocol in PROTOCOLS:
        return ""
    return " [torch_fidelity]"


def _expected_cell(column: Column, ours: float | None, published: float | None) -> str:
    if ours is None and published is None:
        return MISSING
    if ours is None:
        return f"{MISSING} / {_number(published, column)}"
    if published is None:
        return f"{_number(ours, column)} / {MISSING}"
    digits = 4 if column.decimals is None else column.decimals
    return f"{_number(ours, column)} / {_number(published, column)} ({ours - published:+,.{digits}f})"


def test_published_table_takes_the_newest_of_two_matching_jobs(tmp_path, capsys):
    table = load_table("celeba64_vq_ema")
    key_values, _ = table.rows[0]
    for job, (psnr, written) in {
        "old": (20.0, "2026-01-01T00:00:00+00:00"),
        "new": (30.0, "2026-02-01T00:00:00+00:00"),
    }.items():
        record = _job_for(table, key_values) | {"metrics": {"test/psnr": psnr}, "written_at": written}
        _write_job(tmp_path / "sweep" / job, record)
    rows = _rows(_report(tmp_path, capsys, str(tmp_path / "sweep"), "--table", "celeba64_vq_ema"))
    psnr = [c.label for c in table.metrics].index("PSNR↑") + len(table.keys)
    assert rows[2][psnr].startswith("30.0000 / ")
    assert len(rows) == 2 + len(table.rows)  # neither job is appended as unmatched


def test_rfids_of_different_protocols_never_share_an_unmarked_column(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for name, protocol in (("a", "torch_fidelity"), ("b", "clean_fid")):
        record = {"kind": "eval", "overrides": [f"seed={name}"], "metrics": {"test/psnr": 20.0, "test/rfid": 5.0}}
        _write_job(sweep / name, record | {"protocol": {"rfid_protocol": protocol}})
    _write_job(sweep / "c", {"kind": "eval", "overrides": ["seed=c"], "metrics": {"test/rfid": 7.0}})  # before ids
    rows = _rows(_report(tmp_path, capsys, str(sweep)))
    assert rows[0][-2:] == ["test/rfid [torch_fidelity]", "test/rfid [clean_fid]"]
    assert [row[-2:] for row in rows[2:]] == [["5.0000", MISSING], [MISSING, "5.0000"], ["7.0000", MISSING]]

    # in a published layout: the clean-fid job's cell says its protocol, and a note says it is not comparable
    table = load_table("celeba64_fsq")
    published = tmp_path / "published"
    for index, protocol in enumerate(("torch_fidelity", "clean_fid")):
        record = _job_for(table, table.rows[index][0]) | {"metrics": {"test/rfid": 15.0}}
        record["protocol"] = {"rfid_protocol": protocol}
        _write_job(published / str(index), record)
    text = _report(tmp_path, capsys, str(published), "--table", "celeba64_fsq")
    cells = [row[-1] for row in _rows(text)[2:4]]
    assert cells[0] == "15.0000 / 15.7079 (-0.7079)"
    assert cells[1] == "15.0000 / 15.8230 (-0.8230) [clean_fid]"
    assert "[clean_fid]: rFID measured under protocol clean_fid, the published rFID under torch_fidelity" in text


def test_a_sweeps_jobs_report_in_their_tables_layout_without_table(tmp_path, capsys):
    """Jobs of ``+sweep=NAME`` carry ``report_table: NAME`` in their config: the report lays them out as that table
    unless ``--table none`` asks for the plain one; jobs of different tables get the plain table."""
    table = load_table("celeba64_vq_ema")
    key_values, _ = table.rows[0]
    job = _job_for(table, key_values)
    job["config"] = job.get("config", {}) | {"report_table": "celeba64_vq_ema"}
    _write_job(tmp_path / "sweep" / "0", job)
    default = _report(tmp_path, capsys, str(tmp_path / "sweep"))
    assert table.title in default
    assert default == _report(tmp_path, capsys, str(tmp_path / "sweep"), "--table", "celeba64_vq_ema")
    assert table.title not in _report(tmp_path, capsys, str(tmp_path / "sweep"), "--table", "none")
    other = _job_for(table, key_values)
    other["config"] = other.get("config", {}) | {"report_table": "celeba64_fsq"}
    _write_job(tmp_path / "sweep" / "1", other)
    assert table.title not in _report(tmp_path, capsys, str(tmp_path / "sweep"))
