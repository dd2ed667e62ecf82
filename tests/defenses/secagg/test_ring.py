"""Tests for fedbench.defenses.secagg.ring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import BadClientUpdate, ConfigError


@pytest.mark.parametrize(("bits", "dtype"), [(1, np.uint32), (32, np.uint32), (33, np.uint64),
                                             (64, np.uint64)])
def test_storage_type(bits: int, dtype: type) -> None:
    assert Ring(bits).dtype == np.dtype(dtype)


@pytest.mark.parametrize("bits", [0, 65, -3])
def test_bits_out_of_range_are_refused(bits: int) -> None:
    with pytest.raises(ConfigError, match="bits must be an integer in"):
        Ring(bits)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 64),
    values=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
    count=st.integers(1, 6),
)
def test_wrapping_sum_then_reduce_is_addition_mod_2_to_the_bits(
    bits: int, values: list[int], count: int
) -> None:
    ring = Ring(bits)
    storage = 8 * ring.dtype.itemsize
    vectors = [
        np.array([(v * (k + 1)) % ring.modulus for v in values], dtype=ring.dtype)
        for k in range(count)
    ]
    total = ring.zeros(len(values))
    for vector in vectors:
        np.add(total, vector, out=total)
    assert storage in (32, 64)
    expected = [sum(int(vec[i]) for vec in vectors) % ring.modulus for i in range(len(values))]
    assert ring.reduce(total).tolist() == expected


def test_check_rejects_wrong_shape_dtype_and_range() -> None:
    ring = Ring(10)
    ring.check(np.array([1023], dtype=np.uint32), 3, 1)
    with pytest.raises(BadClientUpdate, match=r"client 3: .*shape \(2,\), expected \(1,\)"):
        ring.check(np.zeros(2, dtype=np.uint32), 3, 1)
    with pytest.raises(BadClientUpdate, match="dtype uint64"):
        ring.check(np.zeros(1, dtype=np.uint64), 3, 1)
    with pytest.raises(BadClientUpdate, match="1024 outside"):
        ring.check(np.array([1024], dtype=np.uint32), 3, 1)


def _reference_packing(values: list[int], bits: int) -> bytes:
    """Little-endian bit stream of ``bits`` bits a value, written out bit by bit."""
    stream = "".join(format(v, f"0{bits}b")[::-1] for v in values)
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i : i + 8][::-1], 2) for i in range(0, len(stream), 8))


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(1, 64), dim=st.integers(0, 70), seed=st.integers(0, 2**32 - 1))
def test_packing_is_the_bit_stream_and_round_trips(bits: int, dim: int, seed: int) -> None:
    ring = Ring(bits)
    values = np.random.default_rng(seed).integers(
        0, ring.modulus, size=dim, dtype=np.uint64, endpoint=False
    ).astype(ring.dtype)
    wire = ring.pack(values)
    assert wire.nbytes == ring.packed_nbytes(dim)
    if not ring.wraps_natively:
        assert wire.nbytes == -(-dim * bits // 8)  # b/8 bytes a value
        assert wire.tobytes() == _reference_packing(values.tolist(), bits)
    assert ring.unpack(wire, dim).tolist() == values.tolist()
    assert ring.unpack(wire, dim).dtype == ring.dtype


@pytest.mark.parametrize("bits", range(1, 65))
def test_fast_packing_equals_the_group_packing_at_every_width(bits: int) -> None:
    ring = Ring(bits)
    for dim in (1, 7, 8, 9, 1001):
        values = np.random.default_rng(bits * dim).integers(
            0, ring.modulus, size=dim, dtype=np.uint64, endpoint=False
        ).astype(ring.dtype)
        if ring.wraps_natively:
            continue
        wire = ring.pack(values)
        assert wire.tobytes() == ring._pack_groups(values).tobytes()
        assert ring.unpack(wire, dim).tolist() == values.tolist()
        assert ring._unpack_groups(wire, dim).tolist() == values.tolist()
