"""Tests for fedbench.harness.records: atomic appends, corrupted lines, no duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedbench.errors import ResultsError
from fedbench.harness.records import append_records, read_records, read_results_dir


def _cell_rows(cell: str, run: str, value: float, status: str = "ok") -> list[dict]:
    return [
        {"type": "metric", "cell": cell, "run": run, "metric": "accuracy", "value": value},
        {"type": "cell", "cell": cell, "run": run, "status": status},
    ]


def test_append_then_read(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "records.jsonl"
    append_records(path, _cell_rows("a", "r1", 0.5))
    append_records(path, _cell_rows("b", "r2", 0.7))
    records = read_records(path)
    assert set(records.cells) == {"a", "b"} and [m["value"] for m in records.metrics] == [0.5, 0.7]
    assert records.problems == []


def test_truncated_block_is_reported_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, _cell_rows("a", "r1", 0.5))
    # A run killed mid-write: one full metric line of cell b, then half a line, no cell row.
    with path.open("a") as handle:
        handle.write(json.dumps(_cell_rows("b", "r2", 0.9)[0]) + "\n")
        handle.write('{"type": "metric", "cell": "b", "ru')
    records = read_records(path)
    assert set(records.cells) == {"a"}
    assert [m["cell"] for m in records.metrics] == ["a"]  # b's orphan metric does not count
    assert len(records.problems) == 1 and f"{path}:4: not valid JSON" in records.problems[0]


def test_append_after_partial_line_keeps_new_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"type": "metric", "cell": "b", "ru')  # killed writer, no newline
    append_records(path, _cell_rows("a", "r1", 0.5))
    records = read_records(path)
    assert set(records.cells) == {"a"} and [m["value"] for m in records.metrics] == [0.5]
    assert len(records.problems) == 1 and ":1: not valid JSON" in records.problems[0]


def test_foreign_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('[1, 2]\n{"type": "metric", "value": 1}\n')
    problems = read_records(path).problems
    assert problems[0].startswith(f"{path}:1: not a fedbench record")
    assert problems[1].startswith(f"{path}:2: record without cell/run id")


def test_cell_written_twice_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, _cell_rows("a", "r1", 0.5))
    append_records(path, _cell_rows("a", "r2", 0.6))
    records = read_records(path)
    assert [m["value"] for m in records.metrics] == [0.5]


def test_failed_cell_then_success(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    append_records(path, [{"type": "cell", "cell": "a", "run": "r1", "status": "failed"}])
    assert set(read_records(path).failed) == {"a"} and not read_records(path).cells
    append_records(path, _cell_rows("a", "r2", 0.6))
    records = read_records(path)
    assert set(records.cells) == {"a"} and not records.failed


def test_results_dir_errors_explain(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="does not exist"):
        read_results_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ResultsError, match=r"holds no records\.jsonl \(found: notes\.txt\)"):
        read_results_dir(tmp_path)
