"""Tests for fedbench.harness.runner: resume after a crash, no duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbench.config import parse_suite
from fedbench.harness import executors, runner
from fedbench.harness.records import read_records
from fedbench.harness.suite import expand

SUITE = {
    "name": "mini",
    "experiments": [
        {
            "name": "d",
            "data": "digits",
            "model": "logreg",
            "fl": {"num_clients": 3, "rounds": 2},
            "attacks": ["loss_threshold"],
            "mia_candidates": 50,
        }
    ],
    "seeds": [0, 1, 2],
}


def test_resume_after_crash_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    suite = parse_suite(SUITE)
    real = executors.execute_cell
    calls: list[str] = []

    def crash_on_second(cell, **kw):
        calls.append(cell.id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is killed while cell 2 runs
        return real(cell, **kw)

    monkeypatch.setattr(executors, "execute_cell", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(suite, results_root=tmp_path, progress=False)
    path = tmp_path / "mini" / "records.jsonl"
    assert len(read_records(path).cells) == 1

    calls.clear()
    monkeypatch.setattr(
        executors, "execute_cell", lambda cell, **kw: calls.append(cell.id) or real(cell, **kw)
    )
    summary = runner.run_suite(suite, results_root=tmp_path, progress=False)
    ids = [c.id for c in expand(suite)]
    assert calls == ids[1:] and summary.skipped == 1 and not summary.failed
    records = read_records(path)
    assert set(records.cells) == set(ids)
    accuracy_rows = [m for m in records.metrics if m.metric == "accuracy"]
    assert sorted(m.cell for m in accuracy_rows) == sorted(ids)  # one per cell

    calls.clear()
    again = runner.run_suite(suite, results_root=tmp_path, progress=False)
    assert calls == [] and again.skipped == 3
    assert (tmp_path / "mini" / "suite.yaml").exists()


def test_failed_cell_reruns_on_resume(tmp_path: Path) -> None:
    # Passes every pre-run check but fails while it runs: with q = 0.01 nobody takes part, so
    # the membership attack has no members to score.
    fl = {"num_clients": 3, "rounds": 1, "client_fraction": 0.01, "sampling": "poisson"}
    bad = {**SUITE, "experiments": [{**SUITE["experiments"][0], "fl": fl}], "seeds": [0]}
    summary = runner.run_suite(parse_suite(bad), results_root=tmp_path, progress=False)
    assert len(summary.failed) == 1
    assert "no client contributed" in next(iter(summary.failed.values()))
    again = runner.run_suite(parse_suite(bad), results_root=tmp_path, progress=False)
    assert again.skipped == 0  # a failed cell is not complete


def _set_version(monkeypatch, version: str) -> None:
    from fedbench.harness import writer

    monkeypatch.setattr(runner, "code_version", lambda: version)
    monkeypatch.setattr(writer, "code_version", lambda: version)


def test_cells_of_another_code_version_rerun_unless_any_version_may_be_reused(
    tmp_path: Path, monkeypatch
) -> None:
    suite = parse_suite({**SUITE, "seeds": [0]})
    _set_version(monkeypatch, "v1")
    first = runner.run_suite(suite, results_root=tmp_path, progress=False)
    assert len(first.done) == 1
    _set_version(monkeypatch, "v2")  # the code changed: the old numbers must not be served
    resumed = runner.run_suite(suite, results_root=tmp_path, progress=False, resume_any=True)
    assert resumed.skipped == 1 and resumed.stale == 0
    again = runner.run_suite(suite, results_root=tmp_path, progress=False)
    assert again.skipped == 0 and again.stale == 1 and len(again.done) == 1
    records = read_records(tmp_path / "mini" / "records.jsonl")
    (cell,) = records.cells.values()
    assert cell.code_version == "v2"  # the latest complete run counts
    assert runner.run_suite(suite, results_root=tmp_path, progress=False).skipped == 1


def test_results_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    from fedbench.errors import ResultsError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="is a file, not a folder"):
        runner.run_suite(parse_suite(SUITE), results_root=tmp_path / "file", progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mini").write_text("x")
    with pytest.raises(ResultsError, match="is a file; the suite's results need a folder"):
        runner.run_suite(parse_suite(SUITE), results_root=tmp_path / "out", progress=False)
