"""Distributed DP (discrete Gaussian shares under SecAgg) per round, against DP-FedAvg on the
same shapes, and the discrete Gaussian sampler per draw.

- ``test_discrete_gaussian_per_draw``: the vectorized seeded sampler
  (``discrete_gaussian_array``, numpy) vs the exact one-at-a-time sampler that ``secure_mode``
  uses (``discrete_gaussian_vector`` on ``secrets.SystemRandom``) and the same exact sampler on a
  seeded ``random.Random`` (what seeded runs used before), at the local variance a plan gives.
  ``extra_info['speedup_vs_exact']``, ns per draw of each.
- ``test_distributed_dp_round``: one whole round of the ``distributed_dp`` defense through its
  channel — every client clips, rotates, rounds, adds its noise share and masks; the server
  verifies, sums, unmasks and decodes; the server stage divides by q·N — vs one round of
  ``dp_fedavg`` (every client clipped, the plaintext sum, Gaussian noise on it) on the same
  updates: ``extra_info['ratio_to_dp_fedavg']``. d = 1e6 and ResNet-18 size (11,173,962
  parameters, rotated in 2^24), 10 clients, full graph.

Times are never asserted. Run: ``pytest benchmarks/test_distributed_dp.py --benchmark-only``
(about 3 minutes); smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_distributed_dp.py
--benchmark-disable``.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets

import numpy as np
import pytest
import torch
from timing import best_seconds

from fedbench.defenses.dp import distributed as dd
from fedbench.defenses.dp.accounting import GaussianNoise
from fedbench.defenses.dp.central import DPFedAvg
from fedbench.defenses.dp.distributed_defense import DistributedDP
from fedbench.fl.channel import PlaintextChannel
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.seeding import Streams

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
RESNET18 = 11_173_962  # fedbench's resnet18 on 3×32×32 inputs, 10 classes
CLIENTS = 3 if SMOKE else 10
DIMS = [10_000] if SMOKE else [1_000_000, RESNET18]


def run_info(clients: int, dim: int) -> RunInfo:
    """Every client sampled each round (q = 1, Poisson), uniform weights: what both DP
    defenses accept without being marked insecure."""
    return RunInfo(
        num_clients=clients, rounds=10, expected_clients=float(clients), sampling="poisson",
        weighting="uniform", recipe=None, client_sizes=(1,) * clients, dim=dim,
        model_factory=None, streams=Streams(0),
    )


def context(run: RunInfo, round_index: int) -> RoundContext:
    return RoundContext(
        round=round_index, sampled=list(range(run.num_clients)), num_clients=run.num_clients,
        expected_clients=run.expected_clients, dim=run.dim, streams=run.streams,
    )


def local_variance(clients: int, dim: int) -> int:
    """σ_loc² of the plan the defense makes for ``clients`` at ``dim`` (z = 1, C = 1, b = 32)."""
    plan = dd.plan(dim=dim, clip_norm=1.0, noise_multiplier=1.0,
                   expected_clients=float(clients), max_clients=clients, bits=32)
    return plan.local_variance


def test_discrete_gaussian_per_draw(benchmark) -> None:  # type: ignore[no-untyped-def]
    variance = local_variance(CLIENTS, DIMS[-1])
    vector_draws, exact_draws = (10_000, 500) if SMOKE else (1_000_000, 20_000)
    rng = np.random.default_rng(0)
    repeats = 1 if SMOKE else 5
    ours = best_seconds(lambda: dd.discrete_gaussian_array(vector_draws, variance, rng),
                        repeats=repeats) / vector_draws
    csprng = best_seconds(
        lambda: dd.discrete_gaussian_vector(exact_draws, variance, secrets.SystemRandom()),
        repeats=1) / exact_draws
    seeded = best_seconds(
        lambda: dd.discrete_gaussian_vector(exact_draws, variance, random.Random(0)),
        repeats=1) / exact_draws
    benchmark.pedantic(lambda: dd.discrete_gaussian_array(vector_draws, variance, rng),
                       rounds=repeats, iterations=1)
    benchmark.extra_info.update({
        "channel": "discrete-gaussian", "role": "channel", "phase": "noise", "values": 1,
        "variance": variance, "ns_per_draw": ours * 1e9, "exact_csprng_ns_per_draw": csprng * 1e9,
        "exact_seeded_ns_per_draw": seeded * 1e9, "speedup_vs_exact": seeded / ours,
        "compare": {"speedup_vs_exact": "higher"},
    })


@pytest.mark.parametrize("dim", DIMS)
def test_distributed_dp_round(benchmark, dim: int) -> None:  # type: ignore[no-untyped-def]
    run = run_info(CLIENTS, dim)
    rng = np.random.default_rng(dim)
    updates = [(rng.standard_normal(dim) / np.sqrt(dim)).astype(np.float32)
               for _ in range(CLIENTS)]
    rounds = itertools.count()

    distributed = DistributedDP(noise=GaussianNoise(multiplier=1.0), clip_norm=1.0)
    distributed.setup(run)
    channel = distributed.channel
    assert distributed.server_update is not None
    server = distributed.server_update

    def distributed_round() -> object:
        ctx = context(run, next(rounds))
        channel.begin_round(ctx)
        messages = {c: channel.encode(c, u) for c, u in enumerate(updates)}
        total = torch.from_numpy(channel.aggregate(messages).total)
        return server.apply(total, float(CLIENTS), ctx)

    central = DPFedAvg(noise=GaussianNoise(multiplier=1.0), clip_norm=1.0)
    central.setup(run)
    plain = PlaintextChannel()
    assert central.client_update is not None and central.server_update is not None
    clip, noise = central.client_update, central.server_update

    def central_round() -> object:
        ctx = context(run, next(rounds))
        messages = {
            c: plain.encode(c, clip.apply(c, torch.from_numpy(u), ctx).numpy())
            for c, u in enumerate(updates)
        }
        return noise.apply(torch.from_numpy(plain.aggregate(messages).total), float(CLIENTS),
                           ctx)

    repeats = 1 if SMOKE or dim > 1_000_000 else 2
    central_seconds = best_seconds(central_round, repeats=repeats + 1)
    ours = best_seconds(distributed_round, repeats=repeats)
    benchmark.pedantic(distributed_round, rounds=1, iterations=1)
    plan = distributed.encoder.plan
    benchmark.extra_info.update({
        "channel": "distributed_dp", "role": "channel", "phase": "round", "clients": CLIENTS,
        "dim": dim, "padded": plan.padded, "values": CLIENTS * dim,
        "local_variance": plan.local_variance, "round_seconds": ours,
        "dp_fedavg_round_seconds": central_seconds, "ratio_to_dp_fedavg": ours / central_seconds,
        "per_client_seconds": ours / CLIENTS, "compare": {"ratio_to_dp_fedavg": "lower"},
    })
