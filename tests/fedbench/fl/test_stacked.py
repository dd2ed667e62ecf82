"""Tests for fedbench.fl.stacked: many copies of a model trained at once, equal to the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedbench.data.tensors import TensorData
from fedbench.fl.client import SGDTraining, batch_schedule
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.stacked import (
    gradients_of,
    grouped_forward,
    local_sgd_stacked,
    pad_schedules,
    stacked_gradients,
    train_stacked,
    vectorizable,
    vmapped_forward,
)
from fedbench.registry import DATASETS, MODELS
from fedbench.seeding import Streams


def _factory(name: str, **params: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return MODELS.create(name, params, in_shape=(1, 8, 8), num_classes=10)

    return build


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return DATASETS.create("digits").train.subset(np.arange(400))


def _round_of_clients(
    digits: TensorData, sizes: tuple[int, ...], dim: int, *, seed: int, round_index: int
) -> tuple[list[TensorData], Streams, RoundContext]:
    """Consecutive digits split into clients of ``sizes``, and a round of all of them."""
    offsets = np.cumsum((0, *sizes))
    clients = [digits.subset(np.arange(offsets[i], offsets[i + 1])) for i in range(len(sizes))]
    streams = Streams(seed)
    ctx = RoundContext(round=round_index, sampled=list(range(len(sizes))),
                       num_clients=len(sizes), expected_clients=len(sizes), dim=dim,
                       streams=streams)
    return clients, streams, ctx


@pytest.mark.parametrize(
    ("model", "recipe", "sizes"),
    [
        (_factory("mlp", hidden=[32]), TrainingRecipe("fedsgd", 16, 1, None, 0.1), (16, 16, 16)),
        (_factory("mlp", hidden=[32]), TrainingRecipe("fedavg", 8, 2, None, 0.05, 0.9),
         (24, 24)),
        # every client holds fewer examples than a batch: the whole client is the batch
        (_factory("logreg"), TrainingRecipe("fedavg", 32, 3, None, 0.2), (5, 5, 5, 5)),
        (_factory("lenet"), TrainingRecipe("fedavg", 4, 1, 3, 0.01), (12, 12)),
    ],
    ids=["fedsgd", "fedavg-momentum", "clients-smaller-than-a-batch", "lenet-steps"],
)
def test_stacked_local_sgd_gives_each_clients_sgd_training(
    digits: TensorData, model: Callable[[], nn.Module], recipe: TrainingRecipe,
    sizes: tuple[int, ...],
) -> None:
    base = model()
    w0 = get_flat(base)
    clients, streams, ctx = _round_of_clients(digits, sizes, w0.numel(), seed=3, round_index=0)
    looped = []
    for cid, data in enumerate(clients):
        worker = model()
        looped.append(SGDTraining().train(worker, data, recipe, client_id=cid, ctx=ctx).params)
    names = [n for n, p in base.named_parameters() if p.requires_grad]
    start = {n: p.detach().unsqueeze(0).repeat(len(sizes), *[1] * p.dim())
             for n, p in base.named_parameters() if p.requires_grad}
    schedules = [batch_schedule(len(c), recipe, streams.torch("local_training", 0, cid))
                 for cid, c in enumerate(clients)]
    offsets = np.cumsum((0, *sizes))  # the clients' rows in digits
    rows = torch.stack([torch.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes))])
    trained = local_sgd_stacked(stacked_gradients(base), start, schedules, rows, digits.x,
                                digits.y, recipe)
    stacked = torch.cat([trained[n].reshape(len(sizes), -1) for n in names], dim=1)
    for cid in range(len(sizes)):
        assert (looped[cid] - w0).abs().amax() > 1e-3  # the client actually trained
        torch.testing.assert_close(stacked[cid], looped[cid], atol=2e-6, rtol=1e-5)


def test_models_torch_func_cannot_batch_are_not_vectorizable(digits: TensorData) -> None:
    def with_batchnorm() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, 10))

    assert not vectorizable(with_batchnorm(), digits.x[0], digits.y[0])
    assert vectorizable(_factory("mlp")(), digits.x[0], digits.y[0])


def _sigmoid_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Sigmoid(), nn.Linear(24, 12),
                         nn.Tanh(), nn.Linear(12, 10, bias=False))


@pytest.mark.parametrize(
    "model",
    [_factory("mlp", hidden=[32]), _factory("logreg"), _sigmoid_mlp],
    ids=["mlp", "logreg", "sigmoid-tanh-nobias"],
)
def testgrouped_forward_gives_the_vmap_gradients(
    digits: TensorData, model: Callable[[], nn.Module]
) -> None:
    base = model()
    forward = grouped_forward(base)
    assert forward is not None
    copies, batch = 3, 5
    g = torch.Generator().manual_seed(0)
    params = {n: p.detach().unsqueeze(0).repeat(copies, *[1] * p.dim())
              + 0.1 * torch.randn(copies, *p.shape, generator=g)
              for n, p in base.named_parameters()}
    rows = torch.randint(0, len(digits), (copies, batch), generator=g)
    x, y = digits.x[rows], digits.y[rows]
    grouped = gradients_of(forward)(params, x, y).grads
    mapped = gradients_of(vmapped_forward(base))(params, x, y).grads
    assert grouped.keys() == mapped.keys()
    for name in grouped:
        assert grouped[name].abs().amax() > 0
        torch.testing.assert_close(grouped[name], mapped[name], atol=1e-6, rtol=1e-5)


def testgrouped_forward_only_takes_fully_connected_sequentials() -> None:
    assert grouped_forward(_factory("lenet")()) is None  # convolutions: vmap
    assert grouped_forward(nn.Sequential(nn.Linear(64, 10))) is None  # no Flatten first
    frozen = _factory("mlp", hidden=[8])()
    frozen[1].weight.requires_grad_(False)
    assert grouped_forward(frozen) is None  # not every layer is in the stacked parameters


def _padded_rows(sizes: tuple[int, ...]) -> torch.Tensor:
    """Each client's positions in the concatenated examples, padded with its first one."""
    offsets = np.cumsum((0, *sizes))
    longest = max(sizes)
    return torch.stack([
        torch.tensor([offsets[i] + (j if j < n else 0) for j in range(longest)])
        for i, n in enumerate(sizes)
    ])


@pytest.mark.parametrize(
    ("model", "recipe", "sizes"),
    [
        # different step counts and short last batches, with momentum (the buffer of a client
        # past its last step must not move its parameters)
        (_factory("mlp", hidden=[16]), TrainingRecipe("fedavg", 5, 2, None, 0.1, 0.9),
         (3, 17, 8, 1)),
        # FedSGD on each client's whole data: one batch per client, of its own size
        (_factory("logreg"), TrainingRecipe("fedsgd", None, 1, None, 0.5), (3, 7, 12)),
        (_factory("lenet"), TrainingRecipe("fedavg", 4, 1, 3, 0.01), (2, 9)),
        (_factory("convnet", width=4), TrainingRecipe("fedavg", 4, 1, None, 0.05, 0.5),
         (5, 11, 4)),
    ],
    ids=["mlp-ragged-momentum", "logreg-fedsgd-whole-data", "lenet-steps", "convnet-ragged"],
)
def test_ragged_clients_train_as_sgd_training_does(
    digits: TensorData, model: Callable[[], nn.Module], recipe: TrainingRecipe,
    sizes: tuple[int, ...],
) -> None:
    base = model()
    w0 = get_flat(base)
    clients, streams, ctx = _round_of_clients(digits, sizes, w0.numel(), seed=5, round_index=2)
    looped = [SGDTraining().train(model(), data, recipe, client_id=cid, ctx=ctx)
              for cid, data in enumerate(clients)]
    schedules = [batch_schedule(len(c), recipe, streams.torch("local_training", 2, cid))
                 for cid, c in enumerate(clients)]
    names = [n for n, p in base.named_parameters() if p.requires_grad]
    start = {n: p.detach().unsqueeze(0).repeat(len(sizes), *[1] * p.dim())
             for n, p in base.named_parameters() if p.requires_grad}
    trained = train_stacked(stacked_gradients(base), start, schedules, _padded_rows(sizes),
                            digits.x, digits.y, recipe)
    stacked = torch.cat([trained.params[n].reshape(len(sizes), -1) for n in names], dim=1)
    for cid, loop in enumerate(looped):
        assert (loop.params - w0).abs().amax() > 1e-4  # the client actually trained
        torch.testing.assert_close(stacked[cid], loop.params, atol=1e-5, rtol=1e-5)
        assert float(trained.losses[cid]) == pytest.approx(loop.loss, rel=1e-5)


def test_padded_schedules_weigh_real_examples_and_mask_finished_clients() -> None:
    schedules = [[torch.tensor([2, 0]), torch.tensor([1])], [torch.tensor([0])]]
    plan = pad_schedules(schedules)
    assert plan.positions.shape == (2, 2, 2)
    assert plan.positions[0, 0].tolist() == [2, 0]
    assert plan.weights[0].tolist() == [[0.5, 0.5], [1.0, 0.0]]  # a mean over real slots
    assert plan.weights[1].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert plan.active.tolist() == [[True, True], [True, False]]
    assert plan.steps.tolist() == [2, 1]
    assert plan.full == [False, False] and plan.everyone == [True, False]
    assert pad_schedules([[torch.tensor([0, 1])]] * 3).full == [True]
    with pytest.raises(ValueError, match="at least one local step"):
        pad_schedules([[torch.tensor([0])], []])


def test_a_client_past_its_last_step_keeps_its_parameters(digits: TensorData) -> None:
    base = _factory("logreg")()
    start = {n: p.detach().unsqueeze(0).repeat(2, *[1] * p.dim())
             for n, p in base.named_parameters()}
    recipe = TrainingRecipe("fedavg", 2, 1, None, 0.5, 0.9)
    one_step = [[torch.tensor([0, 1])], [torch.tensor([0, 1])]]
    longer = [[torch.tensor([0, 1])], [torch.tensor([0, 1]), torch.tensor([1, 0])] * 2]
    rows = torch.tensor([[0, 1], [2, 3]])
    gradients = stacked_gradients(base)
    short = train_stacked(gradients, start, one_step, rows, digits.x, digits.y, recipe)
    mixed = train_stacked(gradients, start, longer, rows, digits.x, digits.y, recipe)
    for name in start:
        torch.testing.assert_close(mixed.params[name][0], short.params[name][0])  # frozen
        assert (mixed.params[name][1] - short.params[name][1]).abs().amax() > 1e-4  # went on
