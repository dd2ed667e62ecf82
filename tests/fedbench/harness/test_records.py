"""Tests for fedbench.harness.records: atomic appends, corrupted lines, no duplicates, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from records_factory import CellRecords, make_cell

from fedbench.errors import ResultsError
from fedbench.harness.records import Row, append_records, read_records, read_results_dir
from fedbench.harness.schema import CellRecord, MetricRecord

A, B = make_cell("none"), make_cell("secagg")


def _cell_rows(which: str, value: float, status: str = "ok") -> list[Row]:
    return CellRecords(A if which == "a" else B).metric("accuracy", value, True).rows(
        status=status
    )


def test_append_then_read(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "records.jsonl"
    append_records(path, _cell_rows("a", 0.5))
    append_records(path, _cell_rows("b", 0.7))
    records = read_records(path)
    assert set(records.cells) == {A.id, B.id} and [m.value for m in records.metrics] == [0.5, 0.7]
    assert records.problems == []
    assert all(isinstance(m, MetricRecord) for m in records.metrics)
    assert all(isinstance(c, CellRecord) for c in records.cells.values())


def test_truncated_block_is_reported_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, _cell_rows("a", 0.5))
    # A run killed mid-write: one full metric line of cell b, then half a line, no cell row.
    with path.open("a") as handle:
        handle.write(json.dumps(_cell_rows("b", 0.9)[0].model_dump(mode="json")) + "\n")
        handle.write('{"type": "metric", "cell": "b", "ru')
    records = read_records(path)
    assert set(records.cells) == {A.id}
    assert [m.cell for m in records.metrics] == [A.id]  # b's orphan metric does not count
    assert len(records.problems) == 1 and f"{path}:4: not valid JSON" in records.problems[0]


def test_append_after_partial_line_keeps_new_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"type": "metric", "cell": "b", "ru')  # killed writer, no newline
    append_records(path, _cell_rows("a", 0.5))
    records = read_records(path)
    assert set(records.cells) == {A.id} and [m.value for m in records.metrics] == [0.5]
    assert len(records.problems) == 1 and ":1: not valid JSON" in records.problems[0]


def test_foreign_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('[1, 2]\n{"type": "metric", "value": 1}\n')
    problems = read_records(path).problems
    assert problems[0].startswith(f"{path}:1: not a fedbench record")
    assert problems[1].startswith(f"{path}:2: record without cell/run id")


def test_a_row_that_breaks_the_schema_is_named_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    rows = [r.model_dump(mode="json") for r in _cell_rows("a", 0.5)]
    rows[0]["value"] = "high"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_records(path)
    assert records.metrics == [] and set(records.cells) == {A.id}
    assert records.problems == [
        f"{path}:1: field 'value': Input should be a valid number, unable to parse string "
        "as a number; line skipped"
    ]


def test_cell_written_twice_counts_once_the_latest_run(tmp_path: Path) -> None:
    # A rerun of a complete cell (e.g. ``--resume-any`` off after a code change) replaces it.
    path = tmp_path / "records.jsonl"
    append_records(path, _cell_rows("a", 0.5))
    append_records(path, _cell_rows("a", 0.6))
    records = read_records(path)
    assert [m.value for m in records.metrics] == [0.6]


def test_failed_cell_then_success(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, _cell_rows("a", 0.5, status="failed"))
    assert set(read_records(path).failed) == {A.id} and not read_records(path).cells
    assert read_records(path).metrics == []  # a failed cell writes no metric rows
    append_records(path, _cell_rows("a", 0.6))
    records = read_records(path)
    assert set(records.cells) == {A.id} and not records.failed


def test_results_dir_errors_explain(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="does not exist"):
        read_results_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ResultsError, match=r"holds no records\.jsonl \(found: notes\.txt\)"):
        read_results_dir(tmp_path)
