"""Speed of gradient inversion on DLG's sigmoid LeNet at 32×32, batch 1 and 8.

- ``test_dlg_speed``: DLG (L-BFGS; one outer iteration runs up to 20 inner iterations), in
  outer iterations and objective evaluations per second.
- ``test_inverting_gradients_speed``: Inverting Gradients with its default 4 restarts batched by
  ``vmap``, in iterations per second (each advances every restart by one step).

Each records, in ``extra_info``, the model size, the batch and the ratio of one objective
evaluation (a double backward through the model) to one plain training step (forward +
backward on the same batch), measured in the same run. Times are never asserted.

Run: ``pytest benchmarks/test_attacks_inversion.py --benchmark-only``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_attacks_inversion.py --benchmark-disable``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

from fedbench.attacks.base import AttackerKnowledge
from fedbench.attacks.gradient_inversion.dlg import DLG
from fedbench.attacks.gradient_inversion.inverting import InvertingGradients
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat, num_params
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.transcript import ClientUpdateView
from fedbench.registry import MODELS

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
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
        recipe=TrainingRecipe("fedsgd", batch, 1, None, 0.1), fl={}, defenses={},
        population=data.subset(torch.arange(batch, batch + 64)), candidates=None,
        device=torch.device("cpu"), seed=0,
    )
    return view, knowledge, data.subset(torch.arange(batch))


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time over ``repeats`` runs after one warm-up (torch.func and oneDNN set up
    their kernels on the first call, which can take seconds)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best


def training_step_seconds(batch: TensorData) -> float:
    """Baseline: one forward + backward of the plain training loss on the same batch."""
    model = lenet()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x), batch.y).backward()

    step()
    return best_seconds(step, 20)


@pytest.mark.parametrize("batch", BATCHES)
def test_dlg_speed(benchmark, batch: int) -> None:
    view, knowledge, private = setting(batch)
    attack = DLG(iterations=DLG_ITERATIONS)
    evaluations: list[int] = []

    def run() -> None:
        evaluations.append(int(attack.run(view, knowledge).extras["evaluations"]))

    seconds = best_seconds(run, ROUNDS)
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


@pytest.mark.parametrize("batch", BATCHES)
def test_inverting_gradients_speed(benchmark, batch: int) -> None:
    view, knowledge, private = setting(batch)
    attack = InvertingGradients(iterations=IG_ITERATIONS)

    def run() -> None:
        attack.run(view, knowledge)

    seconds = best_seconds(run, ROUNDS)
    per_iteration = seconds / IG_ITERATIONS
    benchmark.extra_info.update({
        "model": "lenet", "input": "3x32x32", "batch": batch, "num_params": num_params(lenet()),
        "restarts": attack.restarts,
        "iterations_per_second": 1.0 / per_iteration,
        "restart_iterations_per_second": attack.restarts / per_iteration,
        "ratio_iteration_to_training_step": per_iteration / training_step_seconds(private),
        "compare": {"ratio_iteration_to_training_step": "lower"},
    })
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
