"""Reference-model training: the vectorized engine reproduces the harness's own FedAvg
simulation model for model, the split design, the recipe approximation and the cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedbench.attacks.membership.reference import (
    clear_memory_cache,
    plan_models,
    reference_fl,
    train_reference_models,
)
from fedbench.attacks.membership.signals import stacked_logits
from fedbench.config import FLConfig
from fedbench.data.tensors import TensorData
from fedbench.errors import DataError
from fedbench.registry import DATASETS, MODELS


def _factory(name: str, **params: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model: nn.Module = MODELS.create(name, params, in_shape=(1, 8, 8), num_classes=10)
        return model

    return build


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return DATASETS.create("digits").train.subset(np.arange(400))


@pytest.mark.parametrize(
    ("model", "fl"),
    [
        # FedAvg, full participation, weighted
        (_factory("mlp", hidden=[32]),
         {"num_clients": 4, "rounds": 3, "local_epochs": 2, "batch_size": 16}),
        # momentum, Poisson client sampling, local steps
        (_factory("mlp", hidden=[32]),
         {"num_clients": 6, "rounds": 3, "local_steps": 3, "batch_size": 8, "client_lr": 0.05,
          "client_momentum": 0.9, "client_fraction": 0.5, "sampling": "poisson"}),
        # FedSGD on whole clients, fixed sampling, server learning rate
        (_factory("mlp", hidden=[32]),
         {"algorithm": "fedsgd", "num_clients": 5, "rounds": 4, "batch_size": None,
          "clients_per_round": 2, "server_lr": 2.0}),
        # a convolutional network (DLG's sigmoid LeNet)
        (_factory("lenet"),
         {"num_clients": 2, "rounds": 2, "local_steps": 2, "batch_size": 8, "client_lr": 0.01}),
    ],
    ids=["fedavg", "momentum-poisson", "fedsgd", "lenet"],
)
def test_vectorized_training_gives_the_sequential_models(
    digits: TensorData, model: Callable[[], nn.Module], fl: dict[str, Any]
) -> None:
    runs = {}
    for engine in ("vectorized", "sequential"):
        clear_memory_cache()
        runs[engine] = train_reference_models(
            pool=digits, factory=model, fl=FLConfig.model_validate(fl), kind="image",
            num_models=4, seed=11, paired=True, engine=engine,
        )
        assert runs[engine].engine == engine
    vectorized, sequential = runs["vectorized"], runs["sequential"]
    np.testing.assert_array_equal(vectorized.in_mask, sequential.in_mask)
    start = torch.nn.utils.parameters_to_vector(model().parameters()).detach()
    moved = (sequential.params - start).abs().amax(dim=1)
    assert torch.all(moved > 1e-3)  # every model actually trained
    assert not torch.allclose(sequential.params[0], sequential.params[1])  # on different data
    torch.testing.assert_close(vectorized.params, sequential.params, atol=2e-5, rtol=1e-4)


def test_models_that_torch_func_cannot_batch_fall_back_to_the_loop(digits: TensorData) -> None:
    def with_batchnorm() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                 nn.Linear(16, 10))

    clear_memory_cache()
    refs = train_reference_models(
        pool=digits, factory=with_batchnorm, kind="image", num_models=2, seed=0, paired=True,
        fl=FLConfig(num_clients=2, rounds=1, local_steps=1, batch_size=8),
    )
    assert refs.engine == "sequential"


def test_paired_halves_put_every_example_in_exactly_half_of_the_models() -> None:
    fl = reference_fl(FLConfig(num_clients=5, rounds=1, batch_size=4), 50, None)
    plans, mask = plan_models(100, num_models=8, seed=0, paired=True, fl=fl)
    assert mask.shape == (8, 100)
    np.testing.assert_array_equal(mask.sum(axis=0), 4)  # 100/2 = 50 = 5 clients × 10
    np.testing.assert_array_equal(mask.sum(axis=1), 50)
    for j in range(4):
        assert not np.any(mask[2 * j] & mask[2 * j + 1])  # complementary pairs
    for plan in plans:
        assert plan.clients.shape == (5, 10)
        assert len(np.unique(plan.clients)) == 50
    _, offline = plan_models(100, num_models=3, seed=0, paired=False, fl=fl)
    np.testing.assert_array_equal(offline.sum(axis=1), 50)
    with pytest.raises(ValueError, match="even"):
        plan_models(100, num_models=3, seed=0, paired=True, fl=fl)


def test_reference_fl_keeps_the_recipe_and_mimics_the_client_size() -> None:
    target = FLConfig(num_clients=10, rounds=7, local_epochs=3, batch_size=16, client_lr=0.2,
                      client_momentum=0.5, server_lr=0.7, clients_per_round=5)
    same_clients = reference_fl(target, 400, None)
    assert same_clients.num_clients == 10 and same_clients.clients_per_round == 5
    mimic = reference_fl(target, 400, 100)  # the target's clients hold 100 examples
    assert mimic.num_clients == 4 and mimic.clients_per_round == 2  # same rate q = 1/2
    for fl in (same_clients, mimic):
        assert (fl.rounds, fl.local_epochs, fl.batch_size) == (7, 3, 16)
        assert (fl.client_lr, fl.client_momentum, fl.server_lr) == (0.2, 0.5, 0.7)
    poisson = reference_fl(
        FLConfig.model_validate({**target.model_dump(), "clients_per_round": None,
                                 "client_fraction": 0.3, "sampling": "poisson"}), 400, 100
    )
    assert poisson.client_fraction == pytest.approx(0.3) and poisson.sampling == "poisson"
    with pytest.raises(DataError, match="population"):
        reference_fl(target, 6, None)


def test_cache_returns_the_same_models_from_memory_and_disk(
    digits: TensorData, tmp_path: Path
) -> None:
    fl = FLConfig(num_clients=2, rounds=2, local_steps=2, batch_size=8)
    args: dict[str, Any] = {"pool": digits, "factory": _factory("mlp", hidden=[16]), "fl": fl,
                            "kind": "image", "num_models": 2, "paired": True,
                            "cache_dir": tmp_path}
    clear_memory_cache()
    first = train_reference_models(seed=1, **args)
    again = train_reference_models(seed=1, **args)
    assert first.engine == "vectorized" and again.engine == "cache"
    torch.testing.assert_close(first.params, again.params, atol=0, rtol=0)
    assert len(list(tmp_path.glob("references-*.pt"))) == 1
    clear_memory_cache()
    from_disk = train_reference_models(seed=1, **args)
    assert from_disk.engine == "cache"
    torch.testing.assert_close(first.params, from_disk.params, atol=0, rtol=0)
    np.testing.assert_array_equal(first.in_mask, from_disk.in_mask)
    other = train_reference_models(seed=2, **args)  # another seed is another key
    assert other.engine == "vectorized"
    assert not torch.allclose(other.params, first.params)


def test_reference_models_learn_the_task(digits: TensorData) -> None:
    factory = _factory("mlp", hidden=[32])
    clear_memory_cache()
    refs = train_reference_models(
        pool=digits, factory=factory, kind="image", num_models=2, seed=0, paired=True,
        fl=FLConfig(num_clients=2, rounds=10, local_epochs=2, batch_size=16),
    )
    logits = stacked_logits(factory, refs.params, digits.x, torch.device("cpu"))
    correct = (logits.argmax(-1) == digits.y).numpy()
    for k in range(2):
        held_out = correct[k][~refs.in_mask[k]].mean()
        assert held_out > 0.8  # far above the 0.1 of guessing
        assert correct[k][refs.in_mask[k]].mean() >= held_out - 0.02
