"""The secure-aggregation deviation through a whole cell: without the consistency check the
server reads the target's own update; with it the honest clients abort and nothing is read."""

from __future__ import annotations

import pytest

from fedbench.config import parse_experiment
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell


def _deviation_cell(
    defense: dict, adversary: dict | None = None
) -> dict[tuple[str, str], MetricRecord]:
    cfg = parse_experiment({
        "name": "deviation", "data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "fl": {"algorithm": "fedsgd", "num_clients": 10, "client_fraction": 1.0, "rounds": 1,
               "batch_size": 1, "client_lr": 0.1},
        "attacks": [{"name": "idlg", "iterations": 20}],
        "adversary": adversary or {"name": "secagg_deviation", "target": 0, "colluders": [1]},
        "defenses": [defense],
    })
    rows = run_cell(Cell("t", "deviation", "secagg", 0, cfg))
    assert isinstance(rows[-1], CellRecord) and rows[-1].status == "ok", rows[-1].error
    return {(r.view.value if r.view else "", r.metric): r for r in rows
            if isinstance(r, MetricRecord)}


def test_without_the_check_the_target_update_is_read_as_if_unmasked() -> None:
    metrics = _deviation_cell({"name": "secagg", "consistency_check": False})
    psnr = metrics[("client_update", "psnr")]
    assert psnr.value is not None and psnr.value > 60  # iDLG on one image's exact gradient
    assert metrics[("client_update", "label_accuracy")].value == 1.0


def test_the_consistency_check_is_on_against_a_malicious_server_and_aborts_the_round() -> None:
    metrics = _deviation_cell({"name": "secagg"})
    assert metrics[("", "rounds_failed")].value == 1
    assert metrics[("client_update", "applicable")].note.startswith("not applicable")
    assert "ConsistencyError" in metrics[("aggregate", "applicable")].note


@pytest.mark.parametrize("defense", [{"name": "secagg"}])
def test_an_honest_server_opens_no_client_update(defense: dict) -> None:
    metrics = _deviation_cell(defense, adversary={"name": "honest_but_curious"})
    assert ("client_update", "psnr") not in metrics and metrics[("", "rounds_failed")].value == 0


def test_against_a_plaintext_channel_the_deviation_is_labelled_moot() -> None:
    metrics = _deviation_cell({"name": "prune"})
    assert metrics[("", "adversary_effect")].note.startswith("moot: no secure aggregation")


def test_a_key_swapping_server_reads_the_target_without_the_check_and_is_refused_with_it() -> None:
    swap = {"name": "secagg_key_swap", "target": 0}
    metrics = _deviation_cell({"name": "secagg", "consistency_check": False}, adversary=swap)
    psnr = metrics[("client_update", "psnr")]
    assert psnr.value is not None and psnr.value > 60
    assert metrics[("", "rounds_failed")].value == 0  # nobody noticed
    refused = _deviation_cell({"name": "secagg"}, adversary=swap)
    assert refused[("", "rounds_failed")].value == 1
    assert "keys or model hashes substituted" in refused[("aggregate", "applicable")].note
