"""Multi-step FedAvg inversion: simulating the local steps beats the one-gradient proxy."""

from __future__ import annotations

import pytest
import torch

from fedbench.attacks.gradient_inversion.multistep import FedAvgInversion, local_steps
from fedbench.attacks.gradient_inversion.objective import FunctionalModel, MatchingObjective
from fedbench.attacks.gradient_inversion.views import inversion_target
from fedbench.fl.client import batch_schedule
from fedbench.harness.build import model_factory
from fedbench.seeding import Streams

from .helpers import run_experiment, simulate


def fedavg(seed: int, attack: str) -> dict:
    return {
        "data": "digits", "model": {"name": "mlp", "hidden": [64]}, "seed": seed,
        "fl": {"algorithm": "fedavg", "local_steps": 4, "batch_size": 2, "num_clients": 10,
               "rounds": 1, "clients_per_round": 1, "client_lr": 0.5},
        "attacks": [{"name": attack, "iterations": 300, "restarts": 4}],
    }


def test_only_the_simulated_update_vanishes_at_the_true_images() -> None:
    config = fedavg(0, "fedavg_inversion")
    sim, data, cfg = simulate({**config, "attacks": []})
    view = sim.transcript.client_update_view(0)
    recipe = cfg.fl.recipe
    target = inversion_target(view, recipe)
    # Test side: the client's examples in the order its private shuffling visited them.
    client = data.clients[view.client_id]
    order = torch.cat(batch_schedule(
        len(client), recipe, Streams(cfg.seed).torch("local_training", 0, view.client_id)))
    model = FunctionalModel(model_factory(cfg, data, Streams(cfg.seed))(), view.params,
                            torch.device("cpu"))
    simulated = MatchingObjective(model, model.split(target.update), distance="cosine",
                                  steps=local_steps(target))
    proxy = MatchingObjective(model, model.split(target.gradient), distance="cosine")
    x, y = client.x[order], client.y[order]
    assert float(simulated.matching(x, y)) < 1e-5
    assert float(proxy.matching(x, y)) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_fedavg_inversion_beats_the_one_gradient_proxy(seed: int) -> None:
    simulated, _ = run_experiment(fedavg(seed, "fedavg_inversion"))
    proxy, _ = run_experiment(fedavg(seed, "inverting_gradients"))
    assert simulated["images_matched"].value == 8
    assert simulated["psnr"].value >= proxy["psnr"].value + 2.0
    assert "matched as one gradient" in proxy["psnr"].note
    assert "simulated 4 local step(s)" in simulated["psnr"].note


def test_labels_are_optimised_only_when_there_are_several_local_batches(digits) -> None:
    from fedbench.fl.views import ClientUpdateView

    from .helpers import factory, fedsgd, knowledge

    build = factory("mlp", (1, 8, 8), seed=0)
    know = knowledge(build, fedsgd(4), digits, input_shape=(1, 8, 8))
    view = ClientUpdateView(round=0, client_id=0, params=torch.zeros(1), update=torch.zeros(1),
                            weight=1.0, num_examples=4)
    attack = FedAvgInversion(iterations=1, restarts=3)
    labels = torch.tensor([1, 1, 2, 5])
    assert attack.label_logits(inversion_target(view, fedsgd(4)), labels, know) is None
    two_steps = recipe_from_steps(2)
    logits = attack.label_logits(inversion_target(view, two_steps), labels, know)
    assert logits.shape == (3, 4, 10)
    # Every image starts near the recovered class frequencies: classes 1, 2, 5 lead.
    assert set(logits.mean(dim=(0, 1)).topk(3).indices.tolist()) == {1, 2, 5}


def recipe_from_steps(steps: int):
    from fedbench.fl.recipe import TrainingRecipe

    return TrainingRecipe("fedavg", batch_size=2, local_epochs=1, local_steps=steps, lr=0.1)
