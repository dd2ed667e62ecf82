"""The cost of differential privacy, as ratios to baselines measured in the same run.

- ``test_dp_sgd_epoch``: one client's local epoch with DP-SGD (Opacus: a fresh private copy,
  per-example gradients, clipping, noise, Poisson batches) vs the same epoch of plain SGD on the
  same model, data and recipe (``SGDTraining``). ``extra_info['ratio_dp_to_plain']``.
- ``test_central_dp_aggregation``: the server's DP-FedAvg step (plaintext sum of the clipped
  updates, then N(0, z²C²) on the sum, seeded or from the OS CSPRNG) vs the plaintext sum alone.
  ``extra_info['ratio_to_plaintext']``.

Torch runs on one intra-op thread (``conftest.py``), as cells do. Times are never asserted;
the ratios are what ``fedbench compare`` and readers look at.

Run: ``pytest benchmarks/test_dp.py --benchmark-only``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_dp.py --benchmark-disable``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from timing import best_seconds

from fedbench.data.tensors import TensorData
from fedbench.defenses.dp.accounting import GaussianNoise
from fedbench.defenses.dp.central import DPFedAvg
from fedbench.defenses.dp.local_sgd import DPSGD
from fedbench.fl.channel import PlaintextChannel
from fedbench.fl.client import SGDTraining
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.params import get_flat, set_flat
from fedbench.fl.recipe import TrainingRecipe
from fedbench.registry import MODELS
from fedbench.seeding import Streams

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
# (model, input shape, examples, batch size)
EPOCHS = [("mlp", (1, 8, 8), 64, 16)] if SMOKE else [
    ("mlp", (1, 8, 8), 512, 32),
    ("convnet", (3, 32, 32), 512, 64),
]
# (clients, dimension)
AGGREGATIONS = [(5, 10_000)] if SMOKE else [(10, 100_000), (100, 100_000), (20, 1_000_000)]


def run_info(model_factory: Callable[[], torch.nn.Module], examples: int, dim: int,
             recipe: TrainingRecipe) -> RunInfo:
    return RunInfo(
        num_clients=1, rounds=1, expected_clients=1.0, sampling="poisson", weighting="uniform",
        recipe=recipe, client_sizes=(examples,), dim=dim, model_factory=model_factory,
        streams=Streams(0),
    )


@pytest.mark.parametrize(("model_name", "shape", "examples", "batch"), EPOCHS)
def test_dp_sgd_epoch(benchmark, model_name: str, shape: tuple[int, ...], examples: int,
                      batch: int) -> None:
    def factory() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model: torch.nn.Module = MODELS.create(model_name, {}, in_shape=shape,
                                                   num_classes=10)
        return model

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(examples, *shape, generator=g),
                      torch.randint(0, 10, (examples,), generator=g), torch.arange(examples))
    recipe = TrainingRecipe("fedavg", batch_size=batch, local_epochs=1, local_steps=None, lr=0.05)
    worker = factory()
    w0 = get_flat(worker).clone()
    run = run_info(factory, examples, w0.numel(), recipe)
    defense = DPSGD(noise=GaussianNoise(multiplier=1.0), max_grad_norm=1.0)
    defense.setup(run)
    plain = SGDTraining()
    rounds = iter(range(10**6))

    def epoch(trainer: object) -> None:
        set_flat(worker, w0)
        ctx = RoundContext(round=next(rounds), sampled=[0], num_clients=1, expected_clients=1.0,
                           dim=w0.numel(), streams=run.streams)
        trainer.train(worker, data, recipe, client_id=0, ctx=ctx)  # type: ignore[attr-defined]

    repeats = 2 if SMOKE else 5
    plain_seconds = best_seconds(lambda: epoch(plain), repeats=repeats)
    dp_seconds = best_seconds(lambda: epoch(defense.local_training), repeats=repeats)
    benchmark.extra_info.update({
        "model": model_name, "params": int(w0.numel()), "examples": examples, "batch": batch,
        "plain_epoch_s": plain_seconds, "dp_epoch_s": dp_seconds,
        "ratio_dp_to_plain": dp_seconds / plain_seconds,
        "epsilon_after_benchmark_epochs": defense.privacy_spent(1e-5).epsilon,
        "compare": {"ratio_dp_to_plain": "lower"},
    })
    benchmark.pedantic(epoch, args=(defense.local_training,), rounds=repeats, iterations=1)


@pytest.mark.parametrize("secure_mode", [False, True])
@pytest.mark.parametrize(("clients", "dim"), AGGREGATIONS)
def test_central_dp_aggregation(benchmark, clients: int, dim: int, secure_mode: bool) -> None:
    rng = np.random.default_rng(0)
    channel = PlaintextChannel()
    messages = {c: channel.encode(c, rng.standard_normal(dim, dtype=np.float32))
                for c in range(clients)}
    run = RunInfo(num_clients=10 * clients, rounds=1, expected_clients=float(clients),
                  sampling="poisson", weighting="uniform", recipe=None,
                  client_sizes=(1,) * (10 * clients), dim=dim, model_factory=None,
                  streams=Streams(0))
    defense = DPFedAvg(noise=GaussianNoise(multiplier=1.0, secure_mode=secure_mode), clip_norm=1.0)
    defense.setup(run)
    assert defense.server_update is not None
    server = defense.server_update
    rounds = iter(range(10**6))

    def plaintext() -> object:
        return channel.aggregate(messages)

    def private() -> object:
        total = torch.from_numpy(channel.aggregate(messages).total)
        ctx = RoundContext(round=next(rounds), sampled=list(range(clients)),
                           num_clients=run.num_clients, expected_clients=run.expected_clients,
                           dim=dim, streams=run.streams)
        return server.apply(total, float(clients), ctx)

    repeats = 3 if SMOKE else 10
    plain_seconds = best_seconds(plaintext, repeats=repeats)
    dp_seconds = best_seconds(private, repeats=repeats)
    benchmark.extra_info.update({
        "clients": clients, "dim": dim, "secure_mode": secure_mode,
        "plaintext_s": plain_seconds, "dp_s": dp_seconds,
        "ratio_to_plaintext": dp_seconds / plain_seconds,
        "compare": {"ratio_to_plaintext": "lower"},
    })
    benchmark.pedantic(private, rounds=repeats, iterations=1)
