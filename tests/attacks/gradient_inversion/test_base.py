"""The family contract: views in order, no private data in run(), notes and extras recorded."""

from __future__ import annotations

import math

import pytest
import torch

from fedbench.attack import GroundTruth
from fedbench.data.tensors import TensorData
from fedbench.fl.views import ViewKind
from fedbench.registry import ATTACKS

from .helpers import factory, fedsgd, knowledge, sgd_update_view

INVERSION = ["dlg", "idlg", "inverting_gradients", "fedavg_inversion", "analytic_fc"]
QUICK = {"dlg": {"iterations": 2}, "idlg": {"iterations": 2},
         "inverting_gradients": {"iterations": 3, "restarts": 2},
         "fedavg_inversion": {"iterations": 3, "restarts": 2}, "analytic_fc": {}}


@pytest.mark.parametrize("name", INVERSION)
def test_client_update_first_then_the_aggregate(name: str) -> None:
    attack = ATTACKS.create(name, QUICK[name])
    assert attack.views == (ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE)
    everything = set(ViewKind)
    assert attack.usable_views(everything) == (ViewKind.CLIENT_UPDATE, ViewKind.AGGREGATE)
    # Secure aggregation or HE hide single updates: the aggregate is what is left.
    assert attack.usable_views(everything - {ViewKind.CLIENT_UPDATE}) == (ViewKind.AGGREGATE,)
    assert attack.usable_views({ViewKind.FINAL_MODEL}) == ()


@pytest.mark.parametrize("name", INVERSION)
def test_run_needs_no_private_data_and_no_labels(name: str, digits: TensorData) -> None:
    build = factory("mlp", (1, 8, 8), seed=0, hidden=[16])
    private = digits.subset(torch.arange(2))
    x, y = private.x.clone(), private.y.clone()
    view = sgd_update_view(build, x, y, lr=0.1)  # the view holds the update, never labels
    # Wreck the private tensors after the update is computed: an attack that read them would
    # return NaNs; the population is someone else's data.
    x.fill_(math.nan)
    y.fill_(-1)
    population = digits.subset(torch.arange(500, 600))
    result = ATTACKS.create(name, QUICK[name]).run(
        view, knowledge(build, fedsgd(2), population, input_shape=(1, 8, 8)))
    assert result.reconstruction.shape == (2, 1, 8, 8)
    assert torch.isfinite(result.reconstruction).all()
    assert result.labels.shape == (2,) and int(result.labels.min()) >= 0
    assert result.extras["view"] == "client_update" and result.extras["num_images"] == 2
    assert result.scores is None  # no membership guesses from an inversion attack


@pytest.mark.parametrize("name", ["idlg", "inverting_gradients"])
def test_run_without_population_data(name: str, digits: TensorData) -> None:
    build = factory("mlp", (1, 8, 8), seed=0, hidden=[16])
    view = sgd_update_view(build, digits.x[:3], digits.y[:3], lr=0.1)
    empty = digits.subset(torch.arange(0))
    result = ATTACKS.create(name, QUICK[name]).run(
        view, knowledge(build, fedsgd(3), empty, input_shape=(1, 8, 8)))
    assert torch.isfinite(result.reconstruction).all() and len(result.labels) == 3


def test_score_carries_the_caveats_and_the_final_loss(digits: TensorData) -> None:
    build = factory("mlp", (1, 8, 8), seed=0, hidden=[16])
    private = digits.subset(torch.arange(4, 5))
    view = sgd_update_view(build, private.x, private.y, lr=0.1)
    attack = ATTACKS.create("idlg", {"iterations": 2})
    result = attack.run(view, knowledge(build, fedsgd(1), digits, input_shape=(1, 8, 8)))
    metrics = {m.name: m for m in attack.score(result, GroundTruth(examples=private))}
    assert "iDLG" in metrics["psnr"].note
    assert metrics["final_matching_loss"].value >= 0
    with pytest.raises(ValueError, match="private examples"):
        attack.score(result, GroundTruth())
