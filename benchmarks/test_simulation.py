"""Harness overhead of one FedAvg round: 100 clients on digits with an MLP.

Overhead = round time − the clients' local training time (sampling, flattening, Δ, the
plaintext channel, transcript, model update). Target: below 10% of the round. Reported in
``extra_info`` as a ratio measured in the same run; never asserted as a time. Torch runs on one
intra-op thread (``conftest.py``), as every cell does by default: with two, these small training
steps run several times slower on a 2-core machine, which would flatter the overhead fraction.

Run: ``pytest benchmarks/test_simulation.py --benchmark-only``
"""

from __future__ import annotations

import os

import pytest
import torch

from fedbench.config import parse_experiment
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
CLIENTS = [10] if SMOKE else [100]


@pytest.mark.parametrize("num_clients", CLIENTS)
def test_fedavg_round_overhead(benchmark, num_clients: int) -> None:
    rounds = 3 if SMOKE else 10
    cfg = parse_experiment(
        {
            "data": "digits",
            "model": {"name": "mlp", "hidden": [64]},
            "fl": {"num_clients": num_clients, "rounds": rounds + 2, "batch_size": 8},
        }
    )
    streams = Streams(0)
    data = build_data(cfg, streams)
    sim = Simulation(
        model_factory=model_factory(cfg, data, streams),
        data=data,
        fl=cfg.fl,
        pipeline=Pipeline(),
        streams=streams,
        transcript=Transcript(rounds=cfg.fl.rounds),
    )
    sim.setup()
    round_numbers = iter(range(cfg.fl.rounds))
    done: list[int] = []  # the rounds timed (a disabled benchmark runs one)

    def one_round() -> None:
        done.append(next(round_numbers))
        sim.run_round(done[-1])

    one_round()  # warm-up: the first round allocates and initialises lazily
    done.clear()
    sim.watch.totals["client_training"] = 0.0
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    training = sim.watch.totals["client_training"] / len(done)
    round_time = benchmark.stats.stats.mean if benchmark.stats else training
    overhead = max(0.0, round_time - training)
    benchmark.extra_info.update(
        {
            "clients": num_clients,
            "threads": torch.get_num_threads(),
            "params": sim.dim,
            "client_training_s_per_round": training,
            "harness_overhead_s_per_round": overhead,
            "overhead_fraction": overhead / round_time if round_time else 0.0,
            "target_overhead_fraction": 0.10,
            "compare": {"overhead_fraction": "lower"},
        }
    )
