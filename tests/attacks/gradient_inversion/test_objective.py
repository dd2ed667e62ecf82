"""The torch.func objective against plain autograd and torch.optim references."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedbench.attacks.gradient_inversion.objective import (
    FunctionalModel,
    LocalSteps,
    MatchingObjective,
    cosine,
    euclidean,
    known_layers,
    total_variation,
)
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat

from .helpers import factory

SHAPE = (3, 32, 32)


@pytest.fixture
def lenet() -> FunctionalModel:
    build = factory("lenet", SHAPE, seed=3)
    return FunctionalModel(build(), get_flat(build()), torch.device("cpu"))


def test_functional_gradient_equals_autograd(lenet: FunctionalModel, patches: TensorData) -> None:
    x, y = patches.x[:4], patches.y[:4]
    reference = factory("lenet", SHAPE, seed=3)()
    F.cross_entropy(reference(x), y).backward()
    produced = lenet.gradient(lenet.params, x, y)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(produced[name], param.grad, rtol=1e-5, atol=1e-7)


def test_soft_labels_equal_hard_labels_when_one_hot(
    lenet: FunctionalModel, patches: TensorData
) -> None:
    x, y = patches.x[:2], patches.y[:2]
    hard = lenet.gradient(lenet.params, x, y)
    soft = lenet.gradient(lenet.params, x, F.one_hot(y, 10).float())
    for name in hard:
        torch.testing.assert_close(hard[name], soft[name])


def test_batched_restarts_equal_single_restarts(
    lenet: FunctionalModel, patches: TensorData
) -> None:
    target = lenet.gradient(lenet.params, patches.x[:2], patches.y[:2])
    objective = MatchingObjective(lenet, target, distance="cosine", tv_weight=1e-2)
    x = torch.rand(3, 2, *SHAPE)
    y = patches.y[:2].expand(3, 2)
    batched = objective.batched()(x, y)
    single = torch.stack([objective(x[r], y[r]) for r in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)
    # And the input gradients (what the attack follows) agree too.
    xb = x.clone().requires_grad_(True)
    objective.batched()(xb, y).sum().backward()
    xs = x[1].clone().requires_grad_(True)
    objective(xs, y[1]).backward()
    torch.testing.assert_close(xb.grad[1], xs.grad, rtol=1e-4, atol=1e-7)


def test_the_true_images_are_a_zero_of_the_objective(
    lenet: FunctionalModel, patches: TensorData
) -> None:
    x, y = patches.x[:2], patches.y[:2]
    target = lenet.gradient(lenet.params, x, y)
    for distance in ("euclidean", "cosine"):
        objective = MatchingObjective(lenet, target, distance=distance)
        assert float(objective(x, y)) == pytest.approx(0.0, abs=1e-5)
        assert float(objective(torch.rand_like(x), y)) > 1e-3


def test_distances() -> None:
    a = {"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([2.0])}
    b = {"w": torch.tensor([[0.0, 2.0]]), "b": torch.tensor([-1.0])}
    assert float(euclidean(a, b)) == pytest.approx(1.0 + 9.0)
    assert float(cosine(a, {k: 3 * v for k, v in a.items()})) == pytest.approx(0.0, abs=1e-7)
    assert float(cosine(a, {k: -v for k, v in a.items()})) == pytest.approx(2.0)
    # ⟨a, b⟩ = 4 − 2 = 2; ‖a‖ = 3, ‖b‖ = √5.
    assert float(cosine(a, b)) == pytest.approx(1 - 2 / (3 * 5**0.5))


def test_total_variation() -> None:
    assert float(total_variation(torch.full((1, 3, 4, 4), 0.7))) == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., 1::2] = 1.0  # every horizontal neighbour differs by 1, no vertical one
    assert float(total_variation(stripes)) == pytest.approx(1.0)
    assert float(total_variation(torch.rand(5, 30))) == 0.0  # tabular: no prior


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_local_update_equals_torch_sgd(momentum: float, digits: TensorData) -> None:
    build = factory("mlp", (1, 8, 8), seed=1, hidden=[12])
    model = FunctionalModel(build(), get_flat(build()), torch.device("cpu"))
    x, y = digits.x[:5], digits.y[:5]
    steps = LocalSteps((slice(0, 2), slice(2, 4), slice(4, 5), slice(0, 2)), lr=0.3,
                       momentum=momentum)
    produced = model.local_update(model.params, x, y, steps)
    reference = build()
    start = get_flat(reference).clone()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3, momentum=momentum)
    for batch in steps.schedule:
        optimizer.zero_grad()
        F.cross_entropy(reference(x[batch]), y[batch]).backward()
        optimizer.step()
    flat = torch.cat([v.flatten() for v in produced.values()])
    torch.testing.assert_close(flat, get_flat(reference) - start, rtol=1e-5, atol=1e-7)


def test_local_update_averages_clients(digits: TensorData) -> None:
    build = factory("logreg", (1, 8, 8), seed=0)
    model = FunctionalModel(build(), get_flat(build()), torch.device("cpu"))
    x, y = digits.x[:4], digits.y[:4]
    one = LocalSteps((slice(0, 2),), lr=0.1)
    both = LocalSteps((slice(0, 2),), lr=0.1, clients=2)
    first = model.local_update(model.params, x[:2], y[:2], one)
    second = model.local_update(model.params, x[2:], y[2:], one)
    mean = model.local_update(model.params, x, y, both)
    for name in mean:
        torch.testing.assert_close(mean[name], (first[name] + second[name]) / 2)


def test_split_checks_the_length(lenet: FunctionalModel) -> None:
    with pytest.raises(ValueError, match="entries"):
        lenet.split(torch.zeros(5))
    with pytest.raises(ValueError, match="distance"):
        MatchingObjective(lenet, lenet.params, distance="manhattan")  # type: ignore[arg-type]


def test_coordinates_others_filled_are_left_out_of_the_matching(
    lenet: FunctionalModel, patches: TensorData
) -> None:
    # The target is the true gradient except where other clients added to it (the output bias
    # under model inconsistency): with those coordinates marked unknown, the true input is an
    # exact minimiser again; without the mark it is not.
    x, y = patches.x[:1], patches.y[:1]
    flat = torch.cat([g.flatten() for g in lenet.gradient(lenet.params, x, y).values()])
    known = torch.ones_like(flat, dtype=torch.bool)
    known[-10:] = False  # lenet's output bias comes last
    polluted = torch.where(known, flat, flat + 3.0)
    masked = MatchingObjective(lenet, lenet.split(polluted), distance="euclidean",
                               known=known_layers(lenet, known))
    unmasked = MatchingObjective(lenet, lenet.split(polluted), distance="euclidean")
    assert float(masked.matching(x, y)) < 1e-12
    assert float(unmasked.matching(x, y)) > 1.0
