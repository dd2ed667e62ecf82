"""Tests for fedbench.defenses.secagg.encoding: clipping, stochastic rounding, headroom."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg.encoding import FloatQuantizer, required_bits
from fedbench.errors import AggregationError, ConfigError


@settings(max_examples=200, deadline=None)
@given(clients=st.integers(1, 10**6), levels=st.integers(1, 2**40))
def test_required_bits_is_the_smallest_that_holds_the_largest_sum(
    clients: int, levels: int
) -> None:
    bits = required_bits(clients, levels)
    assert clients * levels < 2**bits  # the largest possible sum fits ...
    assert clients * levels >= 2 ** (bits - 1)  # ... and one bit fewer would not hold it


@settings(max_examples=100, deadline=None)
@given(clients=st.integers(1, 5000), quant_bits=st.integers(1, 32), bits=st.integers(1, 64))
def test_headroom_check_refuses_exactly_the_configs_that_can_wrap(
    clients: int, quant_bits: int, bits: int
) -> None:
    if quant_bits > bits:
        with pytest.raises(ConfigError, match="quant_bits"):
            FloatQuantizer(quant_bits=quant_bits, bits=bits)
        return
    quantizer = FloatQuantizer(quant_bits=quant_bits, bits=bits)
    worst = clients * (2**quant_bits - 1)
    if worst <= 2**bits - 1:
        quantizer.check_headroom(clients)
    else:
        needed = math.ceil(math.log2(worst + 1))
        with pytest.raises(ConfigError, match=f"needs {needed} bits"):
            quantizer.check_headroom(clients)


def test_refusal_message_names_the_bits_needed_and_a_fix() -> None:
    quantizer = FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=30, bits=32)
    with pytest.raises(ConfigError) as err:
        quantizer.check_headroom(10)
    message = str(err.value)
    assert "bits=32 is too small" in message and "10 clients" in message
    assert "needs 34 bits" in message and "quant_bits <= 28" in message
    # The suggested quant_bits does fit.
    FloatQuantizer(quant_bits=28, bits=32).check_headroom(10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip_range": (1.0, -1.0)}, "clip_range"),
        ({"clip_range": (0.0, float("inf"))}, "clip_range"),
        ({"quant_bits": 0}, "quant_bits"),
        ({"quant_bits": 53, "bits": 64}, "quant_bits"),
        ({"bits": 0}, "bits"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FloatQuantizer(**kwargs)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=30),
    quant_bits=st.integers(2, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_encoding_is_within_one_step_of_the_clipped_value(
    values: list[float], quant_bits: int, seed: int
) -> None:
    quantizer = FloatQuantizer(clip_range=(-1.0, 2.0), quant_bits=quant_bits, bits=32)
    x = np.array(values, dtype=np.float32)
    q = quantizer.encode(x, np.random.default_rng(seed))
    assert q.dtype == np.uint32
    assert int(q.max()) <= quantizer.levels
    decoded = quantizer.decode(q, 1)
    in_range, outside = quantizer.clip(x)
    assert in_range.tolist() == np.clip(x.astype(np.float64), -1.0, 2.0).tolist()
    assert np.all(np.abs(decoded - in_range) <= quantizer.step * (1 + 1e-9))
    assert outside == int(np.sum((x < -1) | (x > 2)))


def test_stochastic_rounding_is_unbiased() -> None:
    quantizer = FloatQuantizer(clip_range=(0.0, 1.0), quant_bits=3, bits=32)
    x = np.array([0.05, 0.3, 0.5, 0.99], dtype=np.float64)
    rng = np.random.default_rng(7)
    draws = 20_000
    total = np.zeros(len(x), dtype=np.uint32)
    for _ in range(draws):
        total += quantizer.encode(x, rng)
    mean = quantizer.decode(total, draws) / draws
    # Each draw is off by less than one step; the mean of N draws is within 6 standard
    # errors (std ≤ step/2) of the value.
    tolerance = 6 * (quantizer.step / 2) / np.sqrt(draws)
    assert np.all(np.abs(mean - x) < tolerance)
    # ... while deterministic rounding to nearest would be off by up to half a step.
    nearest = np.round(x / quantizer.step) * quantizer.step
    assert np.max(np.abs(nearest - x)) > 10 * tolerance


def test_same_stream_same_encoding() -> None:
    quantizer = FloatQuantizer(quant_bits=8)
    x = np.linspace(-1, 1, 101)
    a = quantizer.encode(x, np.random.default_rng(3))
    b = quantizer.encode(x, np.random.default_rng(3))
    c = quantizer.encode(x, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=60, deadline=None)
@given(clients=st.integers(1, 20), dim=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_decoded_sum_is_within_the_reported_error_bound(clients: int, dim: int, seed: int) -> None:
    quantizer = FloatQuantizer(clip_range=(-0.5, 0.5), quant_bits=12, bits=32)
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-0.5, 0.5, dim) for _ in range(clients)]
    total = quantizer.ring.zeros(dim)
    for update in updates:
        total += quantizer.encode(update, rng)
    decoded = quantizer.decode(quantizer.ring.reduce(total), clients)
    error = np.abs(decoded - np.sum(updates, axis=0))
    assert np.all(error <= quantizer.error_bound(clients) * (1 + 1e-9))


def test_extremes_map_to_the_ends_of_the_range() -> None:
    quantizer = FloatQuantizer(clip_range=(-0.1, 0.3), quant_bits=16, bits=32)
    q = quantizer.encode(np.array([-5.0, -0.1, 0.3, 7.0]), np.random.default_rng(0))
    assert q.tolist() == [0, 0, quantizer.levels, quantizer.levels]


def test_a_sum_no_honest_inputs_reach_is_refused() -> None:
    q = FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=8, bits=16)
    top = np.array([3 * 255, 0], dtype=np.uint32)  # three clients at the top of the range
    assert q.decode(top, 3).tolist() == [3.0, -3.0]
    with pytest.raises(AggregationError, match=r"1 coordinates above 765.*largest 766"):
        q.decode(top + np.array([1, 0], dtype=np.uint32), 3)
