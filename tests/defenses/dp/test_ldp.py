"""Local DP: each update is clipped and noised on the client, with per-round and composed ε."""

from __future__ import annotations

import math

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from fedbench.defenses.dp.accounting import GaussianNoise
from fedbench.defenses.dp.ldp import LocalDP, clip_l1
from fedbench.errors import ConfigError
from fedbench.registry import DEFENSES


def test_gaussian_noise_and_clipping(make_run, make_ctx) -> None:
    run = make_run(dim=100_000)
    defense = LocalDP(noise=GaussianNoise(multiplier=2.0), clip_norm=0.5)
    defense.setup(run)
    update = torch.full((run.dim,), 1.0)  # norm ≈ 316, clipped to 0.5
    out = defense.client_update.apply(3, update, make_ctx(run, 0, [3]))
    noise = out - update * (0.5 / float(update.norm()))
    assert float(noise.std()) == pytest.approx(2.0 * 0.5, rel=0.01)
    assert abs(float(noise.mean())) < 0.01
    assert out.dtype == update.dtype and out.shape == update.shape


def test_laplace_noise_and_l1_clipping(make_run, make_ctx) -> None:
    run = make_run(dim=100_000)
    defense = LocalDP(mechanism="laplace", noise=GaussianNoise(multiplier=3.0), clip_norm=2.0)
    defense.setup(run)
    update = torch.zeros(run.dim)
    out = defense.client_update.apply(0, update, make_ctx(run, 0, [0]))
    assert float(out.std()) == pytest.approx(math.sqrt(2) * 3.0 * 2.0, rel=0.01)
    big = torch.tensor([3.0, -1.0, 0.0])
    assert float(clip_l1(big, 2.0).abs().sum()) == pytest.approx(2.0)
    assert torch.equal(clip_l1(big, 10.0), big)


def test_composed_guarantee_is_the_most_frequent_client(make_run, make_ctx) -> None:
    run = make_run(dim=10)
    defense = LocalDP(noise=GaussianNoise(multiplier=4.0))
    defense.setup(run)
    for t, sampled in enumerate([[0, 1], [0], [0, 2]]):
        ctx = make_ctx(run, t, sampled)
        for cid in sampled:
            defense.client_update.apply(cid, torch.ones(10), ctx)
    report = defense.privacy_spent(1e-5)
    # Client 0 sent 3 updates; each is a Gaussian mechanism with noise multiplier z/2 = 2
    # (two updates in the clip ball differ by up to 2C), not amplified by sampling.
    google = RdpAccountant()
    google.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 3))
    assert report.epsilon == pytest.approx(google.get_epsilon(1e-5), rel=0.01)
    per_round = defense.epsilon_per_round(1e-5)
    assert per_round < report.epsilon < 3 * per_round
    metrics = {m.name: m.value for m in defense.metrics()}
    assert metrics["max_releases_per_client"] == 3
    assert metrics["epsilon_per_round"] == pytest.approx(per_round)


def test_laplace_composes_linearly(make_run, make_ctx) -> None:
    run = make_run(dim=5)
    defense = LocalDP(mechanism="laplace", noise=GaussianNoise(multiplier=4.0))
    defense.setup(run)
    for t in range(5):
        defense.client_update.apply(7, torch.ones(5), make_ctx(run, t, [7]))
    report = defense.privacy_spent(1e-5)
    assert defense.epsilon_per_round(1e-5) == 0.5  # ε = Δ1/b = 2C/(zC)
    assert report.epsilon == pytest.approx(2.5)
    assert report.delta == 0.0


def test_no_release_no_epsilon(make_run) -> None:
    defense = LocalDP()
    defense.setup(make_run())
    assert defense.privacy_spent(1e-5).epsilon == 0.0


@pytest.mark.parametrize(
    ("params", "field"),
    [({"noise": {"multiplier": 0.0}}, r"noise\.multiplier must be positive"),
     ({"clip_norm": -1.0}, "clip_norm"), ({"mechanism": "uniform"}, "mechanism")],
)
def test_bad_parameters_are_refused(params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DEFENSES.create("ldp", params)
