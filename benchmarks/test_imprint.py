"""Decode cost of the imprint attack (Fowl et al. 2022) against what the clients spend.

The attack's work is one pass over the trap layer's k × N rows of the update (sort by threshold,
consecutive differences, one division per bin); ``run`` also builds the imprinted model at w_t
and splits the flat update. Measured on an aggregate of n clients × B inputs (FedSGD, plaintext
sum: the channel does not change the decode), for digits-sized (1×8×8) and image_patches-sized
(3×32×32) inputs through an ``mlp`` body, and k = 16 or 256 bins:

- ``decode_seconds``: :func:`recover_inputs` alone (the arithmetic of the attack);
- ``run_seconds``: the registered attack's ``run`` on the view (model build included);
- ``ratio_run_to_training_step``: ``run`` over one client's forward + backward of the imprinted
  model on its batch, measured in the same run (the attack costs about one client step).

``extra_info`` also records the share of inputs recovered exactly in the timed case. Times are
never asserted.

Run: ``pytest benchmarks/test_imprint.py --benchmark-only``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_imprint.py --benchmark-disable``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from timing import best_seconds
from torch.nn import functional as F

from fedbench.attack import AttackerKnowledge
from fedbench.attacks.gradient_inversion.imprint import (
    Imprint,
    ImprintedModel,
    bin_order,
    find_block,
    imprint_thresholds,
    imprinted_factory,
    recover_inputs,
    statistic_row,
    trap_gradient,
)
from fedbench.attacks.gradient_inversion.objective import FunctionalModel
from fedbench.attacks.gradient_inversion.scoring import exact_recovery
from fedbench.config import FLConfig
from fedbench.data.tensors import TensorData
from fedbench.fl.params import get_flat, num_params
from fedbench.fl.views import AggregateView
from fedbench.registry import MODELS

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
LR = 0.1
CLIENTS, BATCH = (2, 4) if SMOKE else (10, 8)
REPEATS = 2 if SMOKE else 10
# (input shape, bins)
CASES = [((1, 8, 8), 16)] if SMOKE else [
    ((1, 8, 8), 16), ((1, 8, 8), 256), ((3, 32, 32), 16), ((3, 32, 32), 256),
]


def data(shape: tuple[int, ...], count: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.rand(count, *shape, generator=g),
                      torch.randint(0, 10, (count,), generator=g), torch.arange(count))


def build_factory(shape: tuple[int, ...], bins: int) -> Callable[[], ImprintedModel]:
    def body() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model: torch.nn.Module = MODELS.create("mlp", {}, in_shape=shape, num_classes=10)
        return model

    row = statistic_row(shape, "projection")  # uniform noise: the mean would barely spread
    thresholds = imprint_thresholds(data(shape, 2000, seed=1).x, bins, row)
    return imprinted_factory(body, thresholds=thresholds, row=row)


def client_update(build: Callable[[], ImprintedModel], batch: TensorData) -> torch.Tensor:
    model = build()
    start = get_flat(model).clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    F.cross_entropy(model(batch.x), batch.y).backward()
    optimizer.step()
    return get_flat(model) - start


def setting(
    shape: tuple[int, ...], bins: int
) -> tuple[AggregateView, AttackerKnowledge, TensorData, Callable[[], ImprintedModel]]:
    """The aggregate of CLIENTS × BATCH inputs and what the attacker knows."""
    build = build_factory(shape, bins)
    private = data(shape, CLIENTS * BATCH, seed=2)
    total = sum(client_update(build, private.subset(torch.arange(c * BATCH, (c + 1) * BATCH)))
                for c in range(CLIENTS))
    assert isinstance(total, torch.Tensor)
    view = AggregateView(round=0, params=get_flat(build()), aggregate=total,
                         contributors=tuple(range(CLIENTS)), num_examples=CLIENTS * BATCH)
    knowledge = AttackerKnowledge(
        model_factory=build, input_shape=shape, num_classes=10, data_kind="image",
        fl=FLConfig(algorithm="fedsgd", batch_size=BATCH, client_lr=LR), defenses={},
        population=data(shape, 64, seed=3), candidates=None, device=torch.device("cpu"), seed=0,
    )
    return view, knowledge, private, build


def training_step_seconds(build: Callable[[], ImprintedModel], batch: TensorData) -> float:
    model = build()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x), batch.y).backward()

    return best_seconds(step, repeats=REPEATS, warmup=True)


@pytest.mark.parametrize(("shape", "bins"), CASES, ids=lambda v: "x".join(map(str, v))
                         if isinstance(v, tuple) else str(v))
def test_imprint_decode_speed(benchmark, shape: tuple[int, ...], bins: int) -> None:
    view, knowledge, private, build = setting(shape, bins)
    attack = Imprint()
    model = FunctionalModel(build(), view.params, torch.device("cpu"))
    layout = find_block(model.module)
    order = bin_order(model.params[layout.weight], model.params[layout.bias])
    weight, bias = trap_gradient(model.split(view.aggregate), layout)

    def decode() -> None:
        recover_inputs(weight, bias, order)

    def run() -> None:
        attack.run(view, knowledge)

    decode_seconds = best_seconds(decode, repeats=REPEATS, warmup=True)
    run_seconds = best_seconds(run, repeats=REPEATS, warmup=True)
    step = training_step_seconds(build, private.subset(torch.arange(BATCH)))
    result = attack.run(view, knowledge)
    assert result.reconstruction is not None
    recovered = exact_recovery(result.reconstruction, private.x)
    benchmark.extra_info.update({
        "model": "mlp", "input": "x".join(map(str, shape)), "bins": bins,
        "clients": CLIENTS, "batch": BATCH, "num_params": num_params(build()),
        "decode_seconds": decode_seconds, "run_seconds": run_seconds,
        "training_step_seconds": step,
        "ratio_run_to_training_step": run_seconds / step,
        "exact_recovery": recovered.fraction,
        "compare": {"ratio_run_to_training_step": "lower"},
    })
    benchmark.pedantic(run, rounds=REPEATS, iterations=1, warmup_rounds=1)
