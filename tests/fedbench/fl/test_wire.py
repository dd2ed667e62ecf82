"""Tests for the simulation's wire phase: a channel that encodes chunks gets what the
per-client path would give it, bit for bit (messages, sum, rejections, records)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch

from fedbench.adversary import Coalition
from fedbench.config import parse_experiment
from fedbench.defense import Defense
from fedbench.fl.channel import (
    AggregateResult,
    Channel,
    ChunkMessages,
    EncodedUpdate,
    PlaintextChannel,
    encodes_chunks,
)
from fedbench.fl.context import RoundContext
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.stages import ClientUpdateStage
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams

RAGGED = {"name": "dirichlet", "alpha": 0.3, "min_size": 2}


class _OneByOne(PlaintextChannel):
    """The plaintext channel through the per-client path (its encode replaced by itself)."""

    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        return super().encode(client_id, update)


class _Dropping(PlaintextChannel):
    """Loses the first message of every round (a client that dropped out after sending)."""

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        first, *rest = messages
        result = super().aggregate({c: messages[c] for c in rest})
        return AggregateResult(result.total, result.contributors, {first: "dropped out"},
                               result.upload_bytes, stats={"seen": float(len(messages))})


class _DroppingOneByOne(_Dropping):
    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        return super().encode(client_id, update)


class _Poison(ClientUpdateStage):
    """Client 3's update becomes NaN, client 5's one entry longer; the others are scaled."""

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        if client_id == 3:
            return update * float("nan")
        if client_id == 5 and self.malformed:
            return torch.cat([update, update[:1]])
        return update * 0.5

    def __init__(self, malformed: bool) -> None:
        self.malformed = malformed


class _Wire(Defense):
    def __init__(self, channel: Channel, stage: ClientUpdateStage | None = None) -> None:
        self.channel = channel
        self.client_update = stage


def _run(fl: dict[str, Any], channel: Channel, *, stage: ClientUpdateStage | None = None,
         coalition: Coalition | None = None) -> tuple[Simulation, SimulationResult]:
    cfg = parse_experiment({"model": {"name": "mlp", "hidden": [8]}, "partition": RAGGED,
                            "fl": {"engine": "vectorized", **fl}})
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    rounds = cfg.fl.rounds
    sim = Simulation(
        model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
        pipeline=Pipeline([("wire", _Wire(channel, stage))]), streams=streams,
        transcript=Transcript(rounds=rounds, keep_rounds=range(rounds), coalition=coalition),
        cost_baseline=True, chunk_size=3,
    )
    return sim, sim.run()


def _equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def _updates_equal(a: dict[int, torch.Tensor] | None, b: dict[int, torch.Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    return list(a) == list(b) and all(torch.equal(a[c], b[c]) for c in a)


def _assert_same_run(chunked: SimulationResult, each: SimulationResult) -> None:
    """Everything the run recorded, bit for bit (timings aside)."""
    assert torch.equal(torch.cat([p.flatten() for p in chunked.model.parameters()]),
                       torch.cat([p.flatten() for p in each.model.parameters()]))
    for a, b in zip(chunked.transcript.rounds, each.transcript.rounds, strict=True):
        assert (a.sampled, a.contributors, a.dropped, a.rejected, a.failed) == (
            b.sampled, b.contributors, b.dropped, b.rejected, b.failed)
        assert (a.upload_bytes, a.download_bytes, a.num_examples, a.weights, a.denominator) == (
            b.upload_bytes, b.download_bytes, b.num_examples, b.weights, b.denominator)
        for field in ("params", "aggregate", "next_params"):
            assert _equal(getattr(a, field), getattr(b, field)), field
        assert _updates_equal(a.client_updates, b.client_updates)
        assert _updates_equal(a.coalition_updates, b.coalition_updates)
    for a_row, b_row in zip(chunked.history, each.history, strict=True):
        assert (a_row.contributors, a_row.dropped, a_row.rejected, a_row.failed) == (
            b_row.contributors, b_row.dropped, b_row.rejected, b_row.failed)
        assert (a_row.upload_bytes, a_row.uploaders, a_row.channel_stats) == (
            b_row.upload_bytes, b_row.uploaders, b_row.channel_stats)
        assert str(a_row.train_loss) == str(b_row.train_loss)  # NaN equal to NaN
        assert (a_row.plaintext_aggregate_cpu_seconds is None) == (
            b_row.plaintext_aggregate_cpu_seconds is None)
    assert list(chunked.private.used_ids) == list(each.private.used_ids)
    assert all(torch.equal(ids, each.private.used_ids[k])
               for k, ids in chunked.private.used_ids.items())
    assert chunked.private.participants == each.private.participants


WEIGHTED = {"num_clients": 10, "rounds": 2, "batch_size": 32, "weighting": "weighted"}
CASES: dict[str, dict[str, Any]] = {
    # weights other than 1, several chunks (3 clients each), ragged clients
    "weights": {"fl": WEIGHTED},
    # client stages, a NaN update rejected in the middle of a chunk
    "stages-rejected": {"fl": WEIGHTED, "stage": False},
    # a stage's malformed output: its chunk travels client by client
    "malformed": {"fl": WEIGHTED, "stage": True},
    # training that diverges (NaN from the engine itself, no stage)
    "divergent": {"fl": {**WEIGHTED, "client_lr": 1e18, "local_epochs": 2}},
    # a sample of the clients each round; two colluders' own updates kept
    "coalition": {"fl": {**WEIGHTED, "num_clients": 30, "clients_per_round": 8},
                  "coalition": True},
    # a malformed update aborts the round
    "abort": {"fl": {**WEIGHTED, "on_bad_update": "abort_round"}, "stage": False},
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_the_chunked_wire_records_what_the_per_client_path_records(case: dict[str, Any]) -> None:
    assert encodes_chunks(PlaintextChannel()) and not encodes_chunks(_OneByOne())
    runs = []
    for channel in (PlaintextChannel(), _OneByOne()):
        stage = None if "stage" not in case else _Poison(malformed=case["stage"])
        coalition = Coalition(frozenset({1, 4, 7}), with_server=False) \
            if case.get("coalition") else None
        runs.append(_run(case["fl"], channel, stage=stage, coalition=coalition))
    (chunked_sim, chunked), (each_sim, each) = runs
    assert chunked.engine == each.engine == "vectorized"
    assert chunked_sim._chunked_wire and not each_sim._chunked_wire
    _assert_same_run(chunked, each)
    if "stage" in case and case["fl"].get("on_bad_update") != "abort_round":
        assert all("NaN/Inf" in r.rejected[3] for r in chunked.transcript.rounds if 3 in r.sampled)
    if case.get("stage"):
        assert all("shape (" in r.rejected[5] for r in chunked.transcript.rounds
                   if 5 in r.sampled)
    if case["fl"].get("on_bad_update") == "abort_round":
        assert all(r.failed and "client 3" in r.failed for r in chunked.transcript.rounds)
    if case.get("coalition"):
        assert any(r.coalition_updates for r in chunked.transcript.rounds)


def test_a_channel_that_drops_a_client_records_the_same_on_both_paths() -> None:
    assert encodes_chunks(_Dropping()) and not encodes_chunks(_DroppingOneByOne())
    (_, chunked), (_, each) = _run(WEIGHTED, _Dropping()), _run(WEIGHTED, _DroppingOneByOne())
    _assert_same_run(chunked, each)
    assert all(r.dropped == {r.sampled[0]: "dropped out"} for r in chunked.transcript.rounds)


class _Recording(PlaintextChannel):
    """Keeps what its aggregate received."""

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        self.received = messages
        return super().aggregate(messages)


def test_the_messages_arrive_in_chunks_only_from_the_vectorized_engine() -> None:
    for engine, arrived in (("vectorized", ChunkMessages), ("loop", dict)):
        channel = _Recording()
        _run({**WEIGHTED, "num_clients": 4, "rounds": 1, "engine": engine}, channel)
        assert type(channel.received) is arrived
