"""Tests for fedbench.fl.sampling."""

from __future__ import annotations

import numpy as np
import pytest

from fedbench.fl.sampling import ClientSampler
from fedbench.seeding import Streams


def test_fixed_sampling_draws_exactly_m_distinct_clients() -> None:
    sampler = ClientSampler(
        num_clients=20, expected_clients=5, sampling="fixed", streams=Streams(0)
    )
    rounds = [sampler.sample(t) for t in range(50)]
    assert all(len(r) == 5 == len(set(r)) and r == sorted(r) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 40  # rounds differ


def test_poisson_sampling_rate() -> None:
    sampler = ClientSampler(
        num_clients=100, expected_clients=10, sampling="poisson", streams=Streams(0)
    )
    sizes = np.array([len(sampler.sample(t)) for t in range(400)])
    assert abs(sizes.mean() - 10) < 0.5  # binomial(100, 0.1): sd of the mean ≈ 0.15
    assert sizes.std() > 1.5  # sizes vary, as Poisson sampling must


def test_sampling_is_reproducible_per_round() -> None:
    a = ClientSampler(num_clients=30, expected_clients=3, sampling="fixed", streams=Streams(4))
    b = ClientSampler(num_clients=30, expected_clients=3, sampling="fixed", streams=Streams(4))
    assert a.sample(7) == b.sample(7)


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="expected_clients"):
        ClientSampler(num_clients=3, expected_clients=5, sampling="fixed", streams=Streams(0))
    with pytest.raises(ValueError, match="sampling"):
        ClientSampler(num_clients=3, expected_clients=1, sampling="random", streams=Streams(0))
