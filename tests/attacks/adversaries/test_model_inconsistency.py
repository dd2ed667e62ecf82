"""Model inconsistency through whole cells: the dead models of the other clients add nothing
but the output bias to the secure sum, so the server inverts the target as if unprotected; the
model-consistency check refuses the round."""

from __future__ import annotations

import torch

from fedbench.attacks.adversaries.model_inconsistency import dead_layout
from fedbench.config import parse_experiment
from fedbench.fl.params import get_flat, set_flat
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import CellRecord, MetricRecord
from fedbench.harness.suite import Cell
from fedbench.models import mlp


def _cell(defenses: list, adversary: object) -> dict[tuple[str, str], MetricRecord]:
    cfg = parse_experiment({
        "name": "mi", "data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "fl": {"algorithm": "fedsgd", "num_clients": 10, "client_fraction": 1.0, "rounds": 1,
               "batch_size": 1, "client_lr": 0.1},
        "attacks": [{"name": "idlg", "iterations": 20}], "adversary": adversary,
        "defenses": defenses,
    })
    rows = run_cell(Cell("t", "mi", "x", 0, cfg))
    assert isinstance(rows[-1], CellRecord) and rows[-1].status == "ok", rows[-1].error
    return {(r.view.value if r.view else "", r.metric): r for r in rows
            if isinstance(r, MetricRecord)}


def test_a_dead_model_updates_only_the_output_bias() -> None:
    model = mlp(in_shape=(1, 8, 8), num_classes=10, hidden=[16])
    keep, dead, known = dead_layout(model)
    w = get_flat(model)
    dead_w = torch.where(keep, w, torch.zeros_like(w))
    set_flat(model, torch.where(dead, torch.full_like(w, -1e4), dead_w))
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.all(grad[known] == 0) and torch.any(grad[~known] != 0)
    assert int((~known).sum()) == 10  # the output bias, nothing else


def test_secagg_sum_is_inverted_as_the_targets_own_update() -> None:
    isolated = _cell(["secagg"], {"name": "model_inconsistency", "target": 0})
    honest = _cell(["secagg"], "honest_but_curious")
    psnr = isolated[("client_update", "psnr")].value
    assert psnr is not None and psnr > 50  # SecAgg's 16-bit rounding bounds it, nothing else
    assert isolated[("client_update", "label_accuracy")].value == 1.0
    assert honest[("aggregate", "psnr")].value < psnr - 20  # honestly: 10 images in one sum
    assert ("client_update", "psnr") not in honest


def test_the_model_consistency_check_refuses_the_round() -> None:
    checked = _cell([{"name": "secagg", "model_consistency": True}],
                    {"name": "model_inconsistency", "target": 0})
    assert checked[("", "rounds_failed")].value == 1
    assert "ConsistencyError" in checked[("client_update", "applicable")].note


def test_against_a_plaintext_channel_the_inconsistency_is_labelled_moot() -> None:
    plain = _cell([], {"name": "model_inconsistency", "target": 0})
    assert plain[("", "adversary_effect")].note.startswith("moot: the channel already reveals")
