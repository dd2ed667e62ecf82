"""Many clients per round: round time against clients per round, vectorized vs the loop, and
Flower's simulation engine on the same workload.

Workloads (one FedAvg round, one local epoch, batch 8, lr 0.1, no defense, no evaluation):

- ``digits-mlp`` / ``digits-convnet``: the 1,150 client digits split over N = m clients, all
  of them sampled (115 digits a client at m = 10, 1–2 at m = 1,000);
- ``cross-device-mlp``: 1,000 clients of 1–2 digits, m = 10, 100, 1,000 sampled per round.

``test_round_time`` records per configuration (in ``extra_info``, as ratios measured in the
same run, never asserted as times):

- ``ratio_loop_to_vectorized``: the sequential loop's best round time over the vectorized
  engine's (5 rounds each, interleaved), same config but ``fl.engine`` (goal ≥ 5× at
  m = 1,000 on one torch thread, ``conftest.py``); pytest-benchmark times one more round;
- ``overhead_fraction`` (each engine): median round time minus the median of the clients'
  training time, over the round (goal < 10%);
- ``bound_ratio`` (each engine): best round time over its arithmetic bound, the round's training
  FLOPs (forward and backward of every example, counted by ``torch.utils.flop_counter``)
  divided by the matmul throughput of a 512³ float32 product measured in the same run on the
  same thread.

``test_flower_round`` runs ``digits-mlp`` in Flower's engine (``benchmarks/flower_scale.py``
in a child process: ``run_simulation``, Ray on 127.0.0.1, 2 CPUs, 1 CPU per client, Flower's
FedAvg) and records Flower's best seconds per round after its first, its start-up and first
round separately, and ``ratio_flower_to_fedbench`` against fedbench's default engine (``auto``:
vectorized here; goal ≥ 100× at m = 1,000). It skips when flwr or
Ray is not installed, and in smoke mode (Ray's start-up alone takes ~10 s).

Run: ``pytest benchmarks/test_scale.py --benchmark-only`` (Flower at m = 1,000 takes ~2 minutes;
``FEDBENCH_SCALE_FLOWER_MAX=100`` leaves it out).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fedbench.config import ExperimentConfig, parse_experiment
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.integrations.flower_sim import loopback_only
from fedbench.seeding import Streams

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
ROUNDS = 2 if SMOKE else 5  # timed rounds per engine, after one warm-up round
MODELS = {"mlp": {"name": "mlp", "hidden": [64]}, "convnet": {"name": "convnet", "width": 16}}
CROSS_DEVICE_CLIENTS = 1000
#: (workload, clients per round)
CASES = [("digits-mlp", 10), ("cross-device-mlp", 10)] if SMOKE else [
    (workload, m)
    for workload in ("digits-mlp", "digits-convnet", "cross-device-mlp")
    for m in (10, 100, 1000)
]
FLOWER_MAX = int(os.environ.get("FEDBENCH_SCALE_FLOWER_MAX", "1000"))
FLOWER_CLIENTS = [m for m in (10, 100, 1000) if m <= FLOWER_MAX]
FLOWER_ROUNDS = 3  # the first includes Ray's actor start-up; the others are the steady state
FLOWER_BACKEND = {
    "init_args": {"_node_ip_address": "127.0.0.1", "num_cpus": 2, "include_dashboard": False,
                  "log_to_driver": False},
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
}


def experiment(workload: str, clients_per_round: int, engine: str = "auto",
               rounds: int = ROUNDS + 2) -> ExperimentConfig:
    """The workload's experiment at m clients per round."""
    model = MODELS[workload.split("-")[-1]]
    cross_device = workload.startswith("cross-device")
    fl: dict[str, Any] = {"num_clients": CROSS_DEVICE_CLIENTS if cross_device
                          else clients_per_round,
                          "rounds": rounds, "batch_size": 8, "client_lr": 0.1, "eval_every": 1000}
    if cross_device:
        fl["clients_per_round"] = clients_per_round
    fl["engine"] = engine
    return parse_experiment({"data": "digits", "model": model, "fl": fl})


@dataclass(frozen=True)
class Timed:
    """An engine's rounds: median and best round seconds, median client-training seconds.

    Ratios between engines use the best rounds: on this shared machine a burst of load from
    elsewhere lengthens some rounds, and the fastest is the one it touched least.
    """

    round_s: float
    training_s: float
    best_s: float

    @property
    def overhead_fraction(self) -> float:
        """The harness's share of the round (all but the clients' training)."""
        return max(0.0, self.round_s - self.training_s) / self.round_s


def simulation(cfg: ExperimentConfig) -> Simulation:
    """A set-up simulation of ``cfg`` without defenses, ready for ``run_round``."""
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    sim = Simulation(model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
                     pipeline=Pipeline(), streams=streams,
                     transcript=Transcript(rounds=cfg.fl.rounds))
    sim.setup()
    return sim


def time_rounds(sims: dict[str, Simulation], rounds: range) -> dict[str, Timed]:
    """Run ``rounds`` one by one, the simulations in turn within each round (so a burst of load
    from elsewhere slows every engine alike); per simulation, the medians of its round and
    client-training times."""
    walls: dict[str, list[float]] = {name: [] for name in sims}
    training: dict[str, list[float]] = {name: [] for name in sims}
    for t in rounds:
        for name, sim in sims.items():
            before = sim.watch.totals["client_training"]
            tick = time.perf_counter()
            sim.run_round(t)
            walls[name].append(time.perf_counter() - tick)
            training[name].append(sim.watch.totals["client_training"] - before)
    return {name: Timed(statistics.median(walls[name]), statistics.median(training[name]),
                        min(walls[name]))
            for name in sims}


def examples_per_round(sim: Simulation, rounds: range) -> float:
    """Examples the sampled clients train on per round (one local epoch: each once)."""
    epochs = sim.fl.local_epochs
    sizes = [sum(len(sim.data.clients[c]) for c in sim.sampler.sample(t)) for t in rounds]
    return epochs * statistics.mean(sizes)


def training_flops_per_example(sim: Simulation, batch: int = 8) -> float:
    """Matmul and convolution FLOPs of one example's forward and backward pass."""
    model = sim.worker
    x = sim.data.clients[0].x[:1].expand(batch, *sim.data.input_shape).contiguous()
    y = torch.zeros(batch, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def matmul_flops_per_second(size: int = 512, repeats: int = 5) -> float:
    """The float32 matmul throughput of this thread, best of ``repeats`` products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best


def engine_info(prefix: str, timed: Timed, bound_s: float) -> dict[str, float]:
    """One engine's measurements under ``prefix``."""
    return {
        f"{prefix}_round_s": timed.round_s,
        f"{prefix}_best_round_s": timed.best_s,
        f"{prefix}_client_training_s": timed.training_s,
        f"{prefix}_overhead_fraction": timed.overhead_fraction,
        f"{prefix}_bound_ratio": timed.best_s / bound_s,
    }


@pytest.mark.parametrize(("workload", "clients_per_round"), CASES)
def test_round_time(benchmark, workload: str, clients_per_round: int) -> None:
    engines = ("loop", "vectorized")
    sims = {e: simulation(experiment(workload, clients_per_round, e)) for e in engines}
    assert {e: s.engine for e, s in sims.items()} == {e: e for e in engines}
    for sim in sims.values():
        sim.run_round(0)  # warm-up: lazy initialisation, torch.func's first trace
    timed = time_rounds(sims, range(1, ROUNDS + 1))
    main = sims["vectorized"]  # what pytest-benchmark times
    spare = iter(range(ROUNDS + 1, ROUNDS + 2))
    benchmark.pedantic(lambda: main.run_round(next(spare)), rounds=1, iterations=1)
    flops = training_flops_per_example(main) * examples_per_round(main, range(1, ROUNDS + 1))
    rate = matmul_flops_per_second()
    info: dict[str, Any] = {
        "workload": workload, "clients_per_round": clients_per_round,
        "num_clients": main.fl.num_clients, "params": main.dim,
        "threads": torch.get_num_threads(), "round_flops": flops,
        "matmul_flops_per_s": rate, "bound_s": flops / rate,
        "engines": list(engines), "target_ratio_loop_to_vectorized": 5.0,
        "target_overhead_fraction": 0.10,
        "ratio_loop_to_vectorized": timed["loop"].best_s / timed["vectorized"].best_s,
    }
    for e, t in timed.items():
        info.update(engine_info(e, t, flops / rate))
    compare = {"ratio_loop_to_vectorized": "higher", "vectorized_overhead_fraction": "lower",
               "loop_overhead_fraction": "lower"}
    benchmark.extra_info.update({**info, "compare": compare})


def run_flower(cfg: ExperimentConfig, folder: Path) -> dict[str, Any]:
    """Flower's timings of ``cfg`` (``benchmarks/flower_scale.py`` in a loopback-only child)."""
    request, result = folder / "request.json", folder / "result.json"
    request.write_text(json.dumps({"experiment": cfg.model_dump(mode="json"),
                                   "backend_config": FLOWER_BACKEND}), encoding="utf-8")
    script = Path(__file__).with_name("flower_scale.py")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"}
    done = subprocess.run([*loopback_only(), sys.executable, str(script), str(request),
                           str(result)], capture_output=True, text=True, env=env, check=False,
                          timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    timings: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return timings


@pytest.mark.skipif(SMOKE, reason="Ray's start-up alone takes ~10 s")
@pytest.mark.skipif(find_spec("flwr") is None or find_spec("ray") is None,
                    reason="Flower's simulation needs pip install -e '.[flower]'")
@pytest.mark.parametrize("clients_per_round", FLOWER_CLIENTS)
def test_flower_round(benchmark, tmp_path: Path, clients_per_round: int) -> None:
    # fedbench first: Ray's processes take seconds to wind down after the child exits, and
    # would slow rounds timed right after it.
    sim = simulation(experiment("digits-mlp", clients_per_round))
    sim.run_round(0)
    ours = time_rounds({"fedbench": sim}, range(1, ROUNDS + 1))["fedbench"]
    spare = iter(range(ROUNDS + 1, ROUNDS + 2))
    benchmark.pedantic(lambda: sim.run_round(next(spare)), rounds=1, iterations=1)
    flower = run_flower(experiment("digits-mlp", clients_per_round, rounds=FLOWER_ROUNDS),
                        tmp_path)
    assert flower["results_per_round"] == [clients_per_round] * FLOWER_ROUNDS
    steady = min(flower["round_s"][1:])
    benchmark.extra_info.update({
        "workload": "digits-mlp", "clients_per_round": clients_per_round,
        "fedbench_engine": sim.engine,  # fl.engine "auto": vectorized here
        "fedbench_round_s": ours.best_s,
        "fedbench_median_round_s": ours.round_s,
        "flower_round_s": steady,
        "flower_round_s_all": flower["round_s"],
        "flower_first_round_s": flower["round_s"][0],
        "flower_startup_s": flower["startup_s"],
        "flower_total_s": flower["total_s"],
        "flower_backend": FLOWER_BACKEND,
        "flower_version": _version("flwr"), "ray_version": _version("ray"),
        "ratio_flower_to_fedbench": steady / ours.best_s,
        "target_ratio_flower_to_fedbench": 100.0,
        "compare": {"ratio_flower_to_fedbench": "higher"},
    })


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
