"""``fedbench compare OLD NEW``: did a change make privacy, utility or cost worse?

Records are compared cell by cell (same cell id = same configuration and seed) and metric by
metric; whether a change is worse comes from the metric's ``higher_is_better``, how much is
tolerated from the suite's tolerances. Absolute wall-clock seconds are never compared (they
depend on the machine); ratios measured within one run are.

Noise decides before tolerances do: where the baseline value has a 95% interval (over examples,
seeds or rounds), a change that stays inside it is "within noise" and one outside it counts,
whatever the fixed tolerance. A timed ratio (CPU time of a channel over that of a plaintext sum,
both in this process) must leave both its interval and its tolerance, and where the new run has
an interval too, the two intervals must not overlap: the rounds of one run do not show how much
another run's caches and clock move it. Two concurrent passes of the quick suite (identical
code, load 0.72 per CPU on both) read a distributed-DP ratio 163 → 398, its median over rounds
flipping between two modes, with intervals [136, 385] and [147, 440]. A timed ratio without an
interval (one round, one timing) is not judged at all ("not comparable"): identical code moved
such ratios by up to 2.1× between two runs on the same 2-core machine, in both directions, so
one timing cannot tell a change from noise; the benchmarks in ``benchmarks/`` time each channel
repeatedly and hold its speed targets. Nor are timed ratios of two cells whose machine load (the
1-minute load average per CPU their records hold) differs by more than ``LOAD_GAP``: a pass of
the quick suite beside the test suite read a distributed-DP ratio 2.4× higher than the same code
on a quieter machine, though both sides of the ratio are CPU time (the other process takes
caches and memory bandwidth, not only the clock). pytest-benchmark JSON files are compared on
the ``extra_info`` entries each benchmark declares in ``extra_info["compare"]``
(``{"ratio_to_plaintext": "lower", "speedup": "higher"}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedbench.config import Tolerance, Tolerances
from fedbench.errors import ResultsError
from fedbench.harness.records import RecordSet
from fedbench.harness.schema import MetricRecord
from fedbench.metrics.intervals import Interval

#: The largest difference in load per CPU at which timed ratios are still compared.
LOAD_GAP = 0.5


@dataclass(frozen=True)
class Change:
    """One compared metric."""

    where: str
    metric: str
    old: float | None
    new: float | None
    allowed: float
    # "regression", "improvement", "unchanged", "within tolerance", "within noise",
    # "not comparable"
    verdict: str
    irreproducible: str | None = None  # why this cell's results vary between identical runs


@dataclass
class Comparison:
    """The result of comparing two runs."""

    changes: list[Change] = field(default_factory=list)
    missing_in_new: list[str] = field(default_factory=list)
    only_in_new: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        """Changes worse than tolerated, in cells whose results the seeds fix."""
        return [c for c in self.changes if c.verdict == "regression" and not c.irreproducible]

    @property
    def irreproducible_regressions(self) -> list[Change]:
        """Changes worse than tolerated in cells that vary between identical runs (reported,
        never failing: a rerun of the same code moves them as much)."""
        return [c for c in self.changes if c.verdict == "regression" and c.irreproducible]

    @property
    def failed(self) -> bool:
        """Whether CI should fail: a regression, or cells/benchmarks that disappeared."""
        return bool(self.regressions or self.missing_in_new)

    def table(self, *, everything: bool = False) -> pd.DataFrame:
        """Changed metrics (or all compared ones) as a DataFrame."""
        rows = [
            {"where": c.where, "metric": c.metric, "old": c.old, "new": c.new,
             "allowed": c.allowed,
             "verdict": c.verdict + (" (irreproducible cell)" if c.irreproducible else "")}
            for c in self.changes
            if everything or c.verdict not in ("unchanged",)
        ]
        return pd.DataFrame(rows, columns=["where", "metric", "old", "new", "allowed", "verdict"])


def judge(
    old: float | None,
    new: float | None,
    higher_is_better: bool | None,
    tolerance: Tolerance,
    *,
    noise: Interval | None = None,
    new_noise: Interval | None = None,
    timing: bool = False,
) -> tuple[str, float]:
    """Verdict and allowed change for one metric; ``noise`` is the baseline's 95% interval,
    ``new_noise`` the candidate's (used for timed ratios only)."""
    if old is None or new is None:
        return ("unchanged" if old is None and new is None else "not comparable"), 0.0
    allowed = max(tolerance.abs, tolerance.rel * abs(old))
    if timing and noise is None and old != new:
        return "not comparable", allowed
    if higher_is_better is None or old == new:
        return "unchanged", allowed
    worse_by = (old - new) if higher_is_better else (new - old)
    beyond_tolerance = abs(worse_by) > allowed
    if noise is not None:
        if noise.contains(new) or (timing and new_noise is not None and noise.overlaps(new_noise)):
            return "within noise", allowed
        if timing and not beyond_tolerance:
            return "within tolerance", allowed
    elif not beyond_tolerance:
        return "within tolerance", allowed
    return ("regression" if worse_by > 0 else "improvement"), allowed


def _comparable(row: MetricRecord) -> bool:
    # Seconds depend on the machine; figures and markers carry no value.
    return not (row.timing and row.unit == "s") and row.metric != "figure"


def _index(records: RecordSet) -> dict[tuple[str, str, str, str], MetricRecord]:
    # The view is part of the key: one attack runs on every open view, one row each.
    return {(r.cell, r.source, r.view.value if r.view else "", r.metric): r
            for r in records.metrics if _comparable(r)}


def _label(row: MetricRecord) -> str:
    grid = "".join(f"/{k}={v}" for k, v in row.grid.items())
    return f"{row.experiment}/{row.defense}{grid}/seed={row.seed}"


def compare_records(old: RecordSet, new: RecordSet, tolerances: Tolerances) -> Comparison:
    """Compare two record sets cell by cell."""
    result = Comparison()
    labels_old = {c: r.label for c, r in old.cells.items()}
    labels_new = {c: r.label for c, r in new.cells.items()}
    result.missing_in_new = sorted(labels_old[c] for c in set(old.cells) - set(new.cells))
    result.only_in_new = sorted(labels_new[c] for c in set(new.cells) - set(old.cells))
    old_rows, new_rows = _index(old), _index(new)
    for key, before in old_rows.items():
        if key[0] not in new.cells:
            continue
        after = new_rows.get(key)
        where = f"{_label(before)} {key[1]}" + (f" @ {key[2]}" if key[2] else "")
        metric = key[3]
        if after is None:
            result.changes.append(Change(where, metric, before.value, None, 0.0,
                                         "not comparable"))
            if before.status == "ok":
                result.missing_in_new.append(f"{where}: {metric}")
            continue
        tolerance = tolerances.for_metric(metric, before.kind)
        verdict, allowed = judge(before.value, after.value, before.higher_is_better, tolerance,
                                 noise=before.interval, new_noise=after.interval,
                                 timing=before.timing)
        gap = _load_gap(old.cells[key[0]].host if key[0] in old.cells else {},
                        new.cells[key[0]].host)
        if before.timing and gap is not None and gap > LOAD_GAP and verdict != "unchanged":
            verdict = f"not comparable (load per CPU differs by {gap:.1f})"
        irreproducible = before.irreproducible or after.irreproducible
        result.changes.append(Change(
            where, metric, before.value, after.value, allowed, verdict, irreproducible,
        ))
    return result


def _load_gap(old: dict[str, Any], new: dict[str, Any]) -> float | None:
    """How far apart the two cells' machine loads per CPU were, when both recorded one."""
    before, after = old.get("load_per_cpu"), new.get("load_per_cpu")
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return None
    return abs(float(after) - float(before))


def load_benchmark_json(path: Path) -> dict[str, dict[str, Any]]:
    """pytest-benchmark JSON: benchmark fullname -> extra_info."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {b["fullname"]: b.get("extra_info", {}) for b in data["benchmarks"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ResultsError(f"{path} is not a pytest-benchmark JSON file: {err}") from err


def compare_benchmarks(
    old: dict[str, dict[str, Any]],
    new: dict[str, dict[str, Any]],
    tolerances: Tolerances,
    rel_tolerance: float = 0.25,
) -> Comparison:
    """Compare the ratios each benchmark declares in ``extra_info["compare"]``.

    Ratios not named in ``tolerances.by_metric`` may move by ``rel_tolerance`` (25% by default:
    on a shared 2-core machine same-run ratios moved by a median of 3% and at most 40% between
    two runs of identical code).
    """
    result = Comparison(
        missing_in_new=sorted(set(old) - set(new)), only_in_new=sorted(set(new) - set(old))
    )
    for name, info in old.items():
        if name not in new:
            continue
        for metric, direction in (info.get("compare") or {}).items():
            if direction not in ("higher", "lower"):
                raise ResultsError(f"{name}: compare direction of {metric!r} must be higher/lower")
            tolerance = tolerances.by_metric.get(metric) or Tolerance(rel=rel_tolerance)
            before = _ratio(info, metric, f"{name} (OLD)")
            after = _ratio(new[name], metric, f"{name} (NEW)")
            if before is not None and after is None:  # a declared ratio that vanished
                result.missing_in_new.append(f"{name}: {metric}")
                result.changes.append(Change(name, metric, before, None, 0.0, "not comparable"))
                continue
            verdict, allowed = judge(before, after, direction == "higher", tolerance)
            result.changes.append(Change(name, metric, before, after, allowed, verdict))
    return result


def _ratio(info: dict[str, Any], metric: str, where: str) -> float | None:
    value = info.get(metric)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: ratio {metric!r} is {value!r}, not a number") from None


def baseline_tolerances(old: Path) -> Tolerances:
    """The tolerances of the baseline's suite (OLD's suite.yaml), never the candidate's: a
    candidate must not loosen the gate it is judged by."""
    from pydantic import ValidationError

    from fedbench.harness.report import read_suite

    suite = read_suite(old)
    if "tolerances" not in suite:
        return Tolerances()
    try:
        return Tolerances.model_validate(suite["tolerances"])
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ResultsError(
            f"{old / 'suite.yaml'}: tolerances.{field}: {first['msg']}"
        ) from None


def compare_paths(old: Path, new: Path, *, rel_tolerance: float = 0.25) -> Comparison:
    """Compare two results folders (tolerances from OLD's suite.yaml) or two benchmark JSONs
    (``rel_tolerance`` for their declared ratios)."""
    from fedbench.harness.records import read_results_dir

    if rel_tolerance < 0:
        raise ResultsError(f"--rel-tolerance must be non-negative, got {rel_tolerance}")
    if old.suffix == ".json" or new.suffix == ".json":
        if not (old.suffix == ".json" and new.suffix == ".json"):
            raise ResultsError(f"compare {old} with {new}: both must be benchmark JSON files")
        return compare_benchmarks(
            load_benchmark_json(old), load_benchmark_json(new), Tolerances(), rel_tolerance
        )
    tolerances = baseline_tolerances(old)
    return compare_records(read_results_dir(old), read_results_dir(new), tolerances)
