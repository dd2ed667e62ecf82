"""The Flower app of a ``framework: flower`` cell, run by Flower's own simulation
(``python -m fedbench.integrations.flower_app REQUEST.json FOLDER``, started by
:func:`fedbench.integrations.flower_sim.simulate`; needs ``pip install 'fedbench[flower]'``).

The clients train exactly as fedbench's simulation does: the same shards (``cell_data``), the
same initial model, and fedbench's own local training (``SGDTraining``) with the batch
schedule of the ``local_training`` stream keyed by round and client, at the cell's torch thread
count. What differs is Flower's: its sampling, its aggregation arithmetic (a float32 weighted
mean of the models where fedbench sums the updates in float64), its DP noise (numpy's global
generator), SecAgg+'s quantization. The server's strategy is wrapped by the
:class:`~fedbench.integrations.flower.TranscriptRecorder`, which writes ``FOLDER``.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import LocalDpMod, fixedclipping_mod, secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation
from torch import nn

from fedbench.config import ExperimentConfig, parse_experiment
from fedbench.data.federated import FederatedData
from fedbench.fl.client import SGDTraining
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat, set_flat
from fedbench.harness.build import cell_data, model_factory
from fedbench.integrations.flower import CLIENT_ID, EXAMPLES, TranscriptRecorder
from fedbench.integrations.flower_sim import FlowerPlan
from fedbench.seeding import Streams

#: The fit config key in which the server tells each client fedbench's round index.
ROUND = "fedbench_round"

Arrays = list[np.ndarray]


@cache
def _parts(text: str) -> tuple[ExperimentConfig, FederatedData, nn.Module]:
    """The cell's data and a model with its initial weights (once per worker process)."""
    cfg = parse_experiment(json.loads(text))
    streams = Streams(cfg.seed)
    data, _ = cell_data(cfg, streams)
    return cfg, data, model_factory(cfg, data, streams)()


def arrays(flat: torch.Tensor, model: nn.Module) -> Arrays:
    """A flat vector as one array per parameter (fedbench's order)."""
    out, start = [], 0
    for p in model.parameters():
        out.append(flat[start:start + p.numel()].reshape(p.shape).numpy().copy())
        start += p.numel()
    return out


class FedbenchClient(NumPyClient):
    """Client ``cid`` of the cell: fedbench's local training on its shard."""

    def __init__(self, text: str, cid: int, uniform: bool) -> None:
        self.text = text
        self.cid = cid
        self.uniform = uniform

    def fit(self, parameters: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, Any]]:
        cfg, data, model = _parts(self.text)
        torch.set_num_threads(cfg.threads)  # float reductions in fedbench's order
        received = torch.from_numpy(np.concatenate([a.ravel() for a in parameters]))
        set_flat(model, received.to(torch.float32))
        ctx = RoundContext(round=int(config[ROUND]), sampled=[self.cid],
                           num_clients=cfg.fl.num_clients,
                           expected_clients=cfg.fl.expected_clients,
                           dim=received.numel(), streams=Streams(cfg.seed))
        shard = data.clients[self.cid]
        local = SGDTraining().train(model, shard, cfg.fl.recipe, client_id=self.cid, ctx=ctx)
        # Flower's FedAvg weights by num_examples: 1 each is its unweighted mean.
        weight = 1 if self.uniform else len(shard)
        return arrays(local.params, model), weight, {CLIENT_ID: self.cid, EXAMPLES: len(shard)}


def client_app(text: str, plan: FlowerPlan) -> ClientApp:
    """The clients, with the mods that stand for the cell's client-side defense."""
    mods: list[Any] = []
    if plan.secagg is not None:
        mods.append(secaggplus_mod)
    if plan.central_dp is not None and plan.central_dp.clipping == "client":
        mods.append(fixedclipping_mod)
    if plan.local_dp is not None:
        dp = plan.local_dp
        mods.append(LocalDpMod(dp.clipping_norm, dp.sensitivity, dp.epsilon, dp.delta))

    def client_fn(context: Context) -> Any:
        cid = int(context.node_config["partition-id"])
        return FedbenchClient(text, cid, plan.uniform).to_client()

    return ClientApp(client_fn=client_fn, mods=mods)


def strategy(cfg: ExperimentConfig, plan: FlowerPlan, w_0: Arrays) -> Strategy:
    """FedAvg over the sampled clients, inside Flower's DP wrapper when the cell has one."""
    clients = cfg.fl.num_clients
    inner: Strategy = FedAvg(
        fraction_fit=plan.sampled / clients, fraction_evaluate=0.0,
        min_fit_clients=plan.sampled, min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(w_0),
        on_fit_config_fn=lambda server_round: {ROUND: server_round - 1},
    )
    dp = plan.central_dp
    if dp is None:
        return inner
    wrapper = (DifferentialPrivacyServerSideFixedClipping if dp.clipping == "server"
               else DifferentialPrivacyClientSideFixedClipping)
    wrapped: Strategy = wrapper(inner, noise_multiplier=dp.noise_multiplier,
                                clipping_norm=dp.clipping_norm,
                                num_sampled_clients=dp.num_sampled_clients)
    return wrapped


def server_app(recorder: TranscriptRecorder, rounds: int, plan: FlowerPlan) -> ServerApp:
    """The usual ``server_fn`` app, or SecAgg+'s workflow around the same recorder."""
    config = ServerConfig(num_rounds=rounds)
    secagg = plan.secagg
    if secagg is None:
        return ServerApp(server_fn=lambda context: ServerAppComponents(strategy=recorder,
                                                                       config=config))
    app = ServerApp()

    def main(grid: Any, context: Any) -> None:
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=secagg.num_shares,
            reconstruction_threshold=secagg.reconstruction_threshold,
            max_weight=secagg.max_weight))
        workflow(grid, LegacyContext(context, config=config, strategy=recorder))

    app.main()(main)
    return app


def covers_shards(cfg: ExperimentConfig) -> bool:
    """Whether every contributor's local training touches all of its shard (the transcript's
    scoring truth): FedAvg epochs do, a FedSGD step on the whole shard does."""
    fl = cfg.fl
    if fl.algorithm == "fedsgd":
        return fl.batch_size is None
    return fl.local_steps is None


def run(request: Path, folder: Path) -> None:
    """Run the Flower simulation the parent asked for; the transcript goes to ``folder``."""
    asked = json.loads(request.read_text(encoding="utf-8"))
    text = json.dumps(asked["experiment"])
    plan = FlowerPlan.from_json(asked["plan"])
    cfg, _, model = _parts(text)
    w_0 = arrays(get_flat(model), model)
    recorder = TranscriptRecorder(
        strategy(cfg, plan, w_0), folder=folder, experiment=cfg,
        whole_shards=covers_shards(cfg), secure_aggregation=plan.secagg is not None)
    run_simulation(
        server_app=server_app(recorder, cfg.fl.rounds, plan),
        client_app=client_app(text, plan),
        num_supernodes=cfg.fl.num_clients,
        backend_config={
            "init_args": {"_node_ip_address": "127.0.0.1", "num_cpus": 2,
                          "include_dashboard": False, "log_to_driver": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
    if not (folder / "transcript.json").exists():
        raise SystemExit(f"the Flower run wrote no transcript to {folder}")
    failed = [r.round for r in recorder.transcript.rounds if r.failed]
    if failed:  # Flower logs a client's exception and carries on; the cell must not
        raise SystemExit(f"the Flower run failed rounds {failed}: no client update arrived "
                         "(the clients' errors are above)")


if __name__ == "__main__":
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    # Imported under its own name: Ray pickles the clients by module, and a worker cannot
    # import this file as __main__.
    from fedbench.integrations.flower_app import run as run_imported

    run_imported(Path(sys.argv[1]), Path(sys.argv[2]))
