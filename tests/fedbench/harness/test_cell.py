"""Tests for fedbench.harness.cell: one experiment end to end, records and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.config import parse_experiment
from fedbench.data.membership import membership_candidates
from fedbench.harness.cell import run_cell
from fedbench.harness.records import Row
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell
from fedbench.registry import ATTACKS

EXPERIMENT = {
    "name": "tiny",
    "data": "digits",
    "model": {"name": "mlp", "hidden": [32]},
    "fl": {"num_clients": 4, "rounds": 3, "local_epochs": 2, "batch_size": 16},
    "attacks": ["loss_threshold"],
    "mia_candidates": 100,
}
VOLATILE = {"run", "started", "duration_s", "host", "git_commit", "versions"}
EXCLUDED = {**dict.fromkeys(VOLATILE, True), "history": {"__all__": {"aggregate_seconds"}}}


def _cell(seed: int = 0, **changes) -> Cell:
    cfg = parse_experiment({**EXPERIMENT, **changes, "seed": seed})
    return Cell("t", cfg.name, "none", seed, cfg)


def _stable(rows: list[Row]) -> list[dict]:
    return [
        row.model_dump(exclude=EXCLUDED) for row in rows
        if not (isinstance(row, MetricRecord) and row.timing)
    ]


def test_records_are_long_format_with_provenance() -> None:
    rows = run_cell(_cell())
    metrics = {r.metric: r for r in rows if isinstance(r, MetricRecord)}
    cell_row = rows[-1]
    assert isinstance(cell_row, CellRecord) and cell_row.status == "ok"
    assert cell_row.config["seed"] == 0 and cell_row.seeds == {"seed": 0}
    assert cell_row.duration_s > 0 and cell_row.host["cpus"] > 0
    assert cell_row.versions["torch"] != "not installed"
    assert metrics["accuracy"].higher_is_better is True and metrics["accuracy"].value > 0.7
    assert metrics["mia_auc"].higher_is_better is False
    assert (
        metrics["mia_auc"].attack == "loss_threshold"
        and metrics["mia_auc"].view == "final_model"
    )
    assert metrics["upload_bytes_per_param"].value == 4.0  # plaintext float32
    assert all(r.run == cell_row.run for r in rows)


def test_same_seed_identical_records_different_seed_differs() -> None:
    a, b, c = run_cell(_cell(0)), run_cell(_cell(0)), run_cell(_cell(1))
    assert _stable(a) == _stable(b)
    values = lambda rows: [r["value"] for r in _stable(rows) if r["type"] == "metric"]  # noqa: E731
    assert values(a) != values(c)


def test_failing_cell_is_recorded_not_raised() -> None:
    rows = run_cell(_cell(partition={"name": "dirichlet", "alpha": 1.0, "min_size": 1000}))
    assert len(rows) == 1 and rows[0].status == "failed"
    assert "min_size 1000" in rows[0].error and "Traceback" in rows[0].traceback


def test_attack_without_open_view_is_recorded_not_applicable() -> None:
    from fedbench.attack import Attack
    from fedbench.fl.views import ViewKind

    @ATTACKS.register("_test_needs_client_update")
    class NeedsUpdate(Attack):
        views = (ViewKind.CLIENT_UPDATE,)

        def run(self, view, knowledge):  # pragma: no cover - never called
            raise AssertionError

        def score(self, result, truth):  # pragma: no cover
            raise AssertionError

    try:
        from fedbench.fl.channel import PlaintextChannel

        # A channel that hides updates closes the view the attack needs.
        PlaintextChannel.reveals_client_updates = False
        rows = run_cell(_cell(attacks=["_test_needs_client_update"]))
    finally:
        PlaintextChannel.reveals_client_updates = True
        ATTACKS._components.pop("_test_needs_client_update")
    row = next(r for r in rows if isinstance(r, MetricRecord)
               and r.attack == "_test_needs_client_update")
    assert row.status == "not_applicable" and "needs one of [client_update]" in row.note


def test_membership_candidates_are_balanced_and_anonymous() -> None:
    from fedbench.harness.build import build_data
    from fedbench.seeding import Streams

    cfg = parse_experiment(EXPERIMENT)
    data = build_data(cfg, Streams(0))
    candidates, membership = membership_candidates(data, {0, 2}, 50, np.random.default_rng(0))
    assert len(candidates) == 100 and membership.sum() == 50
    assert candidates.ids.tolist() == list(range(100))  # ids carry no membership information
    member_rows = candidates.x[membership == 1]
    pool = np.concatenate([data.clients[0].x.numpy(), data.clients[2].x.numpy()])
    for row in member_rows[:10].numpy():
        assert (np.abs(pool - row).reshape(len(pool), -1).max(1) == 0).any()


@pytest.mark.parametrize("bad", [{"model": {"name": "mlp", "hiden": [3]}}, {"fl": {"rounds": -1}}])
def test_bad_experiment_fails_before_any_work(bad: dict) -> None:
    from fedbench.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_experiment({**EXPERIMENT, **bad})


def test_canaries_out_are_removed_before_training_in_are_kept() -> None:
    from fedbench.data.membership import insert_canaries
    from fedbench.harness.build import build_data
    from fedbench.seeding import Streams

    data = build_data(parse_experiment(EXPERIMENT), Streams(0))
    fewer, canaries = insert_canaries(data, 200, np.random.default_rng(0))
    assert 70 < canaries.included.sum() < 130  # fair coins
    before = sum(len(c) for c in data.clients)
    assert sum(len(c) for c in fewer.clients) == before - (200 - canaries.included.sum())
    pool = np.concatenate([c.x.numpy().reshape(len(c), -1) for c in fewer.clients])
    for record, kept in zip(canaries.records.x.numpy(), canaries.included, strict=True):
        present = (np.abs(pool - record.reshape(1, -1)).max(axis=1) == 0).any()
        assert present == bool(kept)
    assert canaries.records.ids.tolist() == list(range(200))


def test_audit_on_canaries_says_so() -> None:
    rows = run_cell(_cell(attacks=[{"name": "audit", "attack": "loss_threshold"}], canaries=100))
    bound = next(r for r in rows if isinstance(r, MetricRecord)
                 and r.metric == "epsilon_lower_bound")
    assert "canaries kept in training by independent fair coins" in bound.note
    assert "on 100 candidates" in bound.note


def test_costs_are_not_measurable_when_no_round_completes() -> None:
    # SecAgg refuses rounds with fewer than 3 clients: nothing was aggregated, so a cost of 0
    # would read as "free"; it must be missing, with the reason.
    fl = {"num_clients": 2, "rounds": 1, "sampling": "poisson", "client_fraction": 1.0}
    rows = run_cell(_cell(fl=fl, defenses=["secagg"], attacks=[]))
    metrics = {r.metric: r for r in rows if isinstance(r, MetricRecord)}
    assert metrics["rounds_failed"].value == 1
    for name in ("upload_bytes_per_param", "aggregation_time_ratio"):
        assert metrics[name].value is None
        assert metrics[name].note == "not measurable: no round completed"


def test_utility_and_cost_carry_their_intervals() -> None:
    rows = run_cell(_cell(defenses=["secagg"]))
    metrics = {r.metric: r for r in rows if isinstance(r, MetricRecord)}
    accuracy = metrics["accuracy"]
    assert accuracy.interval is not None and accuracy.interval.method == "Wilson, n=359"  # 20%
    assert accuracy.interval.low < accuracy.value < accuracy.interval.high
    ratio = metrics["aggregation_time_ratio"]
    assert ratio.interval is not None and "over 3 rounds" in ratio.interval.method
    assert ratio.interval.low <= ratio.value <= ratio.interval.high
    auc = metrics["mia_auc"]
    assert auc.interval is not None and auc.interval.low <= auc.value <= auc.interval.high


def test_accuracy_after_one_fedsgd_round_is_not_a_number_to_compare() -> None:
    fl = {"algorithm": "fedsgd", "rounds": 1, "num_clients": 4}
    rows = run_cell(_cell(fl=fl, attacks=[]))
    accuracy = next(r for r in rows if isinstance(r, MetricRecord) and r.metric == "accuracy")
    assert accuracy.value is None and accuracy.note.startswith("n/a: one FedSGD round")


def _inversion_rows(num_clients: int) -> dict[str, dict[str, MetricRecord]]:
    fl = {"algorithm": "fedsgd", "rounds": 1, "num_clients": num_clients,
          "client_fraction": 1.0, "batch_size": 1, "weighting": "uniform"}
    rows = run_cell(_cell(fl=fl, attacks=[{"name": "idlg", "iterations": 3,
                                           "inner_iterations": 5}]))
    by_view: dict[str, dict[str, MetricRecord]] = {}
    for row in rows:
        if isinstance(row, MetricRecord) and row.attack == "idlg" and row.view:
            by_view.setdefault(row.view, {})[row.metric] = row
    return by_view


def test_aggregate_of_one_contributor_is_scored_once_as_its_update() -> None:
    views = _inversion_rows(num_clients=1)
    single, total = views["client_update"], views["aggregate"]
    assert "attack_seconds" in single and "attack_seconds" not in total  # not run twice
    assert total["psnr"].value == single["psnr"].value
    assert "scored once" in total["psnr"].note and "scored once" not in single["psnr"].note


def test_aggregate_of_two_contributors_is_attacked_on_its_own() -> None:
    views = _inversion_rows(num_clients=2)
    assert "attack_seconds" in views["aggregate"]
    assert "scored once" not in views["aggregate"]["psnr"].note
