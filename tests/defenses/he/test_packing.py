"""Tests for fedbench.defenses.he.packing: exact packed sums, padding derivation, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.he import packing
from fedbench.errors import ConfigError


def _client_values(draw: st.DrawFn, dim: int, clip: float) -> np.ndarray:
    """Values that hit the clip boundary, go beyond it, and fill the range in between."""
    special = st.sampled_from([clip, -clip, 2 * clip, -3 * clip, 0.0, clip * (1 - 1e-12)])
    inside = st.floats(-clip, clip, allow_nan=False)
    return np.array(draw(st.lists(st.one_of(special, inside), min_size=dim, max_size=dim)))


@st.composite
def _round(draw: st.DrawFn) -> tuple[int, int, int, float, list[np.ndarray], int]:
    bits = draw(st.integers(2, 32))
    clients = draw(st.integers(1, 40))
    dim = draw(st.integers(1, 120))
    clip = draw(st.sampled_from([1e-3, 0.5, 1.0, 37.0]))
    plaintext_bits = draw(st.integers(packing.slot_bits(bits, clients) + packing.GUARD_BITS, 3000))
    summed = draw(st.integers(1, clients))
    vectors = [_client_values(draw, dim, clip) for _ in range(summed)]
    seed = draw(st.integers(0, 2**32 - 1))
    return bits, clients, plaintext_bits, clip, vectors, seed


@settings(max_examples=100, deadline=None)
@given(_round())
def test_packed_sum_is_the_exact_integer_sum(case) -> None:
    bits, clients, plaintext_bits, clip, vectors, seed = case
    rng = np.random.default_rng(seed)
    layout = packing.slot_layout(bits=bits, clients=clients, plaintext_bits=plaintext_bits)
    quantized = [packing.quantize(v, clip=clip, bits=bits, rng=rng)[0] for v in vectors]
    packed = [packing.pack(q, layout) for q in quantized]
    # What the homomorphic sum computes: plain integer addition of the packed plaintexts.
    totals = [sum(column, mpz(0)) for column in zip(*packed, strict=True)]
    assert all(t.bit_length() <= plaintext_bits - packing.GUARD_BITS for t in totals)
    expected = np.sum(np.stack(quantized), axis=0, dtype=np.int64)
    dim = vectors[0].size
    result = packing.unpack(totals, layout, dim=dim, clients=len(vectors))
    np.testing.assert_array_equal(result, expected)
    # One value per plaintext gives the same sums.
    single = packing.slot_layout(
        bits=bits, clients=clients, plaintext_bits=plaintext_bits, per_value=True
    )
    per_value = [packing.pack(q, single) for q in quantized]
    totals = [sum(column, mpz(0)) for column in zip(*per_value, strict=True)]
    np.testing.assert_array_equal(
        packing.unpack(totals, single, dim=dim, clients=len(vectors)), expected
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 32), st.integers(1, 10**6))
def test_slot_width_is_the_smallest_that_holds_n_extreme_values(bits: int, clients: int) -> None:
    width = packing.slot_bits(bits, clients)
    largest_sum = clients * 2 * packing.qmax(bits)  # every client at +clip, shifted
    assert largest_sum < 2**width  # fits: no carry into the next slot
    assert largest_sum >= 2 ** (width - 1)  # one bit less would carry
    assert width >= bits + (clients.bit_length() - 1)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 32), st.floats(0.01, 100.0), st.integers(0, 2**32 - 1))
def test_quantize_stays_within_one_step_and_clips(bits: int, clip: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(-2 * clip, 2 * clip, 500), [clip, -clip, 0.0]])
    q, clipped = packing.quantize(x, clip=clip, bits=bits, rng=rng)
    top = packing.qmax(bits)
    assert q.dtype == np.int64 and np.abs(q).max() <= top
    assert clipped == int(np.sum(np.abs(x) > clip))
    exact = np.clip(x, -clip, clip) * top / clip
    assert np.all(np.abs(q - exact) < 1)
    assert q[-3] == top and q[-2] == -top and q[-1] == 0  # the boundaries are exact
    step = clip / top
    assert np.all(np.abs(packing.dequantize(q, clip=clip, bits=bits) - exact * step) < step)


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    x = np.full(200_000, 0.3 / packing.qmax(4))  # 0.3 of a step at 4 bits
    q, _ = packing.quantize(x, clip=1.0, bits=4, rng=rng)
    assert set(np.unique(q)) == {0, 1}
    # Binomial(200k, 0.3): standard deviation of the mean ≈ 0.001; allow 5 of them.
    assert abs(q.mean() - 0.3) < 0.005


def test_layout_refusal_states_the_bits_needed() -> None:
    needed = packing.slot_bits(16, 10)
    assert needed == 20  # 2 · 10 · 32767 = 655340 < 2^20
    with pytest.raises(ConfigError, match=rf"needs {needed} bits .*16 value bits \+ 4 padding"):
        packing.slot_layout(bits=16, clients=10, plaintext_bits=needed + packing.GUARD_BITS - 1)
    layout = packing.slot_layout(bits=16, clients=10, plaintext_bits=needed + packing.GUARD_BITS)
    assert layout.slots == 1 and layout.padding_bits == 4
    with pytest.raises(ConfigError, match="bits must be an integer in"):
        packing.slot_layout(bits=33, clients=1, plaintext_bits=4000)
    with pytest.raises(ConfigError, match="more than the 62 supported"):
        packing.slot_layout(bits=32, clients=2**31, plaintext_bits=4000)


def test_summing_more_clients_than_the_layout_holds_is_refused() -> None:
    layout = packing.slot_layout(bits=8, clients=3, plaintext_bits=300)
    top = np.full(layout.slots * 2, packing.qmax(8), dtype=np.int64)
    packed = packing.pack(top, layout)
    # Five clients at +clip really do carry out of a slot sized for three ...
    five = [p * 5 for p in packed]
    slot_mask = 2**layout.slot_bits - 1
    assert int(five[0]) & slot_mask != 5 * 2 * packing.qmax(8)
    # ... and unpack refuses before reading them, naming the bits that five would need.
    with pytest.raises(ConfigError, match=rf"5 clients needs {packing.slot_bits(8, 5)} bits"):
        packing.unpack(five, layout, dim=top.size, clients=5)


def test_garbage_plaintexts_fail_the_range_check() -> None:
    layout = packing.slot_layout(bits=16, clients=10, plaintext_bits=2047)
    rng = np.random.default_rng(0)
    garbage = [mpz(int(rng.integers(0, 2**62))) << (2047 - 62) for _ in range(3)]
    with pytest.raises(ValueError, match=f"a valid sum has at most {layout.packed_bits}"):
        packing.unpack(garbage, layout, dim=3 * layout.slots, clients=10)
    # A plaintext inside the packed range whose slot exceeds what 10 clients can sum.
    too_big = mpz(2 * 10 * packing.qmax(16) + 1)
    with pytest.raises(ValueError, match=r"slot 0 holds .* the largest sum of 10 clients"):
        packing.unpack([too_big], layout, dim=1, clients=10)


def test_pack_rejects_values_outside_the_quantized_range() -> None:
    layout = packing.slot_layout(bits=4, clients=1, plaintext_bits=100)
    with pytest.raises(ValueError, match=r"must lie in \[−7, 7\]"):
        packing.pack(np.array([8]), layout)
