"""Flower's simulation engine on the scale benchmark's workload, in a child process.

``python benchmarks/flower_scale.py REQUEST.json RESULT.json`` (started by
``benchmarks/test_scale.py``; needs ``pip install -e ".[flower]"``): runs the request's fedbench
experiment as a real Flower simulation (``flwr.simulation.run_simulation``, Ray backend bound
to 127.0.0.1) whose clients train exactly as fedbench's do — :mod:`fedbench.integrations.
flower_app`'s ``FedbenchClient``: the same shards, initial model, ``SGDTraining`` and batch
schedule, one torch thread — under Flower's plain ``FedAvg`` with every client sampled each
round and no evaluation. The server's strategy timestamps each round; the result holds the
start-up (process start to the first round's ``configure_fit``) and each round's period
(``configure_fit`` of round r to that of r + 1; the last round ends at its ``aggregate_fit``).

Flower is imported here only, never by the benchmark module, so the benchmarks import without it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # before Flower's and Ray's imports: they are part of start-up


def run(request: Path, result: Path) -> None:
    """Run the requested simulation and write its timings to ``result``."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedbench.fl.params import get_flat
    from fedbench.integrations.flower_app import ROUND, _parts, arrays, client_app
    from fedbench.integrations.flower_sim import FlowerPlan

    asked = json.loads(request.read_text(encoding="utf-8"))
    text = json.dumps(asked["experiment"])
    cfg, _, model = _parts(text)
    clients = cfg.fl.num_clients
    marks: dict[str, list[float]] = {"configure": [], "aggregate": []}
    results: list[int] = []

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        """FedAvg that notes when each round's fit starts and when its aggregate is done."""

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            marks["configure"].append(time.perf_counter())
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, fit_results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, fit_results, failures)
            marks["aggregate"].append(time.perf_counter())
            results.append(len(fit_results))
            return out

    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
        min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(arrays(get_flat(model), model)),
        on_fit_config_fn=lambda server_round: {ROUND: server_round - 1},
    )
    config = ServerConfig(num_rounds=cfg.fl.rounds)
    server = ServerApp(server_fn=lambda context: ServerAppComponents(strategy=strategy,
                                                                     config=config))
    plan = FlowerPlan(sampled=clients, uniform=cfg.fl.weighting == "uniform")
    run_simulation(
        server_app=server, client_app=client_app(text, plan), num_supernodes=clients,
        backend_config=asked["backend_config"],
    )
    periods = [b - a for a, b in zip(marks["configure"], marks["configure"][1:], strict=False)]
    if marks["aggregate"]:
        periods.append(marks["aggregate"][-1] - marks["configure"][-1])
    result.write_text(json.dumps({
        "startup_s": marks["configure"][0] - STARTED if marks["configure"] else None,
        "round_s": periods,
        "results_per_round": results,
        "total_s": time.perf_counter() - STARTED,
    }), encoding="utf-8")


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
