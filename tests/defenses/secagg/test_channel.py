"""Tests for fedbench.defenses.secagg.channel: configuration, rounds, and FedAvg integration."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedbench.config import parse_experiment
from fedbench.defenses.secagg.channel import SecAgg, SecAggChannel, SecAggProtocol
from fedbench.defenses.secagg.encoding import FloatQuantizer
from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import AggregationError, ConfigError
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.fl.pipeline import Pipeline
from fedbench.fl.recipe import TrainingRecipe
from fedbench.fl.simulation import Simulation, SimulationResult
from fedbench.fl.threat import ThreatModel
from fedbench.fl.transcript import Transcript
from fedbench.fl.views import ViewKind
from fedbench.harness.build import build_data, model_factory
from fedbench.harness.cell import run_cell
from fedbench.harness.suite import Cell
from fedbench.registry import DEFENSES
from fedbench.seeding import Streams


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine's cores are shared; these tests gain nothing from intra-op threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_run(*, num_clients: int = 10, expected: float = 10, sampling: str = "fixed",
             dim: int = 30, seed: int = 0) -> RunInfo:
    return RunInfo(
        num_clients=num_clients,
        rounds=3,
        expected_clients=expected,
        sampling=sampling,
        weighting="uniform",
        recipe=TrainingRecipe("fedavg", 8, 1, None, 0.1),
        client_sizes=(10,) * num_clients,
        dim=dim,
        model_factory=lambda: nn.Linear(dim, 1, bias=False),
        streams=Streams(seed),
    )


def make_ctx(run: RunInfo, round_index: int, sampled: list[int]) -> RoundContext:
    return RoundContext(
        round=round_index, sampled=sampled, num_clients=run.num_clients,
        expected_clients=run.expected_clients, dim=run.dim, streams=run.streams,
    )


def run_round(
    channel: SecAggChannel, run: RunInfo, updates: dict[int, np.ndarray], round_index: int = 0
):
    channel.begin_round(make_ctx(run, round_index, sorted(updates)))
    messages = {c: channel.encode(c, u) for c, u in updates.items()}
    return messages, channel.aggregate(messages)


def random_updates(clients: list[int], dim: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-0.9, 0.9, dim).astype(np.float32) for c in clients}


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"neighbours": "half"}, "neighbours"),
        ({"neighbours": 5}, "neighbours.*multiple of 2"),
        ({"neighbours": 0}, "neighbours.*greater than or equal to 2"),
        ({"threshold": 0.5}, r"threshold.*greater than 0\.5"),
        ({"threshold": 1.5}, "threshold"),
        ({"bits": 0}, "bits"),
        ({"quant_bits": 40, "bits": 32}, "quant_bits"),
        ({"clip_range": [0.5, -0.5]}, "clip_range"),
        ({"dropout": 1.0}, "'dropout' = 1.0: Input should be less than 1"),
        ({"dropout_stage": "later"}, "dropout_stage"),
        ({"tolerated_dropout": 0.7}, "tolerated_dropout"),
        ({"tolerated_corruption": -0.1}, "tolerated_corruption"),
        ({"treshold": 0.7}, "unknown parameter 'treshold'"),
    ],
)
def test_invalid_configuration_names_the_field(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DEFENSES.create("secagg", params)


def test_registered_defaults() -> None:
    defense = DEFENSES.create("secagg", {})
    assert isinstance(defense, SecAgg)
    channel = defense.channel
    assert channel.reveals_client_updates is False
    assert channel.encoder.ring.bits == 32 and channel.protocol.neighbours == "full"


def test_setup_refuses_a_wrap_prone_config_with_the_bits_needed() -> None:
    wide = SecAgg(bits=32, quant_bits=30)
    with pytest.raises(ConfigError, match="needs 34 bits"):
        wide.setup(make_run(num_clients=10, expected=10))
    # With Poisson sampling every client may be sampled: the check uses N, not q·N.
    poisson = SecAgg(bits=32, quant_bits=24)
    assert poisson.check(make_run(num_clients=200, expected=20, sampling="fixed")) == []
    with pytest.raises(ConfigError, match=r"1000 clients.*needs 34 bits"):
        poisson.setup(make_run(num_clients=1000, expected=20, sampling="poisson"))


def test_setup_refuses_a_threshold_the_tolerated_dropouts_break() -> None:
    with pytest.raises(ConfigError, match=r"needs 9; losing .* leaves 8"):
        SecAgg(threshold=1.0, tolerated_dropout=0.1).setup(make_run())
    SecAgg(threshold=1.0, tolerated_dropout=0.0).setup(make_run())


def test_setup_refuses_rounds_of_two() -> None:
    with pytest.raises(ConfigError, match="at least 3 clients"):
        SecAgg().setup(make_run(num_clients=2, expected=2))


def test_check_lists_every_problem_at_once() -> None:
    problems = SecAgg(bits=16, quant_bits=16, threshold=1.0).check(make_run())
    assert len(problems) == 2
    assert "bits" in problems[0] and "threshold or tolerated_dropout" in problems[1]


def test_plans() -> None:
    channel = SecAgg(neighbours="auto").channel
    assert channel.plan(10).degree is None or channel.plan(10).degree < 9
    big = channel.plan(200)
    assert big.degree is not None and big.degree < 60 and big.threshold > big.degree // 2
    explicit = SecAgg(neighbours=4, threshold=0.75).channel.plan(20)
    assert (explicit.degree, explicit.threshold) == (4, 3)
    full = SecAgg(threshold=0.9).channel.plan(11)
    assert (full.degree, full.threshold) == (None, 9)


# -- rounds through the channel ----------------------------------------------------------------


@pytest.mark.parametrize("neighbours", ["full", "auto", 8])
def test_round_decodes_the_sum_of_contributors(neighbours: str | int) -> None:
    run = make_run(num_clients=40, expected=12)
    channel = SecAgg(neighbours=neighbours, dropout=0.25, dropout_stage="masked_input").channel
    channel.setup(run)
    updates = random_updates(list(range(0, 36, 3)), run.dim)
    messages, result = run_round(channel, run, updates)
    dropped = sorted(c for c, m in messages.items() if m.payload is None)
    assert len(dropped) == 3  # round(0.25 × 12)
    assert result.contributors == tuple(c for c in sorted(updates) if c not in dropped)
    assert sorted(result.dropped) == dropped
    assert all(reason == "dropped at masked_input" for reason in result.dropped.values())
    exact = sum(updates[c].astype(np.float64) for c in result.contributors)
    bound = channel.encoder.error_bound(len(result.contributors))
    assert np.max(np.abs(result.total - exact)) <= bound
    assert result.stats["decode_error_max"] <= bound
    # Every sampled client sent its keys; the dropouts sent no masked vector.
    assert set(result.upload_bytes) == set(updates)
    # (Every client has the same degree, so the key traffic is the same for all.)
    most_by_dropout = max(result.upload_bytes[c] for c in dropped)
    for c in result.contributors:
        assert result.upload_bytes[c] >= most_by_dropout + 4 + 4 * run.dim
        assert channel.reveal(messages[c]) is None


def test_unmasking_dropouts_still_count() -> None:
    run = make_run()
    channel = SecAgg(dropout=0.2, dropout_stage="unmasking").channel
    channel.setup(run)
    updates = random_updates(list(range(10)), run.dim, seed=1)
    _, result = run_round(channel, run, updates)
    assert result.contributors == tuple(range(10))
    assert len(result.dropped) == 2
    assert all("input included in the sum" in r for r in result.dropped.values())
    exact = sum(u.astype(np.float64) for u in updates.values())
    assert np.max(np.abs(result.total - exact)) <= channel.encoder.error_bound(10)


def test_clipped_values_are_counted_and_the_sum_is_exact_for_the_clipped_updates() -> None:
    run = make_run()
    channel = SecAgg(clip_range=(-0.5, 0.5)).channel
    channel.setup(run)
    updates = random_updates(list(range(10)), run.dim, seed=3)  # uniform in ±0.9
    outside = sum(int(np.count_nonzero(np.abs(u) > 0.5)) for u in updates.values())
    assert outside > 0
    _, result = run_round(channel, run, updates)
    assert result.stats["clipped_values"] == outside
    assert result.stats["clipped_fraction"] == outside / (10 * run.dim)
    clipped = sum(np.clip(u.astype(np.float64), -0.5, 0.5) for u in updates.values())
    assert np.max(np.abs(result.total - clipped)) <= channel.encoder.error_bound(10)


class _OffByTwoSteps(FloatQuantizer):
    """A broken encoder: coordinate 3 of every encoding is two levels too high."""

    def encode(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        encoded = super().encode(update, rng)
        encoded[3] += 2
        return encoded


class _DecodesOneStepHigh(FloatQuantizer):
    """A broken decoder of sums (not of single encodings): coordinate 0 one step high."""

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        decoded = super().decode(total, clients)
        if clients > 1:
            decoded[0] += 1.5 * clients * self.step
        return decoded


def test_an_encoding_beyond_its_rounding_bound_fails_naming_round_and_client() -> None:
    run = make_run()
    channel = SecAggChannel(encoder=_OffByTwoSteps(quant_bits=8, bits=16))
    channel.setup(run)
    updates = random_updates(list(range(10)), run.dim, seed=4)
    channel.begin_round(make_ctx(run, 2, sorted(updates)))
    with pytest.raises(AggregationError, match=r"round 2: secagg: client 0's encoding is off by"
                       r".* at coordinate 3, above the quantization bound"):
        channel.encode(0, updates[0])


def test_a_decoded_sum_beyond_the_quantization_bound_fails_naming_the_round() -> None:
    run = make_run()
    channel = SecAggChannel(encoder=_DecodesOneStepHigh(quant_bits=8, bits=16))
    channel.setup(run)
    updates = random_updates(list(range(10)), run.dim, seed=5)
    with pytest.raises(AggregationError, match=r"round 1: secagg: the decoded sum of 10 clients "
                       r"is off by .* at coordinate 0 .* above the quantization bound"):
        run_round(channel, run, updates, round_index=1)


def test_a_masked_input_altered_on_its_way_is_left_out_and_its_sender_named() -> None:
    run = make_run()
    channel = SecAgg().channel
    channel.setup(run)
    updates = random_updates(list(range(10)), run.dim, seed=2)
    channel.begin_round(make_ctx(run, 0, sorted(updates)))
    messages = {c: channel.encode(c, u) for c, u in updates.items()}
    # One flipped byte would move the sum by up to 2^32 quantization steps (~1.3e5 here).
    payload = messages[4].payload.payload.copy()
    payload.view(np.uint8)[7] ^= 0x40
    messages[4] = dataclasses.replace(
        messages[4], payload=dataclasses.replace(messages[4].payload, payload=payload)
    )
    result = channel.aggregate(messages)
    assert result.dropped == {4: "masked input failed authentication (altered on its way)"}
    assert result.contributors == tuple(c for c in range(10) if c != 4)
    exact = sum(updates[c].astype(np.float64) for c in result.contributors)
    assert np.max(np.abs(result.total - exact)) <= channel.encoder.error_bound(9)


def test_dropout_draws_are_reproducible_per_round() -> None:
    def dropped(seed: int, round_index: int) -> dict[int, str]:
        run = make_run(seed=seed)
        channel = SecAgg(dropout=0.3, dropout_stage="random", threshold=0.6,
                         tolerated_dropout=0.3).channel
        channel.setup(run)
        _, result = run_round(channel, run, random_updates(list(range(10)), run.dim),
                              round_index)
        return result.dropped

    assert dropped(0, 0) == dropped(0, 0)
    assert dropped(0, 0) != dropped(0, 1) or dropped(0, 0) != dropped(1, 0)


def test_too_many_dropouts_abort_the_round() -> None:
    run = make_run()
    channel = SecAgg(threshold=1.0, tolerated_dropout=0.0, dropout=0.1).channel
    channel.setup(run)
    with pytest.raises(AggregationError, match="fewer than the threshold 9"):
        run_round(channel, run, random_updates(list(range(10)), run.dim))
    # The next round without trouble works again.
    clean = SecAgg(threshold=1.0, tolerated_dropout=0.0).channel
    clean.setup(run)
    run_round(clean, run, random_updates(list(range(10)), run.dim), round_index=1)


def test_a_round_with_too_few_sampled_clients_fails_in_aggregate() -> None:
    run = make_run(num_clients=50, expected=5, sampling="poisson")
    channel = SecAgg().channel
    channel.setup(run)
    channel.begin_round(make_ctx(run, 0, [3, 8]))  # Poisson drew only two
    messages = {c: channel.encode(c, np.zeros(run.dim, dtype=np.float32)) for c in (3, 8)}
    assert all(m.payload is None for m in messages.values())
    with pytest.raises(AggregationError, match="at least 3 clients, 2 were sampled"):
        channel.aggregate(messages)


class CenteredIntegers:
    """A minimal encoder of the kind distributed DP plugs in: x ↦ round(100·x) as a two's
    complement element of Z/2^b, decoded to the centred representative."""

    def __init__(self, bits: int) -> None:
        self.ring = Ring(bits)

    def check_headroom(self, clients: int) -> None:
        if clients * 2 * 100 >= self.ring.modulus:
            raise ConfigError("too small")

    def clip(self, update: np.ndarray) -> tuple[np.ndarray, int]:
        values = np.asarray(update, dtype=np.float64)
        return np.clip(values, -1, 1), int(np.count_nonzero(np.abs(values) > 1))

    def encode(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        signed = np.round(np.clip(update, -1, 1) * 100).astype(np.int64)
        return (signed % self.ring.modulus).astype(self.ring.dtype)

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        values = total.astype(np.int64)
        values[values >= self.ring.modulus // 2] -= self.ring.modulus
        return values / 100.0

    def error_bound(self, clients: int) -> float | None:
        return None


def test_channel_accepts_another_integer_encoder() -> None:
    run = make_run()
    channel = SecAggChannel(encoder=CenteredIntegers(bits=12),
                            protocol=SecAggProtocol(neighbours=4))
    channel.setup(run)
    updates = {c: np.full(run.dim, -0.07 * (c + 1), dtype=np.float32) for c in range(10)}
    _, result = run_round(channel, run, updates)
    np.testing.assert_allclose(result.total, np.full(run.dim, -0.07 * 55), atol=1e-9)
    assert "quantization_error_bound" not in result.stats


# -- FedAvg on digits ------------------------------------------------------------------------


def simulate(defenses: list[tuple[str, Any]], rounds: int = 5) -> SimulationResult:
    cfg = parse_experiment({
        "data": "digits",
        "model": {"name": "mlp", "hidden": [64]},
        "fl": {"algorithm": "fedavg", "num_clients": 10, "rounds": rounds, "local_epochs": 2,
               "batch_size": 16, "client_lr": 0.5},
    })
    streams = Streams(cfg.seed)
    data = build_data(cfg, streams)
    pipeline = Pipeline(defenses)
    transcript = Transcript(rounds=rounds, keep_rounds=range(rounds))
    return Simulation(
        model_factory=model_factory(cfg, data, streams), data=data, fl=cfg.fl,
        pipeline=pipeline, streams=streams, transcript=transcript,
    ).run()


def test_fedavg_with_secagg_matches_plaintext_within_the_quantization_error() -> None:
    plain = simulate([])
    defense = SecAgg(clip_range=(-4.0, 4.0), quant_bits=20)
    secure = simulate([("secagg", defense)])
    # Round 0 starts from the same model, so the aggregates differ only by quantization (no
    # update leaves the clip range) and float32 storage of the aggregate.
    first_plain = plain.transcript.aggregate_view(0).aggregate.double()
    first_secure = secure.transcript.aggregate_view(0).aggregate.double()
    bound = defense.channel.encoder.error_bound(10)
    float32 = float(first_plain.abs().max()) * 2**-23
    assert float((first_plain - first_secure).abs().max()) <= bound + float32
    # Later rounds drift by the accumulated quantization only: same accuracy.
    assert abs(secure.final_accuracy - plain.final_accuracy) <= 0.02
    assert secure.final_accuracy > 0.8
    # The server never saw a single client's update.
    transcript = secure.transcript
    assert ViewKind.CLIENT_UPDATE not in ThreatModel(channel=defense.channel).open_views()
    assert all(r.client_updates is None for r in transcript.rounds)
    with pytest.raises(PermissionError):
        transcript.client_update_view(0)
    names = {m.name: m.value for m in defense.metrics()}
    assert 0 < names["secagg_decode_error_max"] <= names["secagg_quantization_error_bound"]


def test_failed_rounds_are_recorded_and_leave_the_model_unchanged() -> None:
    defense = SecAgg(threshold=1.0, tolerated_dropout=0.0, dropout=0.25)
    result = simulate([("secagg", defense)], rounds=2)
    assert all((row.failed or "").startswith("AggregationError") for row in result.history)
    w0, w2 = result.transcript.rounds[0].params, result.transcript.final_params
    assert w0 is not None and w2 is not None and torch.equal(w0, w2)


def test_cell_with_secagg_reports_metrics_and_no_client_view() -> None:
    cfg = parse_experiment({
        "name": "digits-secagg",
        "data": "digits",
        "model": {"name": "logreg"},
        "fl": {"num_clients": 6, "rounds": 2, "batch_size": 32},
        "defenses": [{"name": "secagg", "neighbours": "auto", "dropout": 0.2,
                      "dropout_stage": "random"}],
    })
    rows = run_cell(Cell(suite="t", experiment="digits", defense="secagg", seed=0, config=cfg))
    assert rows[-1].status == "ok", rows[-1].error
    metrics = {(r.source, r.metric): r.value for r in rows[:-1]}
    assert metrics[("fl", "rounds_failed")] == 0
    assert metrics[("fl", "clients_dropped")] == 2  # round(0.2 × 6) per round
    assert metrics[("fl", "upload_bytes_per_param")] > 4  # masked words plus key traffic
    assert ("defense:secagg", "secagg_decode_error_max") in metrics
