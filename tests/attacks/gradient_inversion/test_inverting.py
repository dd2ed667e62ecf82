"""Inverting Gradients: schedule, batched restarts, scoring by loss, boxed pixels, recovery."""

from __future__ import annotations

import pytest
import torch

from fedbench.attacks.gradient_inversion.inverting import (
    InvertingGradients,
    milestones,
    signed_adam,
)
from fedbench.attacks.gradient_inversion.objective import FunctionalModel, MatchingObjective
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat

from .helpers import factory, run_experiment

SHAPE = (3, 32, 32)


def lenet_objective(patches: TensorData, count: int) -> tuple[MatchingObjective, TensorData]:
    build = factory("lenet", SHAPE, seed=4)
    model = FunctionalModel(build(), get_flat(build()), torch.device("cpu"))
    truth = patches.subset(torch.arange(10, 10 + count))
    target = model.gradient(model.params, truth.x, truth.y)
    return MatchingObjective(model, target, distance="cosine", tv_weight=1e-4), truth


def test_learning_rate_drops_at_three_five_and_seven_eighths() -> None:
    assert milestones(4000) == [1500, 2500, 3500]
    assert milestones(8) == [3, 5, 7]


def test_batched_restarts_equal_separate_runs(patches: TensorData) -> None:
    objective, truth = lenet_objective(patches, 2)
    x0 = torch.rand(2, 2, *SHAPE, generator=torch.Generator().manual_seed(0))
    together = signed_adam(objective, x0, truth.y, iterations=8, lr=0.1, box=(0, 1), desc="")
    for r in range(2):
        alone = signed_adam(objective, x0[r : r + 1], truth.y, iterations=8, lr=0.1,
                            box=(0, 1), desc="")
        torch.testing.assert_close(together.losses[r], alone.losses[0], rtol=1e-4, atol=1e-6)
    winner = signed_adam(objective, x0[together.best : together.best + 1], truth.y,
                         iterations=8, lr=0.1, box=(0, 1), desc="")
    torch.testing.assert_close(together.x, winner.x, rtol=1e-4, atol=1e-5)


def test_the_restart_with_the_lowest_final_loss_wins(patches: TensorData) -> None:
    objective, truth = lenet_objective(patches, 1)
    noise = torch.rand(3, 1, *SHAPE, generator=torch.Generator().manual_seed(1))
    x0 = torch.stack([noise[0], truth.x, noise[2]])  # restart 1 starts at the answer
    outcome = signed_adam(objective, x0, truth.y, iterations=2, lr=1e-7, box=(0, 1), desc="")
    assert outcome.best == 1
    assert float(outcome.losses[1]) < 1e-4 < float(outcome.losses.max())
    torch.testing.assert_close(outcome.x, truth.x, atol=1e-5, rtol=0)


def test_pixels_stay_in_the_box(patches: TensorData) -> None:
    objective, truth = lenet_objective(patches, 1)
    x0 = 3 * torch.randn(2, 1, *SHAPE, generator=torch.Generator().manual_seed(2))
    outcome = signed_adam(objective, x0, truth.y, iterations=5, lr=0.5, box=(0, 1), desc="")
    assert float(outcome.x.min()) >= 0.0 and float(outcome.x.max()) <= 1.0


@pytest.mark.parametrize("batch", [1, 4])
def test_inverting_gradients_recovers_mlp_inputs(batch: int) -> None:
    metrics, _ = run_experiment({
        "data": "digits", "model": {"name": "mlp", "hidden": [64]}, "seed": 0,
        "fl": {"algorithm": "fedsgd", "batch_size": batch, "num_clients": 10, "rounds": 1,
               "clients_per_round": 1},
        "attacks": [{"name": "inverting_gradients", "iterations": 200, "restarts": 2}],
    })
    assert metrics["psnr"].value >= 40.0
    assert metrics["label_accuracy"].value == 1.0


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="iterations"):
        InvertingGradients(iterations=0)
    with pytest.raises(ValueError, match="tv_weight"):
        InvertingGradients(tv_weight=-1.0)
