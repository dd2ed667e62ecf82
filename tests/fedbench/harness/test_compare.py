"""Tests for fedbench.harness.compare: planted regressions are caught, unchanged runs pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fedbench.cli import main
from fedbench.config import Tolerance, Tolerances
from fedbench.harness.compare import compare_benchmarks, compare_records, judge
from fedbench.harness.records import RecordSet, append_records


def _metric(
    cell: str,
    metric: str,
    value: float | None,
    hib: bool | None,
    kind: str,
    *,
    unit: str = "",
    timing: bool = False,
    source: str = "fl",
) -> dict:
    return {
        "type": "metric",
        "cell": cell,
        "run": f"run-{cell}",
        "experiment": "e",
        "defense": cell,
        "seed": 0,
        "grid": {},
        "source": source,
        "attack": None,
        "metric": metric,
        "value": value,
        "higher_is_better": hib,
        "kind": kind,
        "unit": unit,
        "timing": timing,
        "status": "ok",
    }


def _run() -> list[dict]:
    rows = []
    for cell in ("plain", "secagg"):
        rows += [
            _metric(cell, "accuracy", 0.95, True, "utility"),
            _metric(cell, "mia_auc", 0.60, False, "privacy", source="attack:lira"),
            _metric(cell, "aggregation_time_ratio", 40.0, False, "cost", unit="×", timing=True),
            _metric(
                cell, "aggregate_seconds_per_round", 0.01, False, "cost", unit="s", timing=True
            ),
        ]
        rows.append(
            {
                "type": "cell",
                "cell": cell,
                "run": f"run-{cell}",
                "status": "ok",
                "label": f"e/{cell}/seed=0",
            }
        )
    return rows


def _records(rows: list[dict]) -> RecordSet:
    return RecordSet(
        metrics=[r for r in rows if r["type"] == "metric"],
        cells={r["cell"]: r for r in rows if r["type"] == "cell"},
    )


def _set(rows: list[dict], cell: str, metric: str, value: float) -> list[dict]:
    rows = copy.deepcopy(rows)
    next(r for r in rows if r.get("cell") == cell and r.get("metric") == metric)["value"] = value
    return rows


def test_unchanged_run_passes_and_seconds_are_ignored() -> None:
    new = _set(_run(), "plain", "aggregate_seconds_per_round", 5.0)  # another machine
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert not result.failed
    assert {c.metric for c in result.changes} == {"accuracy", "mia_auc", "aggregation_time_ratio"}


def test_planted_privacy_regression_is_flagged() -> None:
    new = _set(_run(), "secagg", "mia_auc", 0.65)  # the attack got stronger: defense weaker
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert result.failed
    assert [(c.where, c.metric) for c in result.regressions] == [
        ("e/secagg/seed=0 attack:lira", "mia_auc")
    ]


def test_privacy_improvement_is_not_a_regression() -> None:
    new = _set(_run(), "secagg", "mia_auc", 0.50)
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert not result.failed and [c.verdict for c in result.changes if c.metric == "mia_auc"] == [
        "unchanged",
        "improvement",
    ]


def test_planted_cost_regression_is_flagged_relative() -> None:
    slightly = _set(_run(), "plain", "aggregation_time_ratio", 50.0)  # +25% < 50% tolerance
    assert not compare_records(_records(_run()), _records(slightly), Tolerances()).failed
    doubled = _set(_run(), "plain", "aggregation_time_ratio", 80.0)
    result = compare_records(_records(_run()), _records(doubled), Tolerances())
    assert [c.metric for c in result.regressions] == ["aggregation_time_ratio"]
    # Near a ratio of 1 the absolute floor applies: timer noise, not a regression.
    near_one = _set(_run(), "plain", "aggregation_time_ratio", 1.0)
    noisy = _set(near_one, "plain", "aggregation_time_ratio", 4.0)
    assert not compare_records(_records(near_one), _records(noisy), Tolerances()).failed


def _irreproducible(rows: list[dict], cell: str, why: str) -> list[dict]:
    rows = copy.deepcopy(rows)
    for row in rows:
        if row.get("cell") == cell:
            row["irreproducible"] = why
    return rows


def test_regressions_in_irreproducible_cells_are_reported_without_failing(
    tmp_path: Path, capsys
) -> None:
    why = "ckks: SEAL draws CKKS encryption noise from the OS"
    old = _irreproducible(_run(), "secagg", why)
    new = _set(old, "secagg", "mia_auc", 0.70)  # beyond tolerance, in a cell that varies
    result = compare_records(_records(old), _records(new), Tolerances())
    assert not result.failed and result.regressions == []
    assert [(c.metric, c.irreproducible) for c in result.irreproducible_regressions] == [
        ("mia_auc", why)
    ]
    assert "regression (irreproducible cell)" in set(result.table()["verdict"])
    # The same change in a cell the seeds fix still fails.
    assert compare_records(_records(old), _records(_set(old, "plain", "mia_auc", 0.70)),
                           Tolerances()).failed
    append_records(tmp_path / "old" / "records.jsonl", old)
    append_records(tmp_path / "new" / "records.jsonl", new)
    assert main(["compare", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s)" in out and "1 more beyond tolerance" in out and why in out


def test_missing_cells_are_listed_not_compared() -> None:
    new = [r for r in _run() if r.get("cell") != "secagg"]
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert result.missing_in_new == ["e/secagg/seed=0"] and result.failed
    assert all("secagg" not in c.where for c in result.changes)
    extra = compare_records(_records(new), _records(_run()), Tolerances())
    assert extra.only_in_new == ["e/secagg/seed=0"] and not extra.failed


@pytest.mark.parametrize(
    "old, new, hib, tol, verdict",
    [
        (0.9, 0.85, True, Tolerance(abs=0.02), "regression"),
        (0.9, 0.89, True, Tolerance(abs=0.02), "within tolerance"),
        (10.0, 12.0, False, Tolerance(rel=0.1), "regression"),
        (10.0, 10.9, False, Tolerance(rel=0.1), "within tolerance"),
        (1.0, None, False, Tolerance(), "not comparable"),
        (3.0, 7.0, None, Tolerance(), "unchanged"),
    ],
)
def test_judge(old, new, hib, tol, verdict) -> None:
    assert judge(old, new, hib, tol)[0] == verdict


def test_benchmark_json_ratios(tmp_path: Path) -> None:
    def bench(ratio: float) -> dict:
        return {
            "benchmarks": [
                {
                    "fullname": "test_agg[secagg-n10]",
                    "extra_info": {
                        "ratio_to_plaintext": ratio,
                        "seconds": 9.0,
                        "compare": {"ratio_to_plaintext": "lower"},
                    },
                }
            ]
        }

    old, same, worse = tmp_path / "old.json", tmp_path / "same.json", tmp_path / "worse.json"
    old.write_text(json.dumps(bench(1.2)))
    same.write_text(json.dumps(bench(1.25)))
    worse.write_text(json.dumps(bench(2.0)))
    assert main(["compare", str(old), str(same)]) == 0
    assert main(["compare", str(old), str(worse)]) == 1
    result = compare_benchmarks(
        {"a": {"compare": {"x": "higher"}, "x": 10}},
        {"a": {"compare": {"x": "higher"}, "x": 5}},
        Tolerances(),
    )
    assert [c.verdict for c in result.changes] == ["regression"]


def test_cli_compare_on_results_folders(tmp_path: Path, capsys) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    append_records(old / "records.jsonl", _run())
    append_records(new / "records.jsonl", _set(_run(), "plain", "accuracy", 0.80))
    assert main(["compare", str(old), str(old)]) == 0
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "1 regression(s)" in out
