"""Speed of the attacks: gradient inversion, and membership inference's reference models.

Gradient inversion on DLG's sigmoid LeNet at 32×32, batch 1 and 8:

- ``test_dlg_speed``: DLG (L-BFGS; one outer iteration runs up to 20 inner iterations), in
  outer iterations and objective evaluations per second.
- ``test_inverting_gradients_speed``: Inverting Gradients with its default 4 restarts batched by
  ``vmap``, in iterations per second (each advances every restart by one step) and objective
  evaluations per second (restarts × iterations), beside a reference loop timed in the same
  run: the same cosine + TV objective and signed-Adam step written in plain torch autograd, one
  restart after another (the way breaching runs its trials).
  ``extra_info['ratio_evaluations_to_reference']`` is IG's rate over the reference's (goal ≥ 1).

Each records, in ``extra_info``, the model size, the batch and the ratio of one objective
evaluation (a double backward through the model) to one plain training step (forward +
backward on the same batch), measured in the same run.

Membership inference: K = 16 reference models of the ``quick`` suite's target (digits, ``mlp``
with 64 hidden units, FedAvg: 20 rounds, 2 local epochs, batch 16, lr 0.1, clients of 115
examples) trained on random halves of the attacker's pool:

- ``offline``: the population split alone (287 digits: one 115-example client per model, so the
  vmapped batch holds K = 16 clients);
- ``online``: population plus candidates (1,000 digits: four clients per model, 64 per step).

``sequential`` is the harness's own ``Simulation`` once per model; ``vectorized`` replays the
same schedule for all models at once with torch.func (the models agree to float rounding —
``extra_info['max_abs_difference']``). ``extra_info['ratio_sequential_to_vectorized']`` is the
speed-up measured in the same run (target ≥ 5× on 2 CPU cores); the thread count is a parameter
because on a busy 2-core machine a second intra-op thread can slow small kernels down.

Times are never asserted.

Run: ``pytest benchmarks/test_attacks.py --benchmark-only``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_attacks.py --benchmark-disable``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from timing import best_seconds
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge
from fedbench.attacks.gradient_inversion.dlg import DLG
from fedbench.attacks.gradient_inversion.inverting import InvertingGradients
from fedbench.attacks.membership.reference import (
    Engine,
    ReferenceModels,
    clear_memory_cache,
    reference_fl,
    train_reference_models,
)
from fedbench.config import FLConfig
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat, num_params
from fedbench.fl.views import ClientUpdateView
from fedbench.registry import DATASETS, MODELS

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"

# -- gradient inversion ------------------------------------------------------------------------

SHAPE = (3, 32, 32)
BATCHES = [1] if SMOKE else [1, 8]
DLG_ITERATIONS = 1 if SMOKE else 5
IG_ITERATIONS = 2 if SMOKE else 50
ROUNDS = 1 if SMOKE else 3


def lenet() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model: torch.nn.Module = MODELS.create("lenet", {}, in_shape=SHAPE, num_classes=10)
    return model


def setting(batch: int) -> tuple[ClientUpdateView, AttackerKnowledge, TensorData]:
    """A FedSGD update of one client's batch and what the attacker knows about it."""
    g = torch.Generator().manual_seed(batch)
    data = TensorData(torch.rand(batch + 64, *SHAPE, generator=g),
                      torch.randint(0, 10, (batch + 64,), generator=g), torch.arange(batch + 64))
    model = lenet()
    start = get_flat(model).clone()
    F.cross_entropy(model(data.x[:batch]), data.y[:batch]).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    view = ClientUpdateView(round=0, client_id=0, params=start, update=-0.1 * grad, weight=1.0,
                            num_examples=batch)
    knowledge = AttackerKnowledge(
        model_factory=lenet, input_shape=SHAPE, num_classes=10, data_kind="image",
        fl=FLConfig(algorithm="fedsgd", batch_size=batch, client_lr=0.1), defenses={},
        population=data.subset(torch.arange(batch, batch + 64)), candidates=None,
        device=torch.device("cpu"), seed=0,
    )
    return view, knowledge, data.subset(torch.arange(batch))


def training_step_seconds(batch: TensorData) -> float:
    """Baseline: one forward + backward of the plain training loss on the same batch."""
    model = lenet()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x), batch.y).backward()

    step()
    return best_seconds(step, repeats=20, warmup=True)


@pytest.mark.parametrize("batch", BATCHES)
def test_dlg_speed(benchmark, batch: int) -> None:
    view, knowledge, private = setting(batch)
    attack = DLG(iterations=DLG_ITERATIONS)
    evaluations: list[int] = []

    def run() -> None:
        evaluations.append(int(attack.run(view, knowledge).extras["evaluations"]))

    seconds = best_seconds(run, repeats=ROUNDS, warmup=True)
    per_evaluation = seconds / max(1, min(evaluations))
    benchmark.extra_info.update({
        "model": "lenet", "input": "3x32x32", "batch": batch, "num_params": num_params(lenet()),
        "outer_iterations": DLG_ITERATIONS,
        "outer_iterations_per_second": DLG_ITERATIONS / seconds,
        "evaluations_per_second": 1.0 / per_evaluation,
        "ratio_evaluation_to_training_step": per_evaluation / training_step_seconds(private),
        "compare": {"ratio_evaluation_to_training_step": "lower"},
    })
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def reference_inverting_loop(
    view: ClientUpdateView, private: TensorData, *, restarts: int, iterations: int,
    tv_weight: float,
) -> Callable[[], None]:
    """Plain-torch Inverting Gradients (cosine + TV, signed Adam, box), restarts one by one.

    Independent of fedbench's attack code: ``torch.autograd.grad(create_graph=True)`` on an
    ``nn.Module``, as breaching does; only the objective evaluations and optimiser steps that
    the attack also performs.
    """
    model = lenet()
    params = [p for p in model.parameters() if p.requires_grad]
    target = [t.detach() for t in torch.split(-view.update / 0.1, [p.numel() for p in params])]
    target = [t.view_as(p) for t, p in zip(target, params, strict=True)]
    target_norm = torch.sqrt(sum((t * t).sum() for t in target))
    labels = private.y

    def tv(x: torch.Tensor) -> torch.Tensor:
        return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())

    def run() -> None:
        g = torch.Generator().manual_seed(0)
        xs = [torch.rand(private.x.shape, generator=g).requires_grad_(True)
              for _ in range(restarts)]
        optimisers = [torch.optim.Adam([x], lr=0.1) for x in xs]
        for _ in range(iterations):
            for x, optimiser in zip(xs, optimisers, strict=True):
                optimiser.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), labels)
                grads = torch.autograd.grad(loss, params, create_graph=True)
                dot = sum((a * b).sum() for a, b in zip(grads, target, strict=True))
                norm = torch.sqrt(sum((a * a).sum() for a in grads))
                objective = 1 - dot / (norm * target_norm) + tv_weight * tv(x)
                (grad_x,) = torch.autograd.grad(objective, [x])
                x.grad = grad_x.sign()
                optimiser.step()
                with torch.no_grad():
                    x.clamp_(0, 1)

    return run


@pytest.mark.parametrize("batch", BATCHES)
def test_inverting_gradients_speed(benchmark, batch: int) -> None:
    view, knowledge, private = setting(batch)
    attack = InvertingGradients(iterations=IG_ITERATIONS)

    def run() -> None:
        attack.run(view, knowledge)

    reference = reference_inverting_loop(view, private, restarts=attack.restarts,
                                         iterations=IG_ITERATIONS, tv_weight=attack.tv_weight)
    # Interleaved best-of-n, so both see the same machine state.
    seconds, reference_seconds = math.inf, math.inf
    for _ in range(ROUNDS):
        seconds = min(seconds, best_seconds(run, repeats=1, warmup=seconds == math.inf))
        reference_seconds = min(reference_seconds, best_seconds(
            reference, repeats=1, warmup=reference_seconds == math.inf))
    per_iteration = seconds / IG_ITERATIONS
    evaluations = attack.restarts * IG_ITERATIONS
    benchmark.extra_info.update({
        "model": "lenet", "input": "3x32x32", "batch": batch, "num_params": num_params(lenet()),
        "restarts": attack.restarts,
        "iterations_per_second": 1.0 / per_iteration,
        "restart_iterations_per_second": attack.restarts / per_iteration,
        "evaluations_per_second": evaluations / seconds,
        "reference_evaluations_per_second": evaluations / reference_seconds,
        "ratio_evaluations_to_reference": reference_seconds / seconds,
        "ratio_iteration_to_training_step": per_iteration / training_step_seconds(private),
        "compare": {"ratio_iteration_to_training_step": "lower",
                    "ratio_evaluations_to_reference": "higher"},
    })
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


# -- membership inference: reference models -------------------------------------------------

NUM_MODELS = 2 if SMOKE else 16
FL = FLConfig(num_clients=10, rounds=2 if SMOKE else 20, local_epochs=2, batch_size=16,
              client_lr=0.1)
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
        # Warm-up, both engines: torch.func's first call imports and traces, and the first
        # Simulation in a process pays for lazy initialisation that later ones do not.
        train("vectorized")
        train("sequential")
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
