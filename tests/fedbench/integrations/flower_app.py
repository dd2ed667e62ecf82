"""A small Flower app as a user would write it (a full-batch FedSGD client on its own shard), run
by Flower's own simulation (Ray on 127.0.0.1), with fedbench's recorder around the strategy.

Usage (by test_flower.py): unshare --net --fork sh -c "ip link set lo up && python THIS OUT"
(Ray's servers bind every interface; in that namespace the only one is loopback.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedbench.config import ExperimentConfig, parse_experiment
from fedbench.data.federated import FederatedData
from fedbench.harness.build import build_data, model_factory
from fedbench.integrations.flower import CLIENT_ID, TranscriptRecorder
from fedbench.seeding import Streams

EXPERIMENT: dict[str, Any] = {
    "name": "flower-fedsgd",
    "data": {"name": "image_patches", "per_image": 3},
    "split": {"max_train_examples": 10},  # one image per client
    "model": "lenet",
    "fl": {"algorithm": "fedsgd", "num_clients": 10, "clients_per_round": 2, "rounds": 1,
           "batch_size": None, "client_lr": 0.1, "weighting": "weighted"},
}


def _parts(cfg: ExperimentConfig) -> tuple[FederatedData, Callable[[], nn.Module]]:
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    return data, model_factory(cfg, data, streams)


def _arrays(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.parameters()]


def _client_app(cfg: ExperimentConfig, *, secagg: bool) -> Any:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context

    class FedSGDClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, partition: int) -> None:
            data, build = _parts(cfg)
            self.partition = partition
            self.shard = data.clients[partition]
            self.model = build()

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            with torch.no_grad():
                for p, value in zip(self.model.parameters(), parameters, strict=True):
                    p.copy_(torch.from_numpy(value))
            self.model.zero_grad()
            F.cross_entropy(self.model(self.shard.x), self.shard.y).backward()
            with torch.no_grad():
                for p in self.model.parameters():
                    p -= cfg.fl.client_lr * p.grad
            return _arrays(self.model), len(self.shard), {CLIENT_ID: self.partition}

    def client_fn(context: Context) -> Any:
        return FedSGDClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secagg else [])


def _server_app(recorder: TranscriptRecorder, rounds: int, *, secagg: bool) -> Any:
    """The usual ``server_fn`` app, or SecAgg+'s workflow around the same strategy."""
    from flwr.server import LegacyContext, ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    config = ServerConfig(num_rounds=rounds)
    if not secagg:
        return ServerApp(server_fn=lambda context: ServerAppComponents(strategy=recorder,
                                                                       config=config))
    app = ServerApp()

    @app.main()  # type: ignore[misc]
    def main(grid: Any, context: Any) -> None:
        # max_weight: each client reports one example; Flower's default (1,000) scales the
        # updates by 1/1,000 before quantizing them, which costs ~1e-2 of absolute precision.
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=3, reconstruction_threshold=2, max_weight=1.0))
        workflow(grid, LegacyContext(context, config=config, strategy=recorder))

    return app


#: Flower's server-side DP wrapper: clip every update to this norm, add Gaussian noise.
SERVER_DP = {"noise_multiplier": 1.0, "clipping_norm": 0.05}


def run_flower(
    folder: Path, *, experiment: dict[str, Any] = EXPERIMENT, secagg: bool = False,
    server_dp: bool = False,
) -> TranscriptRecorder:
    """One Flower FedAvg run of ``experiment`` (under SecAgg+ with ``secagg``, inside Flower's
    server-side fixed-clipping DP with ``server_dp``) with the recorder writing to ``folder``."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy
    from flwr.simulation import run_simulation

    cfg = parse_experiment(experiment)
    _, build = _parts(cfg)
    clients = cfg.fl.num_clients
    sampled = cfg.fl.clients_per_round or clients
    strategy: Strategy = FedAvg(
        fraction_fit=sampled / clients, fraction_evaluate=0.0, min_fit_clients=sampled,
        min_available_clients=clients, initial_parameters=ndarrays_to_parameters(_arrays(build())))
    if server_dp:  # the recorder wraps the outermost strategy: it sees what the server sees
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, num_sampled_clients=sampled, **SERVER_DP)
    recorder = TranscriptRecorder(
        strategy,
        folder=folder, experiment=cfg, whole_shards=True, secure_aggregation=secagg,
    )
    run_simulation(
        server_app=_server_app(recorder, cfg.fl.rounds, secagg=secagg),
        client_app=_client_app(cfg, secagg=secagg),
        num_supernodes=clients,
        backend_config={
            "init_args": {"_node_ip_address": "127.0.0.1", "num_cpus": 2,
                          "include_dashboard": False, "log_to_driver": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
    return recorder


#: The SecAgg+ run: three clients, so that each has neighbours to share its secrets with.
SECAGG_EXPERIMENT: dict[str, Any] = {
    **EXPERIMENT, "name": "flower-secaggplus", "fl": {**EXPERIMENT["fl"], "clients_per_round": 3},
}


def main(folder: Path, mode: str) -> None:
    """Run the app (test_flower.py runs this inside a loopback-only network namespace)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    secagg = mode == "secaggplus"
    run_flower(folder, experiment=SECAGG_EXPERIMENT if secagg else EXPERIMENT, secagg=secagg,
               server_dp=mode == "server_dp")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "plain")
