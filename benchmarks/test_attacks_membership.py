"""Reference (shadow) model training for membership attacks: vectorized vs sequential.

K = 16 reference models of the ``quick`` suite's target (digits, ``mlp`` with 64 hidden units,
FedAvg: 20 rounds, 2 local epochs, batch 16, lr 0.1, clients of 115 examples) are trained on
random halves of the attacker's pool:

- ``offline``: the population split alone (287 digits: one 115-example client per model, so the
  vmapped batch holds K = 16 clients);
- ``online``: population plus candidates (1,000 digits: four clients per model, 64 per step).

``sequential`` is the harness's own ``Simulation`` once per model; ``vectorized`` replays the
same schedule for all models at once with torch.func (the models agree to float rounding —
``extra_info['max_abs_difference']``). ``extra_info['ratio_sequential_to_vectorized']`` is the
speed-up measured in the same run (target ≥ 5× on 2 CPU cores); the thread count is a parameter
because on a busy 2-core machine a second intra-op thread can slow small kernels down.

Run: ``pytest benchmarks/test_attacks_membership.py --benchmark-only``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_attacks_membership.py --benchmark-disable``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from fedbench.attacks.membership.reference import (
    Engine,
    ReferenceModels,
    clear_memory_cache,
    reference_fl,
    train_reference_models,
)
from fedbench.registry import DATASETS, MODELS

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
NUM_MODELS = 2 if SMOKE else 16
FL = {"num_clients": 10, "rounds": 2 if SMOKE else 20, "local_epochs": 2, "batch_size": 16,
      "client_lr": 0.1}
CLIENT_SIZE = 115  # quick.yaml: 1,150 training digits over 10 clients
# (design, pool size, intra-op threads)
CASES = [("online", 1000, 1)] if SMOKE else [
    ("offline", 287, 1), ("online", 1000, 1), ("online", 1000, 2),
]


def _factory() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: torch.nn.Module = MODELS.create("mlp", {"hidden": [64]}, in_shape=(1, 8, 8),
                                               num_classes=10)
    return model


@pytest.mark.parametrize(("design", "pool_size", "threads"), CASES)
def test_reference_training_vectorized_vs_sequential(
    benchmark, design: str, pool_size: int, threads: int
) -> None:
    pool = DATASETS.create("digits").train.subset(np.arange(pool_size))
    paired = design == "online"
    settings = reference_fl(FL, pool_size // 2, CLIENT_SIZE)

    def train(engine: Engine) -> ReferenceModels:
        clear_memory_cache()
        return train_reference_models(
            pool=pool, factory=_factory, fl=FL, kind="image", num_models=NUM_MODELS, seed=0,
            paired=paired, client_size=CLIENT_SIZE, engine=engine,
        )

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        train("vectorized")  # warm-up: torch.func's first call imports and traces
        tick = time.perf_counter()
        sequential = train("sequential")
        sequential_seconds = time.perf_counter() - tick
        timings: list[float] = []

        def timed() -> ReferenceModels:
            tick = time.perf_counter()
            models = train("vectorized")
            timings.append(time.perf_counter() - tick)
            return models

        vectorized = benchmark.pedantic(timed, rounds=1 if SMOKE else 3, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert vectorized.engine == "vectorized" and sequential.engine == "sequential"
    difference = float((vectorized.params - sequential.params).abs().max())
    # The same models: float rounding differs between the engines, and over 20 rounds a ReLU
    # that flips can grow it to ~1e-4 in a model (parameters are of order 1).
    assert difference < 1e-3
    benchmark.extra_info.update({
        "design": design,
        "num_models": NUM_MODELS,
        "pool": pool_size,
        "threads": threads,
        "rounds": settings.rounds,
        "clients_per_model": settings.num_clients,
        "clients_per_vmapped_step": NUM_MODELS * (settings.clients_per_round or 0),
        "sequential_seconds": sequential_seconds,
        "vectorized_seconds": min(timings),
        "ratio_sequential_to_vectorized": sequential_seconds / min(timings),
        "compare": {"ratio_sequential_to_vectorized": "higher"},
        "max_abs_difference": difference,
    })
