"""Distributed DP maths: rotation, rounding, the exact discrete Gaussian, the modulus plan, and
the encoder's noisy sum against the configured central σ²."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedbench.defenses.dp import distributed as dd
from fedbench.errors import AggregationError, ConfigError


class FakeRing:
    """Stands in for the secagg ring's dtype only; sums below wrap like the real protocol."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.dtype = np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def ring_sum(vectors: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total += v  # numpy wraps modulo 2^32 (or 2^64), like secure aggregation's sum
    return total & total.dtype.type(2**bits - 1)


# -- rotation ------------------------------------------------------------------------------


def test_hadamard_matches_scipy_and_is_an_involution() -> None:
    x = np.random.default_rng(0).standard_normal(64)
    reference = scipy.linalg.hadamard(64) @ x / 8
    assert np.allclose(dd.hadamard(x), reference)
    assert np.allclose(dd.hadamard(dd.hadamard(x)), x)
    with pytest.raises(ValueError, match="power-of-two"):
        dd.hadamard(np.ones(6))


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_rotation_preserves_norm_and_inverts(dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(dim)
    padded = dd.padded_dim(dim)
    assert padded >= dim and padded & (padded - 1) == 0 and padded < 2 * dim + 1
    signs = dd.rotation_signs(padded, rng)
    y = dd.rotate(x, signs)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x))
    assert np.allclose(dd.unrotate(y, signs, dim), x)


def test_rotation_spreads_a_spike_evenly() -> None:
    spike = np.zeros(1000)
    spike[3] = 5.0
    y = dd.rotate(spike, dd.rotation_signs(1024, np.random.default_rng(0)))
    assert np.allclose(np.abs(y), 5.0 / 32)


# -- rounding --------------------------------------------------------------------------------


def test_stochastic_rounding_is_unbiased_and_within_one() -> None:
    rng = np.random.default_rng(0)
    x = np.array([0.25, -1.75, 3.0, 10.5])
    draws = np.stack([dd.stochastic_round(x, rng) for _ in range(40_000)])
    assert np.all(np.abs(draws - x) < 1)
    assert np.allclose(draws.mean(0), x, atol=0.015)


def test_rounded_norm_bound_holds_with_probability_at_least_one_minus_beta() -> None:
    rng = np.random.default_rng(1)
    dim, norm = 256, 20.0
    direction = rng.standard_normal(dim)
    x = direction / np.linalg.norm(direction) * norm
    bound = dd.rounded_norm_bound(norm, dim)
    assert norm < bound <= norm + math.sqrt(dim)
    norms = [np.linalg.norm(dd.stochastic_round(x, rng)) for _ in range(4000)]
    assert np.mean(np.array(norms) > bound) <= dd.ROUNDING_BETA
    rounded = dd.conditional_round(x, bound, rng)
    assert np.linalg.norm(rounded) <= bound
    assert np.all(np.abs(rounded - x) < 1)


def test_conditional_rounding_gives_up_clearly() -> None:
    with pytest.raises(RuntimeError, match="no vector within norm"):
        dd.conditional_round(np.full(10, 0.5), 0.1, np.random.default_rng(0), max_tries=5)


# -- the discrete Gaussian ------------------------------------------------------------------


@pytest.mark.parametrize(("num", "den"), [(3, 10), (1, 1), (5, 2), (0, 7)])
def test_bernoulli_exp_has_probability_exp_minus_gamma(num: int, den: int) -> None:
    rng = random.Random(0)
    hits = sum(dd.bernoulli_exp(rng, num, den) for _ in range(40_000))
    p = math.exp(-num / den)
    assert hits / 40_000 == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / 40_000) + 1e-9)


def test_discrete_gaussian_matches_its_pmf() -> None:
    variance, draws = 4, 40_000
    samples = dd.discrete_gaussian_vector(draws, variance, random.Random(1))
    support = np.arange(-12, 13)
    pmf = np.exp(-(support**2) / (2 * variance))
    pmf /= pmf.sum()
    observed = np.array([(samples == k).sum() for k in support])
    assert observed.sum() == draws  # nothing beyond ±12 (P < 1e-7)
    keep = pmf * draws >= 5
    expected = pmf[keep] * draws
    result = chisquare(observed[keep], expected * observed[keep].sum() / expected.sum())
    assert result.pvalue > 1e-4


@pytest.mark.parametrize("variance", [100, 10**6, 10**12])
def test_discrete_gaussian_variance(variance: int) -> None:
    samples = dd.discrete_gaussian_vector(30_000, variance, random.Random(variance))
    assert samples.dtype == np.int64
    assert samples.var() / variance == pytest.approx(1.0, rel=0.04)  # ~0.8% standard error
    assert abs(samples.mean()) < 5 * math.sqrt(variance / 30_000)


def discrete_gaussian_pmf(variance: float, support: np.ndarray) -> np.ndarray:
    """The exact pmf ∝ exp(−x²/(2σ²)) on ``support`` (which holds all but < 1e-9 of the mass)."""
    pmf = np.exp(-(support.astype(np.float64) ** 2) / (2 * variance))
    return pmf / pmf.sum()


@pytest.mark.parametrize("variance", [1, 4, 30, 1000])
def test_vectorized_discrete_gaussian_matches_its_pmf(variance: int) -> None:
    draws = 200_000
    samples = dd.discrete_gaussian_array(draws, variance, np.random.default_rng(variance))
    assert samples.dtype == np.int64 and samples.shape == (draws,)
    reach = int(7 * math.sqrt(variance)) + 2
    support = np.arange(-reach, reach + 1)
    observed = np.bincount(samples + reach, minlength=support.size)
    assert observed.size == support.size  # nothing beyond ±7σ
    expected = discrete_gaussian_pmf(variance, support) * draws
    # Pool the tails into their neighbours so every cell expects at least 5 draws.
    keep = expected >= 5
    pooled_obs = np.append(observed[keep], observed[~keep].sum())
    pooled_exp = np.append(expected[keep], expected[~keep].sum())
    assert chisquare(pooled_obs, pooled_exp * pooled_obs.sum() / pooled_exp.sum()).pvalue > 1e-4


def test_chi_square_tells_a_wrong_sampler_apart() -> None:
    # The rounded continuous Gaussian of the same variance is close but not the discrete
    # Gaussian at σ² = 1; the goodness-of-fit test above must reject it.
    rounded = np.rint(np.random.default_rng(0).normal(0, 1.0, 200_000)).astype(np.int64)
    support = np.arange(-8, 9)
    observed = np.bincount(rounded + 8, minlength=support.size)
    expected = discrete_gaussian_pmf(1, support) * rounded.size
    keep = expected >= 5
    assert chisquare(observed[keep], expected[keep] * observed[keep].sum()
                     / expected[keep].sum()).pvalue < 1e-6


@pytest.mark.parametrize("variance", [100, 10**6, 10**12])
def test_vectorized_discrete_gaussian_variance(variance: int) -> None:
    samples = dd.discrete_gaussian_array(300_000, variance, np.random.default_rng(1))
    # Var of the discrete Gaussian is σ² up to e^(−2π²σ²) terms; standard error ≈ 0.26%.
    assert samples.var() / variance == pytest.approx(1.0, rel=0.013)
    assert abs(samples.mean()) < 5 * math.sqrt(variance / 300_000)


def test_vectorized_discrete_gaussian_is_reproducible_from_its_seed() -> None:
    first = dd.discrete_gaussian_array(1000, 50, np.random.default_rng(7))
    assert np.array_equal(first, dd.discrete_gaussian_array(1000, 50, np.random.default_rng(7)))
    assert not np.array_equal(first, dd.discrete_gaussian_array(1000, 50,
                                                                np.random.default_rng(8)))
    with pytest.raises(ValueError, match="positive integer"):
        dd.discrete_gaussian_array(3, 0, np.random.default_rng(0))


def test_discrete_laplace_scale() -> None:
    samples = np.array([dd.discrete_laplace(random.Random(0), 3) for _ in range(1)])
    assert samples.dtype.kind == "i"
    rng = random.Random(2)
    draws = np.array([dd.discrete_laplace(rng, 3) for _ in range(30_000)])
    r = math.exp(-1 / 3)  # P(|x| = k) ∝ r^k: E|x| = 2r / (1 − r²)
    assert np.abs(draws).mean() == pytest.approx(2 * r / (1 - r * r), rel=0.03)


def test_sum_gap_is_negligible_only_for_wide_noise() -> None:
    assert dd.sum_gap(4.0, 1000) < 1e-12
    assert dd.sum_gap(0.05, 10) > 1


# -- the plan ----------------------------------------------------------------------------------


def test_plan_meets_the_noise_multiplier_and_fits_the_modulus() -> None:
    plan = dd.plan(dim=650, clip_norm=0.5, noise_multiplier=1.2, expected_clients=10.0,
                   max_clients=40, bits=32)
    assert plan.padded == 1024
    assert plan.headroom < 2**31
    assert 1.2 <= plan.noise_multiplier < 1.2 * (1 + 1e-6)
    assert plan.shares_noise_multiplier(10) == pytest.approx(plan.noise_multiplier)
    assert plan.shares_noise_multiplier(7) == pytest.approx(plan.noise_multiplier * math.sqrt(0.7))
    assert plan.central_std == pytest.approx(1.2 * 0.5, rel=1e-4)
    assert plan.sensitivity >= plan.scale * plan.clip_norm


def test_wrap_prone_scale_is_refused() -> None:
    kwargs = {"dim": 650, "clip_norm": 1.0, "noise_multiplier": 1.0, "expected_clients": 10.0,
              "max_clients": 40}
    ok = dd.plan(bits=32, **kwargs)
    with pytest.raises(ConfigError, match=r"wrap-prone.*bits >= 3[3-9]"):
        dd.plan(bits=32, scale=ok.scale * 4, **kwargs)
    with pytest.raises(ConfigError, match="bits=6 cannot hold"):
        dd.plan(bits=6, **kwargs)


def test_coarse_noise_is_refused() -> None:
    with pytest.raises(ConfigError, match="too coarse"):
        dd.plan(dim=4, clip_norm=1.0, noise_multiplier=0.5, expected_clients=10.0, max_clients=10,
                bits=32, scale=0.5)


def encode_round(plan: dd.Plan, updates: list[np.ndarray], seed: int, secure: bool = False):
    ring = FakeRing(plan.bits)
    encoder = dd.DistributedEncoder(ring, secure=secure)
    encoder.configure(plan)
    encoder.begin_round(dd.rotation_signs(plan.padded, np.random.default_rng(seed)))
    vectors = [encoder.encode(u, np.random.default_rng([seed, i])) for i, u in enumerate(updates)]
    assert all(v.dtype == ring.dtype for v in vectors)
    return encoder, ring_sum(vectors, plan.bits)


@pytest.mark.parametrize("secure", [False, True])
def test_noisy_sum_variance_matches_the_central_sigma(secure: bool) -> None:
    n, dim, z, clip = 10, 4096, 1.3, 0.5
    plan = dd.plan(dim=dim, clip_norm=clip, noise_multiplier=z, expected_clients=n,
                   max_clients=2 * n, bits=32)
    rng = np.random.default_rng(5)
    updates = [rng.standard_normal(dim) * 0.01 for _ in range(n)]  # norms ≈ 0.64: clipped
    truth = sum(dd.clip_l2(u, clip) for u in updates)
    encoder, total = encode_round(plan, updates, seed=11, secure=secure)
    error = encoder.decode(total, n) - truth
    assert encoder.shares == [n]
    # 4096 coordinates: the variance estimate has a relative standard error of 2.2%.
    assert error.var() == pytest.approx((z * clip) ** 2, rel=0.09)
    assert abs(error.mean()) < 5 * z * clip / math.sqrt(dim)


def test_fewer_noise_shares_mean_less_noise() -> None:
    n, dim = 10, 4096
    plan = dd.plan(dim=dim, clip_norm=1.0, noise_multiplier=1.0, expected_clients=n,
                   max_clients=2 * n, bits=32)
    updates = [np.zeros(dim)] * 6  # four of the ten dropped
    encoder, total = encode_round(plan, updates, seed=3)
    error = encoder.decode(total, 6)
    assert error.var() == pytest.approx(0.6, rel=0.09)
    assert plan.shares_noise_multiplier(6) < plan.noise_multiplier


def test_aligned_updates_of_max_clients_do_not_wrap() -> None:
    # The worst case for the modulus: every client sends the same full-norm update.
    clients, dim = 20, 256
    plan = dd.plan(dim=dim, clip_norm=1.0, noise_multiplier=0.5, expected_clients=5.0,
                   max_clients=clients, bits=24)
    x = np.zeros(dim)
    x[:4] = 0.5  # norm 1
    encoder, total = encode_round(plan, [x] * clients, seed=0)
    decoded = encoder.decode(total, clients)
    noise_std = math.sqrt(clients * plan.local_variance) / plan.scale
    assert np.max(np.abs(decoded - clients * x)) < 6 * noise_std
    # Past the checked scale the same sum wraps, which is why such plans are refused.
    wrapped = dataclasses.replace(plan, scale=plan.scale * 64,
                                  sensitivity=plan.sensitivity * 64)
    encoder, total = encode_round(wrapped, [x] * clients, seed=0)
    assert np.max(np.abs(encoder.decode(total, clients) - clients * x)) > 1.0


def test_encoder_refuses_misuse() -> None:
    plan = dd.plan(dim=8, clip_norm=1.0, noise_multiplier=1.0, expected_clients=3.0,
                   max_clients=5, bits=32)
    encoder = dd.DistributedEncoder(FakeRing(32))
    with pytest.raises(RuntimeError, match="before setup"):
        encoder.check_headroom(3)
    with pytest.raises(ConfigError, match="the ring has 32"):
        encoder.configure(dataclasses.replace(plan, bits=16))
    encoder.configure(plan)
    with pytest.raises(RuntimeError, match="begin_round"):
        encoder.encode(np.zeros(8), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="6 clients exceed"):
        encoder.check_headroom(6)
    with pytest.raises(ValueError, match="rotation"):
        encoder.begin_round(np.ones(4))
    assert encoder.error_bound(3) is None


def test_a_sum_beyond_the_headroom_is_refused() -> None:
    kwargs = {"dim": 64, "clip_norm": 1.0, "noise_multiplier": 1.0, "expected_clients": 3.0,
              "max_clients": 5, "bits": 32}
    plan = dd.plan(scale=dd.plan(**kwargs).scale / 1000, **kwargs)  # headroom ≈ 2^31 / 1000
    encoder, total = encode_round(plan, [np.zeros(64)] * 3, seed=0)
    assert encoder.decode(total, 3).shape == (64,)
    altered = total.copy()
    # What flipping the top bit of a masked input does to the sum: it lands near ±2^31.
    altered[5] = (int(altered[5]) + 2**31) % 2**32
    with pytest.raises(AggregationError, match=r"1 coordinates beyond"):
        encoder.decode(altered, 3)


def test_to_signed() -> None:
    assert dd.to_signed(np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint32), 32).tolist() == [
        0, 1, -(2**31), -1]
    assert dd.to_signed(np.array([255, 128], dtype=np.uint32), 8).tolist() == [-1, -128]
