"""The imprint server through a whole cell: what secure aggregation hides from an honest server,
an imprinting one reads out of the sum."""

from __future__ import annotations

from fedbench.config import parse_experiment
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell


def _imprint_cell(defenses: list[str]) -> dict[tuple[str, str], MetricRecord]:
    cfg = parse_experiment({
        "name": "imprint", "data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "fl": {"algorithm": "fedsgd", "num_clients": 4, "client_fraction": 1.0, "rounds": 1,
               "batch_size": 2, "client_lr": 0.1},
        "attacks": ["imprint"], "adversary": {"name": "imprint", "bins": 64},
        "defenses": defenses,
    })
    rows = run_cell(Cell("t", "imprint", "+".join(defenses) or "none", 0, cfg))
    cell = rows[-1]
    assert isinstance(cell, CellRecord) and cell.status == "ok", cell.error
    assert cell.adversary.startswith("imprint(") and "bins=64" in cell.adversary
    return {(r.view.value, r.metric): r for r in rows
            if isinstance(r, MetricRecord) and r.attack == "imprint" and r.view}


def test_secagg_leaves_the_imprinting_server_exact_copies_of_inputs() -> None:
    metrics = _imprint_cell(["secagg"])
    assert ("client_update", "exact_recovery") not in metrics  # the channel hides updates
    recovered = metrics[("aggregate", "images_recovered")].value
    assert recovered is not None and recovered >= 1  # 8 inputs in 64 bins: ~7 singletons
    assert metrics[("aggregate", "psnr_max")].value >= 60


def test_without_a_channel_the_single_update_gives_up_its_inputs() -> None:
    metrics = _imprint_cell([])
    assert metrics[("client_update", "exact_recovery")].value == 1.0  # 2 inputs, 64 bins
