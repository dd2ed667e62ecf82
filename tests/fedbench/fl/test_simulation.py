"""Tests for fedbench.fl.simulation: the round pipeline's arithmetic and its failure policies."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from fedbench.config import parse_experiment
from fedbench.defense import Defense
from fedbench.errors import AggregationError
from fedbench.fl.channel import AggregateResult, Channel, EncodedUpdate, PlaintextChannel
from fedbench.fl.client import SGDTraining
from fedbench.fl.context import RoundContext
from fedbench.fl.params import get_flat, set_flat
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.simulation import Simulation
from fedbench.fl.stages import ClientUpdateStage
from fedbench.fl.transcript import Transcript
from fedbench.harness.build import build_data, model_factory
from fedbench.seeding import Streams


def _simulation(
    fl: dict[str, Any], defenses: list[Defense] = (), keep=(0,), cost_baseline: bool = False, **kw
) -> Simulation:
    cfg = parse_experiment({"model": {"name": "logreg"}, "fl": fl, **kw})
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    pipeline = Pipeline([(type(d).__name__, d) for d in defenses])
    transcript = Transcript(
        rounds=cfg.fl.rounds,
        keep_rounds=keep
    )
    return Simulation(
        model_factory=model_factory(cfg, data, streams),
        data=data,
        fl=cfg.fl,
        pipeline=pipeline,
        streams=streams,
        transcript=transcript,
        cost_baseline=cost_baseline,
    )


def _manual_deltas(
    sim: Simulation, w0: torch.Tensor, clients: list[int]
) -> dict[int, torch.Tensor]:
    """Each client's Δ_i recomputed on its own deep copy of the global model."""
    deltas = {}
    for cid in clients:
        model = copy.deepcopy(sim.model)
        ctx = RoundContext(
            round=0,
            sampled=clients,
            num_clients=sim.fl.num_clients,
            expected_clients=sim.fl.expected_clients,
            dim=sim.dim,
            streams=sim.streams,
        )
        local = SGDTraining().train(
            model, sim.data.clients[cid], sim.fl.recipe, client_id=cid, ctx=ctx
        )
        deltas[cid] = local.params - w0
    return deltas


@pytest.mark.parametrize("weighting", ["weighted", "uniform"])
def test_one_round_is_the_weighted_mean_of_client_updates(weighting: str) -> None:
    fl = {"num_clients": 4, "rounds": 1, "batch_size": 8, "weighting": weighting, "server_lr": 0.7}
    sim = _simulation(fl, partition={"name": "dirichlet", "alpha": 0.5, "min_size": 5})
    w0 = get_flat(sim.model).clone()
    deltas = _manual_deltas(sim, w0, [0, 1, 2, 3])
    sizes = {c: len(sim.data.clients[c]) for c in deltas}
    assert len(set(sizes.values())) > 1, "the test needs unequal client sizes"
    weights = sizes if weighting == "weighted" else dict.fromkeys(sizes, 1)
    expected = w0 + 0.7 * sum(weights[c] * deltas[c] for c in deltas) / sum(weights.values())
    result = sim.run()
    torch.testing.assert_close(get_flat(result.model), expected, rtol=1e-5, atol=1e-6)
    record = result.transcript.rounds[0]
    assert set(record.client_updates) == {0, 1, 2, 3}  # plaintext reveals single updates
    agg = result.transcript.aggregate_view(0)
    torch.testing.assert_close(
        agg.aggregate, sum(record.client_updates.values()), rtol=1e-5, atol=1e-6
    )


def test_fedsgd_full_batch_is_a_gradient_step() -> None:
    fl = {
        "algorithm": "fedsgd",
        "num_clients": 1,
        "rounds": 1,
        "batch_size": None,
        "client_lr": 0.3,
    }
    sim = _simulation(fl)
    data = sim.data.clients[0]
    model = sim.worker
    set_flat(model, get_flat(sim.model))
    torch.nn.functional.cross_entropy(model(data.x), data.y).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    expected = get_flat(sim.model) - 0.3 * grad
    torch.testing.assert_close(get_flat(sim.run().model), expected, rtol=1e-5, atol=1e-6)


class _Poison(ClientUpdateStage):
    """Turns the update of one client into NaN (a broken client)."""

    def __init__(self, victim: int) -> None:
        self.victim = victim

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return update * float("nan") if client_id == self.victim else update


class _PoisonDefense(Defense):
    def __init__(self, victim: int) -> None:
        self.client_update = _Poison(victim)


def test_nan_update_is_dropped_and_recorded_never_averaged() -> None:
    fl = {"num_clients": 3, "rounds": 1, "weighting": "uniform"}
    sim = _simulation(fl, [_PoisonDefense(1)])
    w0 = get_flat(sim.model).clone()
    deltas = _manual_deltas(sim, w0, [0, 1, 2])
    result = sim.run()
    record = result.transcript.rounds[0]
    assert record.contributors == (0, 2)
    assert record.rejected[1].startswith("rejected:") and "NaN/Inf" in record.rejected[1]
    expected = w0 + (deltas[0] + deltas[2]) / 2
    torch.testing.assert_close(get_flat(result.model), expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(get_flat(result.model)).all()


def test_nan_update_can_abort_the_round() -> None:
    fl = {"num_clients": 3, "rounds": 2, "on_bad_update": "abort_round"}
    sim = _simulation(fl, [_PoisonDefense(1)])
    w0 = get_flat(sim.model).clone()
    result = sim.run()
    assert all(r.failed and "client 1" in r.failed for r in result.transcript.rounds)
    torch.testing.assert_close(get_flat(result.model), w0)  # unchanged: nothing averaged in
    assert [row.failed is not None for row in result.history] == [True, True]


class _PoisonAll(ClientUpdateStage):
    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return update * float("nan")


class _PoisonEveryone(Defense):
    def __init__(self) -> None:
        self.client_update = _PoisonAll()


def test_a_round_in_which_every_update_is_rejected_is_a_failed_round() -> None:
    fl = {"num_clients": 3, "rounds": 2, "weighting": "uniform"}
    sim = _simulation(fl, [_PoisonEveryone()])
    w0 = get_flat(sim.model).clone()
    result = sim.run()
    assert all(r.failed == "every update was rejected (3 clients)" for r in result.history)
    assert all(set(r.rejected) == {0, 1, 2} for r in result.history)  # who, and why
    assert "NaN/Inf" in result.history[0].rejected[1]
    torch.testing.assert_close(get_flat(result.model), w0)


class _Huge(ClientUpdateStage):
    """Finite updates whose float32 sum is not: 3e38 + 3e38 overflows."""

    def apply(self, client_id: int, update: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return torch.full_like(update, 3e38)


class _HugeDefense(Defense):
    def __init__(self) -> None:
        self.client_update = _Huge()


def test_a_float32_overflow_of_the_sum_fails_the_round_at_the_sum() -> None:
    sim = _simulation({"num_clients": 2, "rounds": 1}, [_HugeDefense()])
    result = sim.run()
    (summary,) = result.history
    assert summary.failed is not None and "overflows" in summary.failed
    assert "clients [0, 1]" in summary.failed and "first at index 0" in summary.failed
    assert torch.isfinite(get_flat(result.model)).all()


class _FlakyChannel(PlaintextChannel):
    """Fails in round 0 (as SecAgg does below its threshold), works afterwards."""

    reveals_client_updates: ClassVar[bool] = False

    def begin_round(self, ctx: RoundContext) -> None:
        self.round = ctx.round

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        if self.round == 0:
            raise AggregationError("only 1 of 3 survivors, threshold 2")
        return super().aggregate(messages)


class _FlakyDefense(Defense):
    def __init__(self) -> None:
        self.channel = _FlakyChannel()


def test_failed_round_is_recorded_and_run_continues() -> None:
    sim = _simulation({"num_clients": 3, "rounds": 3}, [_FlakyDefense()], keep=(0, 1))
    result = sim.run()
    assert result.transcript.rounds[0].failed.startswith("AggregationError: only 1 of 3")
    assert result.transcript.rounds[1].failed is None and len(result.history) == 3
    assert result.transcript.rounds[1].client_updates is None  # channel hides single updates
    with pytest.raises(KeyError, match="round 0 failed"):
        result.transcript.aggregate_view(0)


def test_failed_round_can_stop_the_run() -> None:
    sim = _simulation({"num_clients": 3, "rounds": 3, "on_failed_round": "stop"}, [_FlakyDefense()])
    assert len(sim.run().history) == 1


def test_evaluation_every_k_rounds_and_last() -> None:
    result = _simulation({"num_clients": 2, "rounds": 5, "eval_every": 2}).run()
    assert [r.accuracy is not None for r in result.history] == [False, True, False, True, True]


def test_only_requested_rounds_keep_vectors() -> None:
    result = _simulation({"num_clients": 2, "rounds": 4}, keep=(-1,)).run()
    kept = [r.params is not None for r in result.transcript.rounds]
    assert kept == [False, False, False, True]
    assert all(r.sampled == (0, 1) for r in result.transcript.rounds)  # metadata always kept


def test_poisson_round_with_nobody_sampled_leaves_model_unchanged() -> None:
    fl = {"num_clients": 5, "rounds": 30, "client_fraction": 0.05, "sampling": "poisson"}
    sim = _simulation(fl)
    result = sim.run()
    empty = [r for r in result.history if r.sampled == 0]
    assert empty, "with q=0.05 and N=5 some rounds sample nobody"
    assert all(r.contributors == 0 and not r.failed for r in empty)


def test_same_seed_same_model_different_seed_differs() -> None:
    fl = {"num_clients": 3, "rounds": 2}
    a = get_flat(_simulation(fl).run().model)
    b = get_flat(_simulation(fl).run().model)
    c = get_flat(_simulation(fl, seed=1).run().model)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_two_channels_cannot_compose() -> None:
    from fedbench.errors import ConfigError

    with pytest.raises(ConfigError, match="at most one defense may own the channel, got a, b"):
        Pipeline([("a", _FlakyDefense()), ("b", _FlakyDefense())])


def test_channel_subclass_contract() -> None:
    class Half(Channel):
        def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
            return EncodedUpdate(client_id, update, 0)

        def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
            return AggregateResult(np.zeros(1), tuple(messages))

    assert Half().reveal(EncodedUpdate(0, np.zeros(1), 0)) is None  # hidden unless overridden


class _WaitingChannel(PlaintextChannel):
    """Waits 20 ms in every aggregation without computing: what another process holding the
    CPU does to a protocol's wall-clock time."""

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        time.sleep(0.02)
        return super().aggregate(messages)


class _WaitingDefense(Defense):
    def __init__(self) -> None:
        self.channel = _WaitingChannel()


def test_the_cost_baseline_ratio_counts_cpu_time_not_waiting() -> None:
    # One torch thread, as a cell runs by default: idle OpenMP workers spin for a while after
    # each parallel op, and that CPU time is the process's too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sim = _simulation({"num_clients": 3, "rounds": 2}, [_WaitingDefense()],
                          cost_baseline=True)
        history = sim.run().history
    finally:
        torch.set_num_threads(threads)
    for summary in history:
        assert summary.aggregate_seconds is not None and summary.aggregate_seconds >= 0.02
        assert summary.aggregate_cpu_seconds is not None
        assert summary.aggregate_cpu_seconds < summary.aggregate_seconds / 4
        assert summary.plaintext_aggregate_cpu_seconds is not None
