"""Tests for the simulation's engines: the vectorized one gives the loop's client outputs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedbench.config import parse_experiment
from fedbench.defense import Defense
from fedbench.defenses.dp.local_sgd import DPSGD
from fedbench.defenses.dp.stacked_sgd import poisson_round
from fedbench.errors import ConfigError
from fedbench.fl.client import SGDTraining
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, build_defenses, model_factory, pipeline_problems
from fedbench.harness.cell import run_cell
from fedbench.harness.schema import CellRecord
from fedbench.harness.suite import Cell
from fedbench.registry import MODELS
from fedbench.seeding import Streams

RAGGED = {"name": "dirichlet", "alpha": 0.3, "min_size": 2}


def _simulation(
    config: dict[str, Any], engine: str, chunk_size: int | None = None,
    defenses: Sequence[tuple[str, Defense]] | None = None,
) -> Simulation:
    cfg = parse_experiment({**config, "fl": {**config["fl"], "engine": engine}})
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    rounds = cfg.fl.rounds
    pipeline = Pipeline(build_defenses(cfg) if defenses is None else defenses)
    return Simulation(
        model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
        pipeline=pipeline, streams=streams,
        transcript=Transcript(rounds=rounds, keep_rounds=range(rounds)), chunk_size=chunk_size,
    )


def _assert_same_run(looped: SimulationResult, vectorized: SimulationResult) -> None:
    """The same client outputs every round (updates, losses, examples) and the same model."""
    assert (looped.engine, vectorized.engine) == ("loop", "vectorized")
    for a, b in zip(looped.transcript.rounds, vectorized.transcript.rounds, strict=True):
        assert a.sampled == b.sampled and a.contributors == b.contributors
        assert a.client_updates.keys() == b.client_updates.keys()
        for cid, update in a.client_updates.items():
            assert update.abs().amax() > 1e-6  # the client trained
            torch.testing.assert_close(b.client_updates[cid], update, atol=1e-5, rtol=1e-4)
    for key, ids in looped.private.used_ids.items():
        assert torch.equal(vectorized.private.used_ids[key], ids)
    assert looped.private.used_ids.keys() == vectorized.private.used_ids.keys()
    for a_round, b_round in zip(looped.history, vectorized.history, strict=True):
        assert b_round.train_loss == pytest.approx(a_round.train_loss, rel=1e-5, nan_ok=True)
    torch.testing.assert_close(
        torch.cat([p.flatten() for p in vectorized.model.parameters()]),
        torch.cat([p.flatten() for p in looped.model.parameters()]), atol=1e-5, rtol=1e-4,
    )


CASES = {
    # FedSGD on each client's whole shard: one batch of its own size per client
    "fedsgd-logreg": {"model": "logreg", "partition": RAGGED,
                      "fl": {"algorithm": "fedsgd", "batch_size": None, "num_clients": 6,
                             "rounds": 2}},
    # several local epochs, momentum, ragged shards (different step counts, short batches),
    # weighted aggregation, a sample of the clients per round, in chunks of 3
    "fedavg-mlp-momentum": {"model": {"name": "mlp", "hidden": [16]}, "partition": RAGGED,
                            "fl": {"num_clients": 40, "clients_per_round": 7, "rounds": 2,
                                   "local_epochs": 3, "batch_size": 8, "client_momentum": 0.9,
                                   "weighting": "weighted"}},
    # every client smaller than a batch (the shard is the batch)
    "clients-smaller-than-a-batch": {"model": "logreg", "partition": RAGGED,
                                     "fl": {"num_clients": 40, "clients_per_round": 12,
                                            "rounds": 2, "batch_size": 256,
                                            "local_epochs": 2, "weighting": "uniform"}},
    "convnet-steps": {"model": {"name": "convnet", "width": 4}, "partition": RAGGED,
                      "fl": {"num_clients": 4, "rounds": 1, "local_steps": 3,
                             "batch_size": 8}},
    "lenet": {"model": "lenet", "fl": {"num_clients": 30, "clients_per_round": 3, "rounds": 1,
                                       "batch_size": 16, "client_lr": 0.01}},
    # a client-update stage (per-client top-k pruning) applied to each update afterwards
    "client-stage-prune": {"model": {"name": "mlp", "hidden": [16]}, "partition": RAGGED,
                           "defenses": [{"name": "prune", "ratio": 0.1}],
                           "fl": {"num_clients": 20, "clients_per_round": 5, "rounds": 2,
                                  "batch_size": 16}},
}


@pytest.mark.parametrize("config", list(CASES.values()), ids=list(CASES))
def test_vectorized_engine_gives_the_loops_client_outputs(config: dict[str, Any]) -> None:
    looped = _simulation(config, "loop").run()
    vectorized = _simulation(config, "vectorized", chunk_size=3).run()
    _assert_same_run(looped, vectorized)


def test_auto_is_vectorized_where_it_applies() -> None:
    assert _simulation(CASES["lenet"], "auto").engine == "vectorized"


DP_SGD = {
    # Poisson batches of ragged clients (some empty: a pure-noise step), clipping that bites,
    # momentum, several epochs
    "mlp-ragged-momentum": {
        "model": {"name": "mlp", "hidden": [16]}, "partition": RAGGED,
        "defenses": [{"name": "dp_sgd", "max_grad_norm": 0.5, "noise": {"multiplier": 0.7}}],
        "fl": {"num_clients": 40, "clients_per_round": 6, "rounds": 2, "batch_size": 8,
               "local_epochs": 2, "client_momentum": 0.5}},
    # clients of a few examples (many empty batches) and a clip norm some examples are under
    "small-clients-steps": {
        "model": "logreg", "partition": {"name": "dirichlet", "alpha": 0.5, "min_size": 1},
        "defenses": [{"name": "dp_sgd", "max_grad_norm": 3.0, "noise": {"multiplier": 1.0}}],
        "fl": {"num_clients": 300, "clients_per_round": 12, "rounds": 2, "batch_size": 2,
               "local_steps": 3}},
    "fedsgd-lenet": {
        "model": "lenet",
        "defenses": [{"name": "dp_sgd", "max_grad_norm": 1.0, "noise": {"multiplier": 0.5}}],
        "fl": {"algorithm": "fedsgd", "num_clients": 30, "clients_per_round": 3, "rounds": 1,
               "batch_size": 16}},
}


@pytest.mark.parametrize("config", list(DP_SGD.values()), ids=list(DP_SGD))
def test_vectorized_dp_sgd_gives_the_opacus_path(config: dict[str, Any]) -> None:
    looped, vectorized = _simulation(config, "loop"), _simulation(config, "vectorized", 5)
    looped_run, vectorized_run = looped.run(), vectorized.run()
    _assert_same_run(looped_run, vectorized_run)
    # the same accountant steps, client by client
    opacus, stacked = looped.pipeline.defenses[0][1], vectorized.pipeline.defenses[0][1]
    assert isinstance(opacus, DPSGD) and isinstance(stacked, DPSGD)
    assert stacked.client_epsilons(1e-5) == opacus.client_epsilons(1e-5)
    assert {c: s.rounds for c, s in stacked.clients.items()} == {
        c: s.rounds for c, s in opacus.clients.items()}


def test_poisson_rounds_draw_opacus_batches() -> None:
    # Opacus' own loader over the same generator: the same batches (empty ones included)
    data = TensorDataset(torch.arange(5))
    loader = DataLoader(data, batch_size=2, generator=torch.Generator().manual_seed(3))
    dp_loader = DPDataLoader.from_data_loader(loader)
    passes = (batch for _ in range(3) for batch in dp_loader)  # cycled, as OpacusTraining does
    opacus = [b[0] for b in itertools.islice(passes, 7)]
    drawn = poisson_round(5, 2, 7, torch.Generator().manual_seed(3))
    assert [b.tolist() for b in drawn.batches] == [b.tolist() for b in opacus]
    assert any(len(b) == 0 for b in drawn.batches) and any(len(b) > 1 for b in drawn.batches)
    assert (drawn.sample_rate, drawn.expected_batch_size) == (1 / 3, 1)


def test_secure_mode_dp_sgd_stays_on_the_opacus_path() -> None:
    config = {"model": "logreg", "fl": {"num_clients": 2, "rounds": 1},
              "defenses": [{"name": "dp_sgd", "noise": {"multiplier": 1.0,
                                                         "secure_mode": True}}]}
    assert _simulation(config, "auto").engine == "loop"
    with pytest.raises(ConfigError, match=r"vectorized.*'dp_sgd'.*secure_mode"):
        _simulation(config, "vectorized")


class _OwnTraining(SGDTraining):
    """A subclass may train differently: the engine cannot assume SGDTraining's arithmetic."""


class _OwnTrainingDefense(Defense):
    def __init__(self) -> None:
        self.local_training = _OwnTraining()


def test_a_defense_that_trains_the_clients_itself_gets_the_loop() -> None:
    config = {"model": "logreg", "fl": {"num_clients": 2, "rounds": 1}}
    own = [("own", _OwnTrainingDefense())]
    assert _simulation(config, "auto", defenses=own).engine == "loop"
    with pytest.raises(ConfigError, match=r"vectorized.*'own' \(_OwnTraining\)"):
        _simulation(config, "vectorized", defenses=own)


def _batchnorm_mlp(*, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    features = int(torch.Size(in_shape).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, num_classes))


@pytest.fixture
def batchnorm_model() -> Iterator[str]:
    name = "_test_batchnorm_mlp"
    MODELS.register(name, context=("in_shape", "num_classes"))(_batchnorm_mlp)
    try:
        yield name
    finally:
        MODELS._components.pop(name)


def test_a_model_with_buffers_falls_back_to_the_loop_and_the_record_says_so(
    batchnorm_model: str,
) -> None:
    experiment = {"name": "bn", "model": batchnorm_model, "mia_candidates": 20,
                  "fl": {"num_clients": 2, "rounds": 1, "batch_size": 16}}
    cfg = parse_experiment(experiment)
    cell = run_cell(Cell("t", "bn", "none", 0, cfg))[-1]
    assert isinstance(cell, CellRecord) and cell.status == "ok" and cell.engine == "loop"
    vectorized = parse_experiment({**experiment, "fl": {**experiment["fl"],
                                                        "engine": "vectorized"}})
    (problem,) = pipeline_problems(vectorized)  # refused before any training ...
    assert "vectorized" in problem and "buffers" in problem and "running_mean" in problem
    with pytest.raises(ConfigError, match="buffers"):  # ... and by the run itself
        _simulation(experiment, "vectorized")


def test_the_record_names_the_vectorized_engine() -> None:
    cfg = parse_experiment({"name": "v", "model": "logreg", "mia_candidates": 20,
                            "fl": {"num_clients": 2, "rounds": 1, "batch_size": 16}})
    cell = run_cell(Cell("t", "v", "none", 0, cfg))[-1]
    assert isinstance(cell, CellRecord) and cell.engine == "vectorized"
    assert "engine" not in cell.config["fl"]  # the default stays out of the id's dump
