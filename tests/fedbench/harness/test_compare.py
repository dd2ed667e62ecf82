"""Tests for fedbench.harness.compare: planted regressions are caught, unchanged runs pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from records_factory import CellRecords, make_cell, read_back

from fedbench.cli import main
from fedbench.config import Tolerance, Tolerances
from fedbench.fl.views import ViewKind
from fedbench.harness.compare import compare_benchmarks, compare_records, judge
from fedbench.harness.records import RecordSet, Row, append_records
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.metrics.intervals import Interval

CELLS = {"plain": make_cell("none"), "secagg": make_cell("secagg")}


def _run(
    values: dict[tuple[str, str], float] | None = None,
    irreproducible: dict[str, str] | None = None,
    cells: tuple[str, ...] = ("plain", "secagg"),
) -> list[Row]:
    """Both cells' records, with some values changed and some cells marked irreproducible."""
    values, irreproducible = values or {}, irreproducible or {}

    def value(cell: str, metric: str, default: float) -> float:
        return values.get((cell, metric), default)

    rows: list[Row] = []
    for name in cells:
        records = CellRecords(CELLS[name])
        records.metric("accuracy", value(name, "accuracy", 0.95), True)
        records.metric("mia_auc", value(name, "mia_auc", 0.60), False, kind="privacy",
                       source="attack:lira", attack="lira")
        ratio = value(name, "aggregation_time_ratio", 40.0)
        records.metric("aggregation_time_ratio", ratio, False, kind="cost", unit="×",
                       timing=True, interval=(0.95 * ratio, 1.05 * ratio))
        records.metric("aggregate_seconds_per_round",
                       value(name, "aggregate_seconds_per_round", 0.01), False, kind="cost",
                       unit="s", timing=True)
        rows += records.rows(irreproducible=irreproducible.get(name))
    return rows


def _records(rows: list[Row]) -> RecordSet:
    return read_back(rows)


def test_unchanged_run_passes_and_seconds_are_ignored() -> None:
    new = _run({("plain", "aggregate_seconds_per_round"): 5.0})  # another machine
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert not result.failed
    assert {c.metric for c in result.changes} == {"accuracy", "mia_auc", "aggregation_time_ratio"}


def test_planted_privacy_regression_is_flagged() -> None:
    new = _run({("secagg", "mia_auc"): 0.65})  # the attack got stronger: defense weaker
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert result.failed
    assert [(c.where, c.metric) for c in result.regressions] == [
        ("exp/secagg/seed=0 attack:lira", "mia_auc")
    ]


def test_privacy_improvement_is_not_a_regression() -> None:
    new = _run({("secagg", "mia_auc"): 0.50})
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert not result.failed and [c.verdict for c in result.changes if c.metric == "mia_auc"] == [
        "unchanged",
        "improvement",
    ]


def test_planted_cost_regression_is_flagged_relative() -> None:
    slightly = _run({("plain", "aggregation_time_ratio"): 50.0})  # +25% < 50% tolerance
    assert not compare_records(_records(_run()), _records(slightly), Tolerances()).failed
    doubled = _run({("plain", "aggregation_time_ratio"): 80.0})
    result = compare_records(_records(_run()), _records(doubled), Tolerances())
    assert [c.metric for c in result.regressions] == ["aggregation_time_ratio"]
    # Near a ratio of 1 the absolute floor applies: timer noise, not a regression.
    near_one = _run({("plain", "aggregation_time_ratio"): 1.0})
    noisy = _run({("plain", "aggregation_time_ratio"): 4.0})
    assert not compare_records(_records(near_one), _records(noisy), Tolerances()).failed


def test_a_timing_without_an_interval_is_not_judged() -> None:
    """One round, one timing: identical code moves it by up to 2.1×, either way."""
    tolerance = Tolerance(rel=0.5, abs=5.0)
    assert judge(212.0, 354.0, False, tolerance, timing=True)[0] == "not comparable"
    assert judge(212.0, 212.0, False, tolerance, timing=True)[0] == "unchanged"
    # The same change with an interval over rounds is judged, and fails.
    rounds = Interval(200.0, 225.0, "bootstrap over rounds")
    assert judge(212.0, 354.0, False, tolerance, noise=rounds, timing=True)[0] == "regression"


def test_a_timing_whose_intervals_overlap_is_within_noise() -> None:
    """Measured: identical code at one load read 163 [136, 385] and 398 [147, 440]."""
    tolerance = Tolerance(rel=0.5, abs=5.0)
    before, after = Interval(136.0, 385.0, "rounds"), Interval(147.0, 440.0, "rounds")
    assert judge(163.0, 398.0, False, tolerance, noise=before, new_noise=after,
                 timing=True)[0] == "within noise"
    # Disjoint intervals still fail, and privacy metrics ignore the candidate's interval.
    slower = Interval(390.0, 440.0, "rounds")
    assert judge(163.0, 398.0, False, tolerance, noise=before, new_noise=slower,
                 timing=True)[0] == "regression"
    auc_before, auc_after = Interval(0.50, 0.56, "bootstrap"), Interval(0.55, 0.70, "bootstrap")
    assert judge(0.53, 0.62, False, Tolerance(rel=0.0, abs=0.02), noise=auc_before,
                 new_noise=auc_after)[0] == "regression"


def _with_load(rows: list[Row], load: float) -> list[Row]:
    """The rows with every cell record's host load per CPU set to ``load``."""
    return [r.model_copy(update={"host": {**r.host, "load_per_cpu": load}})
            if isinstance(r, CellRecord) else r for r in rows]


def test_timed_ratios_of_cells_at_very_different_loads_are_not_judged() -> None:
    doubled = _run({("plain", "aggregation_time_ratio"): 80.0})  # a regression at equal load
    quiet, busy = _records(_with_load(_run(), 0.6)), _records(_with_load(doubled, 1.9))
    result = compare_records(quiet, busy, Tolerances())
    assert not result.failed
    verdicts = {c.verdict for c in result.changes if c.metric == "aggregation_time_ratio"}
    assert "not comparable (load per CPU differs by 1.3)" in verdicts
    # Privacy and utility are judged whatever the load; timings at similar loads too.
    worse = _records(_with_load(_run({("secagg", "mia_auc"): 0.70}), 1.9))
    assert [c.metric for c in compare_records(quiet, worse, Tolerances()).regressions] == [
        "mia_auc"]
    similar = _records(_with_load(doubled, 0.8))
    assert [c.metric for c in compare_records(quiet, similar, Tolerances()).regressions] == [
        "aggregation_time_ratio"]


def test_psnr_max_is_judged_in_decibels_like_psnr() -> None:
    tolerances = Tolerances()
    assert tolerances.for_metric("psnr_max", "privacy") == tolerances.for_metric("psnr", "privacy")


def test_regressions_in_irreproducible_cells_are_reported_without_failing(
    tmp_path: Path, capsys
) -> None:
    why = "ckks: SEAL draws CKKS encryption noise from the OS"
    old = _run(irreproducible={"secagg": why})
    new = _run({("secagg", "mia_auc"): 0.70}, {"secagg": why})  # beyond tolerance, varies
    result = compare_records(_records(old), _records(new), Tolerances())
    assert not result.failed and result.regressions == []
    assert [(c.metric, c.irreproducible) for c in result.irreproducible_regressions] == [
        ("mia_auc", why)
    ]
    assert "regression (irreproducible cell)" in set(result.table()["verdict"])
    # The same change in a cell the seeds fix still fails.
    fixed = _run({("plain", "mia_auc"): 0.70}, {"secagg": why})
    assert compare_records(_records(old), _records(fixed), Tolerances()).failed
    append_records(tmp_path / "old" / "records.jsonl", old)
    append_records(tmp_path / "new" / "records.jsonl", new)
    assert main(["compare", str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s)" in out and "1 more beyond tolerance" in out and why in out


def test_missing_cells_are_listed_not_compared() -> None:
    new = _run(cells=("plain",))
    result = compare_records(_records(_run()), _records(new), Tolerances())
    assert result.missing_in_new == ["exp/secagg/seed=0"] and result.failed
    assert all("secagg" not in c.where for c in result.changes)
    extra = compare_records(_records(new), _records(_run()), Tolerances())
    assert extra.only_in_new == ["exp/secagg/seed=0"] and not extra.failed


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


NOISE = Interval(0.55, 0.65, "test")


@pytest.mark.parametrize(
    "new, timing, verdict",
    [
        (0.64, False, "within noise"),    # beyond the 0.02 tolerance, inside the interval
        (0.66, False, "regression"),      # outside the interval, whatever the tolerance
        (0.54, False, "improvement"),
        (0.655, True, "within tolerance"),  # a timing must leave its tolerance too
        (0.70, True, "regression"),
    ],
)
def test_noise_decides_before_tolerance(new: float, timing: bool, verdict: str) -> None:
    # MIA AUC 0.60 [0.55, 0.65]: lower is better for the defense.
    tolerance = Tolerance(abs=0.02) if not timing else Tolerance(rel=0.1)
    assert judge(0.60, new, False, tolerance, noise=NOISE, timing=timing)[0] == verdict


def _auc_run(value: float, view: ViewKind) -> list:
    cell = CellRecords(make_cell("secagg"))
    cell.metric("mia_auc", 0.5, False, source="attack:update_mia", kind="privacy",
                attack="update_mia", view=ViewKind.AGGREGATE)
    cell.metric("mia_auc", value, False, source="attack:update_mia", kind="privacy",
                attack="update_mia", view=view, interval=(value - 0.01, value + 0.01))
    return cell.rows()


def test_one_attack_on_two_views_is_compared_view_by_view() -> None:
    old = _records(_auc_run(0.60, ViewKind.MODEL_SEQUENCE))
    new = _records(_auc_run(0.70, ViewKind.MODEL_SEQUENCE))
    result = compare_records(old, new, Tolerances())
    [worse] = result.regressions
    assert worse.where.endswith("@ model_sequence") and (worse.old, worse.new) == (0.60, 0.70)
    assert sum(c.metric == "mia_auc" for c in result.changes) == 2


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
    append_records(new / "records.jsonl", _run({("plain", "accuracy"): 0.80}))
    assert main(["compare", str(old), str(old)]) == 0
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "1 regression(s)" in out


def _bench_file(path: Path, info: dict) -> Path:
    path.write_text(json.dumps({"benchmarks": [{"fullname": "b", "extra_info": info}]}))
    return path


def test_a_declared_ratio_missing_or_null_in_new_counts_as_missing(tmp_path: Path) -> None:
    old = _bench_file(tmp_path / "old.json", {"r": 1.0, "compare": {"r": "lower"}})
    for info in ({"compare": {"r": "lower"}}, {"r": None, "compare": {"r": "lower"}}):
        new = _bench_file(tmp_path / "new.json", info)
        assert main(["compare", str(old), str(new)]) == 1


def test_a_non_numeric_ratio_is_named(tmp_path: Path, capsys) -> None:
    old = _bench_file(tmp_path / "old.json", {"r": 1.0, "compare": {"r": "lower"}})
    new = _bench_file(tmp_path / "new.json", {"r": "fast", "compare": {"r": "lower"}})
    assert main(["compare", str(old), str(new)]) == 2
    assert "b (NEW): ratio 'r' is 'fast', not a number" in capsys.readouterr().err


def test_tolerances_come_from_the_baseline_not_the_candidate(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    append_records(old / "records.jsonl", _run())
    append_records(new / "records.jsonl", _run({("plain", "accuracy"): 0.80}))
    loose = {"name": "s", "experiments": [{}], "tolerances": {"by_kind": {"utility": {"abs": 1}}}}
    (new / "suite.yaml").write_text(json.dumps(loose))  # the candidate loosens its own gate
    assert main(["compare", str(old), str(new)]) == 1
    (old / "suite.yaml").write_text(json.dumps(loose))  # the baseline's tolerances do count
    assert main(["compare", str(old), str(new)]) == 0
    bad = {**loose, "tolerances": {"by_kind": {"utility": {"abs": -1}}}}
    (old / "suite.yaml").write_text(json.dumps(bad))
    assert main(["compare", str(old), str(new)]) == 2


def test_two_empty_results_folders_have_nothing_to_compare(tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text("")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "nothing to compare" in capsys.readouterr().out
    (tmp_path / "c").write_text("not a folder")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 2


def test_every_cell_record_says_how_busy_the_machine_was() -> None:
    (cell,) = [r for r in _run(cells=("plain",)) if isinstance(r, CellRecord)]
    load = cell.host["load_per_cpu"]
    assert isinstance(load, float) and load >= 0


def test_compare_records_judges_a_timing_by_both_runs_intervals() -> None:
    """compare_records hands judge the candidate's interval: a doubled ratio whose rounds
    overlap the baseline's is within noise, the same ratio with tight rounds a regression."""
    wide = Interval(30.0, 90.0, "rounds")

    def widened(rows: list[Row]) -> list[Row]:
        return [r.model_copy(update={"interval": wide})
                if isinstance(r, MetricRecord) and r.metric == "aggregation_time_ratio" else r
                for r in rows]

    doubled = _run({("plain", "aggregation_time_ratio"): 80.0})
    assert compare_records(_records(_run()), _records(doubled), Tolerances()).failed
    assert not compare_records(_records(_run()), _records(widened(doubled)), Tolerances()).failed
