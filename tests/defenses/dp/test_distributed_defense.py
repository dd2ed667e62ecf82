"""distributed_dp under the real secure-aggregation protocol: the unmasked sum carries the
configured central noise, dropped clients take their noise share (and raise ε), and a FedAvg
run on digits records ε."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbench.config import parse_experiment
from fedbench.defenses.dp.accounting import GaussianNoise, epsilon
from fedbench.defenses.dp.distributed_defense import DistributedDP
from fedbench.defenses.secagg.channel import SecAggProtocol
from fedbench.errors import ConfigError
from fedbench.harness.cell import run_cell
from fedbench.harness.records import Row
from fedbench.harness.schema import MetricRecord
from fedbench.harness.suite import Cell
from fedbench.registry import DEFENSES


def one_round(defense: DistributedDP, run, ctx, updates: dict[int, np.ndarray]):
    defense.channel.begin_round(ctx)
    messages = {c: defense.channel.encode(c, u) for c, u in updates.items()}
    return defense.channel.aggregate(messages)


def test_unmasked_sum_has_the_central_noise(make_run, make_ctx) -> None:
    run = make_run(num_clients=20, expected_clients=8.0, dim=3000)
    defense = DistributedDP(noise=GaussianNoise(multiplier=1.5), clip_norm=0.5)
    defense.setup(run)
    rng = np.random.default_rng(0)
    updates = {c: (rng.standard_normal(run.dim) * 0.02).astype(np.float32) for c in range(8)}
    result = one_round(defense, run, make_ctx(run, 0, list(range(8))), updates)
    clipped = sum(u * min(1.0, 0.5 / np.linalg.norm(u.astype(np.float64)))
                  for u in updates.values())
    error = result.total - clipped
    # 3000 coordinates: the variance estimate has a relative standard error of 2.6%.
    assert error.var() == pytest.approx((1.5 * 0.5) ** 2, rel=0.1)
    assert result.contributors == tuple(range(8))
    assert defense.encoder.shares == [8]
    _, denominator = defense.server_update.apply(torch.from_numpy(result.total), 8.0,
                                                      make_ctx(run, 0, list(range(8))))
    assert denominator == 8.0  # the expected number of clients
    report = defense.privacy_spent(1e-5)
    assert report.epsilon == pytest.approx(
        epsilon(noise_multiplier=defense.encoder.plan.noise_multiplier, sample_rate=0.4, steps=1,
                delta=1e-5))
    assert report.epsilon == pytest.approx(
        epsilon(noise_multiplier=1.5, sample_rate=0.4, steps=1, delta=1e-5), rel=1e-3)


def test_dropped_noise_shares_lower_the_noise_and_raise_epsilon(make_run, make_ctx) -> None:
    run = make_run(num_clients=20, expected_clients=10.0, dim=3000)
    defense = DistributedDP(
        noise=GaussianNoise(multiplier=1.0), clip_norm=1.0,
        secagg=SecAggProtocol(dropout=0.3, dropout_stage="masked_input"),
    )
    defense.setup(run)
    zeros = {c: np.zeros(run.dim, dtype=np.float32) for c in range(10)}
    result = one_round(defense, run, make_ctx(run, 0, list(range(10))), zeros)
    assert len(result.contributors) == 7 and len(result.dropped) == 3
    assert result.total.var() == pytest.approx(0.7, rel=0.1)  # 7 of 10 shares
    report = defense.privacy_spent(1e-5)
    full = epsilon(noise_multiplier=defense.encoder.plan.noise_multiplier, sample_rate=0.5,
                   steps=1, delta=1e-5)
    assert report.epsilon == pytest.approx(
        epsilon(noise_multiplier=defense.encoder.plan.shares_noise_multiplier(7),
                sample_rate=0.5, steps=1, delta=1e-5))
    assert report.epsilon > full
    assert f"{full:.4g}" in report.note
    metrics = {m.name: m.value for m in defense.metrics()}
    assert metrics["noise_shares_min"] == 7


def test_the_server_sees_no_single_update(make_run, make_ctx) -> None:
    run = make_run(num_clients=10, expected_clients=4.0, dim=64)
    defense = DistributedDP(noise=GaussianNoise(multiplier=1.0))
    defense.setup(run)
    assert defense.channel.reveals_client_updates is False
    defense.channel.begin_round(make_ctx(run, 0, [0, 1, 2, 3]))
    message = defense.channel.encode(0, np.ones(64, dtype=np.float32))
    assert defense.channel.reveal(message) is None


def test_wrap_prone_configurations_are_refused(make_run) -> None:
    run = make_run(num_clients=100, expected_clients=10.0, dim=650)
    with pytest.raises(ConfigError, match="wrap-prone"):
        DistributedDP(bits=16, scale=1e6).setup(run)
    with pytest.raises(ConfigError, match="bits=8 cannot hold"):
        DistributedDP(bits=8).setup(run)


def test_refuses_runs_the_accountant_does_not_describe(make_run) -> None:
    with pytest.raises(ConfigError, match=r"fl\.sampling"):
        DistributedDP().setup(make_run(sampling="fixed"))
    allowed = DistributedDP(allow_insecure=True)
    allowed.setup(make_run(sampling="fixed"))
    assert "fl.sampling" in (allowed.insecure or "")


@pytest.mark.parametrize(
    ("params", "field"),
    [({"noise": {"multiplier": 1.0, "target_epsilon": 1.0}}, "not both"), ({"bits": 4}, "bits"),
     ({"clip_norm": 0.0}, "clip_norm"), ({"scale": -1.0}, "scale"),
     ({"neighbours": 3}, "neighbours")],
)
def test_bad_parameters_are_refused(params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DEFENSES.create("distributed_dp", params)


def digits_cell(defense: dict, *, clients: int, rounds: int) -> Cell:
    cfg = parse_experiment({
        "data": "digits", "model": "logreg", "split": {"population_fraction": 0.0},
        "fl": {"algorithm": "fedavg", "num_clients": clients, "rounds": rounds,
               "client_fraction": 0.3, "sampling": "poisson", "weighting": "uniform",
               "local_epochs": 3, "batch_size": 8, "client_lr": 0.5, "eval_every": rounds},
        "defenses": [defense],
    })
    return Cell("test", "digits", defense["name"], 0, cfg)


def metrics_of(rows: list[Row]) -> dict[str, MetricRecord]:
    assert rows[-1].status == "ok", rows[-1].error
    return {r.metric: r for r in rows if isinstance(r, MetricRecord)}


def test_cell_under_secagg_records_epsilon() -> None:
    defense = {"name": "distributed_dp", "noise": {"target_epsilon": 8.0}, "clip_norm": 0.3}
    metrics = metrics_of(run_cell(digits_cell(defense, clients=30, rounds=4)))
    eps = metrics["epsilon"]
    assert eps.source == "defense:distributed_dp"
    assert "SecAgg" in eps.note and eps.level == "user"
    assert eps.value > 0
    assert metrics["upload_bytes_per_param"].value >= 4  # masked uint32 words and protocol
    assert metrics["rounds_failed"].value == 0


@pytest.mark.slow
def test_distributed_matches_central_dp_fedavg_on_digits() -> None:
    # The same mechanism up to discretisation: accuracy at ε≈8 within a few points of dp_fedavg.
    target = {"noise": {"target_epsilon": 8.0}, "clip_norm": 0.3}
    central = metrics_of(run_cell(digits_cell(
        {"name": "dp_fedavg", **target}, clients=100, rounds=30)))
    distributed = metrics_of(run_cell(digits_cell(
        {"name": "distributed_dp", **target}, clients=100, rounds=30)))
    assert distributed["accuracy"].value >= central["accuracy"].value - 0.1
    # Poisson rounds with fewer shares than planned cost a little more than the target.
    assert 7.9 <= distributed["epsilon"].value <= 9.0
