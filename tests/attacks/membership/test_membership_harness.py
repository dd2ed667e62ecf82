"""Every membership attack end to end through the harness: views, records, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from membership_target import OVERFIT

from fedbench.config import parse_experiment
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import MetricRecord
from fedbench.harness.suite import Cell

ATTACK_SET: list[dict[str, Any]] = [
    {"name": "loss_threshold"},
    {"name": "confidence"},
    {"name": "entropy"},
    {"name": "shadow"},
    {"name": "lira", "num_models": 8},
    {"name": "lira", "num_models": 4, "online": False},
    {"name": "rmia", "num_models": 2},
    {"name": "update_mia"},
    {"name": "audit", "attack": "rmia", "attack_params": {"num_models": 2}},
]


def _rows(
    defenses: list[Any], figures: Path | None = None, **changes: Any
) -> list[dict[str, Any]]:
    cfg = parse_experiment({**OVERFIT, **changes, "attacks": ATTACK_SET, "defenses": defenses})
    rows = run_cell(Cell("t", "overfit", "x", cfg.seed, cfg), figures_dir=figures)
    assert rows[-1].status == "ok", rows[-1].error
    return rows


def _by_attack(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    return [r for r in rows if isinstance(r, MetricRecord) and r.metric == metric]


def test_every_attack_beats_chance_on_an_overfitted_model(tmp_path: Path) -> None:
    rows = _rows([], figures=tmp_path)
    aucs = _by_attack(rows, "mia_auc")
    # update_mia runs on both views the plaintext channel opens (each update, the model
    # sequence); every other attack on the final model. Audit reports its attack's metrics too.
    assert len(aucs) == len(ATTACK_SET) + 1
    for row in aucs:
        assert row.value > 0.55, (row.attack, row.value)
    views = sorted((str(r.attack), r.view.value) for r in aucs if r.attack == "update_mia")
    assert views == [("update_mia", "client_update"), ("update_mia", "model_sequence")]
    assert all(r.view == "final_model" for r in aucs if r.attack != "update_mia")
    (audited,) = _by_attack(rows, "epsilon_lower_bound")
    assert audited.value > 0 and audited.higher_is_better is False
    figures = [r.path for r in rows if isinstance(r, MetricRecord) and r.metric == "figure"]
    assert len(figures) == len(ATTACK_SET) + 1
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in figures)


@pytest.mark.slow
def test_secure_aggregation_hides_updates_but_not_the_released_model() -> None:
    # Secure aggregation needs at least three clients: 3 × 60 examples.
    three = {"split": {**OVERFIT["split"], "max_train_examples": 180},
             "fl": {**OVERFIT["fl"], "num_clients": 3}}
    plain = {r.attack: r for r in _by_attack(_rows([], **three), "mia_auc")}
    secagg = [{"name": "secagg", "tolerated_dropout": 0.0}]
    masked = {r.attack: r for r in _by_attack(_rows(secagg, **three), "mia_auc")}
    assert plain["update_mia"].view == "client_update"
    assert masked["update_mia"].view == "model_sequence"  # single updates are hidden
    for attack in ("loss_threshold", "lira", "rmia"):
        assert masked[attack].view == "final_model"
        assert masked[attack].value == pytest.approx(plain[attack].value, abs=0.05)
