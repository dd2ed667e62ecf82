"""Views become the right matching targets: exact mean gradients, weights divided out."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedbench.attacks.gradient_inversion.objective import FunctionalModel, LocalSteps
from fedbench.attacks.gradient_inversion.views import inversion_target
from fedbench.fl.client import batch_schedule
from fedbench.fl.params import set_flat
from fedbench.fl.views import FinalModelView
from fedbench.harness.build import model_factory
from fedbench.seeding import Streams

from .helpers import examples_behind, fedsgd, simulate

DIGITS_MLP = {"data": "digits", "model": {"name": "mlp", "hidden": [16]}}


def true_mean_gradient(cfg, data, params, x, y) -> torch.Tensor:
    model = model_factory(cfg, data, Streams(cfg.seed))()
    set_flat(model, params)
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_fedsgd_client_view_is_the_batch_mean_gradient_with_the_weight_divided_out() -> None:
    sim, data, cfg = simulate({
        **DIGITS_MLP,
        "partition": {"name": "dirichlet", "alpha": 0.5},
        "fl": {"algorithm": "fedsgd", "batch_size": 4, "num_clients": 5, "rounds": 1,
               "weighting": "weighted", "client_lr": 0.3},
    })
    view = sim.transcript.client_update_view(0)
    assert view.weight != pytest.approx(1.0)  # unequal client sizes: the weight matters
    target = inversion_target(view, cfg.fl.recipe)
    truth = examples_behind(sim, data, (view.client_id,))
    expected = true_mean_gradient(cfg, data, view.params, truth.x, truth.y)
    assert (target.num_images, target.steps) == (4, 1)
    torch.testing.assert_close(target.gradient, expected, rtol=1e-4, atol=1e-6)


def test_fedsgd_aggregate_is_the_mean_gradient_over_all_clients_images() -> None:
    sim, data, cfg = simulate({
        **DIGITS_MLP,
        "fl": {"algorithm": "fedsgd", "batch_size": 2, "num_clients": 8, "rounds": 1,
               "weighting": "uniform", "client_lr": 0.1},
    })
    view = sim.transcript.aggregate_view(0)
    target = inversion_target(view, cfg.fl.recipe)
    truth = examples_behind(sim, data, view.contributors)
    assert (target.num_clients, target.num_images) == (8, 16)
    expected = true_mean_gradient(cfg, data, view.params, truth.x, truth.y)
    torch.testing.assert_close(target.gradient, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_simulated_local_steps_reproduce_a_fedavg_update(momentum: float) -> None:
    sim, data, cfg = simulate({
        **DIGITS_MLP,
        "fl": {"algorithm": "fedavg", "batch_size": 3, "local_steps": 4, "num_clients": 6,
               "rounds": 1, "weighting": "weighted", "client_lr": 0.2,
               "client_momentum": momentum},
    })
    view = sim.transcript.client_update_view(0)
    recipe = cfg.fl.recipe
    target = inversion_target(view, recipe)
    assert (target.steps, target.batch_size, target.num_images) == (4, 3, 12)
    # Test side only: replay the client's private shuffling to order its examples as visited.
    client = data.clients[view.client_id]
    batches = batch_schedule(len(client), recipe, Streams(cfg.seed).torch(
        "local_training", 0, view.client_id))
    order = torch.cat(batches)
    model = FunctionalModel(model_factory(cfg, data, Streams(cfg.seed))(), view.params,
                            torch.device("cpu"))
    steps = LocalSteps(tuple(target.schedule()), target.lr, target.momentum)
    produced = model.local_update(model.params, client.x[order], client.y[order], steps)
    flat = torch.cat([v.flatten() for v in produced.values()])
    torch.testing.assert_close(flat, target.update, rtol=1e-4, atol=1e-6)


def test_fedavg_epochs_cycle_over_the_clients_images() -> None:
    from fedbench.fl.recipe import TrainingRecipe
    from fedbench.fl.views import ClientUpdateView

    view = ClientUpdateView(round=0, client_id=0, params=torch.zeros(3), update=torch.ones(3),
                            weight=0.5, num_examples=5)
    recipe = TrainingRecipe("fedavg", batch_size=2, local_epochs=2, local_steps=None, lr=0.5)
    target = inversion_target(view, recipe)
    assert (target.steps, target.num_images) == (6, 5)
    assert target.schedule() == [slice(0, 2), slice(2, 4), slice(4, 5)] * 2
    torch.testing.assert_close(target.update, torch.full((3,), 2.0))
    torch.testing.assert_close(target.gradient, torch.full((3,), -2.0 / (0.5 * 6)))


def test_views_without_an_update_or_with_zero_weight_are_refused() -> None:
    from fedbench.fl.views import ClientUpdateView

    with pytest.raises(TypeError, match="final_model"):
        inversion_target(FinalModelView(params=torch.zeros(3)), fedsgd(1))
    zero = ClientUpdateView(round=0, client_id=7, params=torch.zeros(3), update=torch.ones(3),
                            weight=0.0, num_examples=5)
    with pytest.raises(ValueError, match="client 7"):
        inversion_target(zero, fedsgd(1))
