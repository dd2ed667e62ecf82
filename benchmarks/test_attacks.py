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
  With ``breaching`` installed (the ``peers`` extra), a third arm runs breaching's own
  ``invertinggradients`` attack (``prepare_attack`` + ``reconstruct``) on the same model, target
  gradient and labels, set to the same work (restarts, iterations, TV weight, Adam at 0.1 on the
  hard sign, box [0, 1], the same step-size milestones): ``ratio_evaluations_to_breaching`` is
  IG's rate over breaching's (issue 14: goal ≥ 1), and ``psnr`` / ``breaching_psnr`` (fedbench's
  PSNR, beside ``psnr_failure_baseline``) show the two reach the same kind of result. Without
  breaching those keys are absent. The two still differ in details that cost little: breaching
  starts from N(0, 1) and keeps each trial's best iterate, fedbench from the population's mean
  and spread and keeps the last; breaching's TV is a convolution with zero padding.

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

import contextlib
import importlib
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from timing import best_seconds
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge, AttackResult
from fedbench.attacks.gradient_inversion.dlg import DLG
from fedbench.attacks.gradient_inversion.inverting import InvertingGradients, milestones
from fedbench.attacks.gradient_inversion.scoring import failure_baseline, per_image_psnr
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
    loss = F.cross_entropy(model(data.x[:batch]), data.y[:batch])
    grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])
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
def test_dlg_speed(benchmark: BenchmarkFixture, batch: int) -> None:
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


def target_gradient(view: ClientUpdateView, model: torch.nn.Module) -> list[torch.Tensor]:
    """The client's FedSGD gradient (update / −lr), per parameter of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = (-view.update / 0.1).detach()
    return [t.view_as(p) for t, p in zip(torch.split(flat, [p.numel() for p in params]),
                                         params, strict=True)]


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
    target = target_gradient(view, model)
    target_norm = torch.stack([(t * t).sum() for t in target]).sum().sqrt()
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
                dot = torch.stack([(a * b).sum() for a, b in zip(grads, target, strict=True)]).sum()
                norm = torch.stack([(a * a).sum() for a in grads]).sum().sqrt()
                objective = 1 - dot / (norm * target_norm) + tv_weight * tv(x)
                (grad_x,) = torch.autograd.grad(objective, [x])
                x.grad = grad_x.sign()
                optimiser.step()
                with torch.no_grad():
                    x.clamp_(0, 1)

    return run


# -- breaching (Geiping et al.'s library) as a same-run peer ----------------------------------


def import_breaching() -> ModuleType | None:
    """``breaching`` if installed (the ``peers`` extra), else None: its arm is then left out.

    Its import decorates functions with ``torch.jit.script``, which recent torch deprecates
    with a warning; that is breaching's, not ours, so it is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module("breaching")
        except ImportError:
            return None


@contextlib.contextmanager
def quiet_breaching() -> Iterator[None]:
    """No prints (config loading), log lines (its per-trial progress) or warnings (hydra's
    version_base) from breaching: pytest would otherwise report them, and printing is time."""
    logger = logging.getLogger("breaching")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def breaching_config(breaching: ModuleType, *, restarts: int, iterations: int,
                     tv_weight: float) -> Any:
    """breaching's ``invertinggradients`` attack, set to the work fedbench's IG does.

    Its defaults already are cosine similarity, Adam at 0.1 on the hard sign of the gradient,
    boxed, and "step-lr" (×0.1 at 3/8, 5/8, 7/8: fedbench's :func:`milestones`); restarts,
    iterations and the TV weight are fedbench's, and the callback never fires mid-run.
    """
    overrides = [
        f"optim.max_iterations={iterations}", f"restarts.num_trials={restarts}",
        f"regularization.total_variation.scale={tv_weight}", "optim.step_size=0.1",
        "optim.boxed=True", "optim.signed=hard", "optim.step_size_decay=step-lr",
        f"optim.callback={10 * iterations + 1}",
    ]
    with quiet_breaching():
        return breaching.get_attack_config("invertinggradients", overrides=overrides)


def breaching_milestones(iterations: int) -> list[int]:
    """breaching's "step-lr" milestones (attacks/auxiliaries/common.py), to check they are
    fedbench's: a different schedule would make the two PSNRs incomparable. It divides by
    2.667, 1.6 and 1.142, so some run lengths (2,000) put a drop one iteration off 3/8, 5/8
    or 7/8; 50 and the smoke run's 2 match exactly."""
    return [int(iterations // d) for d in (2.667, 1.6, 1.142)]


def breaching_inverting(
    view: ClientUpdateView, private: TensorData, *, restarts: int, iterations: int,
    tv_weight: float,
) -> Callable[[], torch.Tensor] | None:
    """breaching's Inverting Gradients on the same model, target gradient and labels.

    Returns a function that runs the whole attack (``reconstruct``: every trial, its scoring
    and the choice of the best) and returns the reconstruction; None without breaching.
    Data mean 0 and std 1 make breaching's box [0, 1], fedbench's pixel box.
    """
    breaching = import_breaching()
    if breaching is None:
        return None
    assert all(abs(a - b) <= 1 for a, b in zip(breaching_milestones(iterations),
                                               milestones(iterations), strict=True))
    cfg = breaching_config(breaching, restarts=restarts, iterations=iterations,
                           tv_weight=tv_weight)
    model = lenet()
    with quiet_breaching():
        attacker = breaching.attacks.prepare_attack(
            model, torch.nn.CrossEntropyLoss(), cfg,
            {"dtype": torch.float, "device": torch.device("cpu")})
    metadata = SimpleNamespace(shape=SHAPE, mean=[0.0] * SHAPE[0], std=[1.0] * SHAPE[0],
                               modality="vision")
    params = [p.detach().clone() for p in model.parameters()]
    payload = [{"parameters": params, "buffers": None, "metadata": metadata}]
    shared = {"num_data_points": len(private), "labels": private.y, "local_hyperparams": None}
    shared_data = [{"gradients": target_gradient(view, model), "buffers": None,
                    "metadata": shared}]

    def run() -> torch.Tensor:
        # breaching draws its start from the global generator: seed it, leave it as it was.
        with torch.random.fork_rng(devices=[]), quiet_breaching():
            torch.manual_seed(0)
            reconstructed, _ = attacker.reconstruct(payload, shared_data, {}, dryrun=False)
        data: torch.Tensor = reconstructed["data"]
        return data

    return run


def mean_psnr(reconstruction: torch.Tensor, truth: TensorData) -> float:
    """fedbench's PSNR (dB): each reconstruction matched to one true image, then averaged."""
    return float(np.mean(per_image_psnr(reconstruction, truth.x, data_kind="image")[1]))


def interleaved_best(arms: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds per arm, the arms taking turns so all see the same machine
    state; each arm's first round is preceded by an untimed warm-up."""
    best = dict.fromkeys(arms, math.inf)
    for _ in range(rounds):
        for name, fn in arms.items():
            best[name] = min(best[name], best_seconds(fn, repeats=1,
                                                      warmup=best[name] == math.inf))
    return best


@pytest.mark.parametrize("batch", BATCHES)
def test_inverting_gradients_speed(benchmark: BenchmarkFixture, batch: int) -> None:
    view, knowledge, private = setting(batch)
    attack = InvertingGradients(iterations=IG_ITERATIONS)
    results: list[AttackResult] = []

    def run() -> None:
        results[:] = [attack.run(view, knowledge)]

    arms: dict[str, Callable[[], object]] = {
        "fedbench": run,
        "reference": reference_inverting_loop(view, private, restarts=attack.restarts,
                                              iterations=IG_ITERATIONS,
                                              tv_weight=attack.tv_weight),
    }
    breaching = breaching_inverting(view, private, restarts=attack.restarts,
                                    iterations=IG_ITERATIONS, tv_weight=attack.tv_weight)
    if breaching is not None:
        arms["breaching"] = breaching
    seconds = interleaved_best(arms, ROUNDS)
    per_iteration = seconds["fedbench"] / IG_ITERATIONS
    reconstruction = results[0].reconstruction
    assert reconstruction is not None
    evaluations = attack.restarts * IG_ITERATIONS
    compare = {"ratio_iteration_to_training_step": "lower",
               "ratio_evaluations_to_reference": "higher"}
    benchmark.extra_info.update({
        "model": "lenet", "input": "3x32x32", "batch": batch, "num_params": num_params(lenet()),
        "restarts": attack.restarts,
        "iterations": IG_ITERATIONS,
        "iterations_per_second": 1.0 / per_iteration,
        "restart_iterations_per_second": attack.restarts / per_iteration,
        "evaluations_per_second": evaluations / seconds["fedbench"],
        "reference_evaluations_per_second": evaluations / seconds["reference"],
        "ratio_evaluations_to_reference": seconds["reference"] / seconds["fedbench"],
        "ratio_iteration_to_training_step": per_iteration / training_step_seconds(private),
        # The same attack: both PSNRs beside what an input that learnt nothing scores.
        "psnr": mean_psnr(reconstruction, private),
        "psnr_failure_baseline": failure_baseline(private.x, "image").value,
        "compare": compare,
    })
    if breaching is not None:
        ratio = seconds["breaching"] / seconds["fedbench"]
        compare["ratio_evaluations_to_breaching"] = "higher"
        benchmark.extra_info.update({
            "breaching_evaluations_per_second": evaluations / seconds["breaching"],
            "ratio_evaluations_to_breaching": ratio,
            "breaching_psnr": mean_psnr(breaching(), private),
            # Issue 14's goal; recorded, never asserted.
            "targets": {"ratio_evaluations_to_breaching": {"min": 1.0}},
            "meets_target": ratio >= 1.0,
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
    benchmark: BenchmarkFixture, design: str, pool_size: int, threads: int
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
