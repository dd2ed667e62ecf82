"""Tests for fedbench.fl.client."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fedbench.data.tensors import TensorData
from fedbench.fl.client import SGDTraining, batch_schedule
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat, set_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.seeding import Streams


def _recipe(**kw) -> TrainingRecipe:
    base = dict(algorithm="fedavg", batch_size=4, local_epochs=1, local_steps=None, lr=0.1)
    base.update(kw)
    return TrainingRecipe(**base)


def test_fedsgd_takes_one_batch() -> None:
    batches = batch_schedule(
        10, _recipe(algorithm="fedsgd", batch_size=3), torch.Generator().manual_seed(0)
    )
    assert len(batches) == 1 and len(batches[0]) == 3
    whole = batch_schedule(
        10, _recipe(algorithm="fedsgd", batch_size=None), torch.Generator().manual_seed(0)
    )
    assert sorted(whole[0].tolist()) == list(range(10))


def test_fedavg_epochs_visit_every_example_once_per_epoch() -> None:
    batches = batch_schedule(10, _recipe(local_epochs=2), torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))


def test_fedavg_local_steps_override_epochs() -> None:
    batches = batch_schedule(
        10, _recipe(local_steps=7, local_epochs=5), torch.Generator().manual_seed(0)
    )
    assert len(batches) == 7


def _ctx() -> RoundContext:
    return RoundContext(
        round=0, sampled=[0], num_clients=1, expected_clients=1, dim=0, streams=Streams(0)
    )


def test_fedsgd_step_equals_manual_gradient_step() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    data = TensorData.from_arrays(torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]))
    w0 = get_flat(model).clone()
    result = SGDTraining().train(
        model, data, _recipe(algorithm="fedsgd", batch_size=None, lr=0.5), client_id=0, ctx=_ctx()
    )
    reference = torch.nn.Linear(5, 3)
    set_flat(reference, w0)
    F.cross_entropy(reference(data.x), data.y).backward()
    grad = torch.cat([reference.weight.grad.flatten(), reference.bias.grad.flatten()])
    torch.testing.assert_close(result.params, w0 - 0.5 * grad)
    assert sorted(result.used_ids.tolist()) == list(range(6)) and result.num_examples == 6


def test_training_reduces_loss_and_reports_used_ids() -> None:
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    y = (x[:, 0] > 0).long()
    data = TensorData(x, y, torch.arange(100, 140))
    model = torch.nn.Linear(5, 2)
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    result = SGDTraining().train(
        model, data, _recipe(local_epochs=5, lr=0.5), client_id=0, ctx=_ctx()
    )
    with torch.no_grad():
        assert float(F.cross_entropy(model(x), y)) < before
    assert set(result.used_ids.tolist()) == set(range(100, 140))
