"""Tests for fedbench.defenses.secagg.shamir: batched sharing over GF(65537) against brute-force
Lagrange interpolation with Python integers, threshold reconstruction, and tamper detection."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg import shamir
from fedbench.defenses.secagg.shamir import (
    PRIME,
    ReconstructionError,
    Share,
    combine,
    commit,
    deal,
    decode_elements,
    encode_elements,
    lagrange_at_zero,
    reconstruct,
    recover,
    split,
)
from fedbench.errors import AggregationError

LABEL = b"client 3 seed"


def brute_force_secret(xs: list[int], ys: list[int]) -> int:
    """f(0) of the polynomial through (x_i, y_i), by Lagrange's formula in Python integers."""
    total = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num, den = num * xj % PRIME, den * (xj - xi) % PRIME
        total += yi * num * pow(den, PRIME - 2, PRIME)
    return total % PRIME


def brute_force_bytes(xs: list[int], shares: np.ndarray) -> bytes:
    """The secret of (t, 17) share bytes (a 16-byte secret) held at ``xs``, limb by limb."""
    limbs = decode_elements(shares, 8)
    secret = [brute_force_secret(xs, [int(v) for v in limbs[:, k]]) for k in range(limbs.shape[1])]
    return np.array(secret, dtype="<u2").tobytes()


@settings(max_examples=60, deadline=None)
@given(
    secrets=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=4),
    count=st.integers(1, 40),
    data=st.data(),
)
def test_dealt_shares_interpolate_to_the_secret_by_brute_force(
    secrets: list[bytes], count: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(1, count))
    holders = sorted(data.draw(st.sets(st.integers(1, shamir.MAX_HOLDERS), min_size=count,
                                       max_size=count)))
    shares = deal(secrets, threshold=threshold, holders=holders)
    assert shares.shape == (count, len(secrets), 17)
    chosen = sorted(data.draw(st.permutations(range(count)))[:threshold])
    xs = [holders[i] for i in chosen]
    for s, secret in enumerate(secrets):
        assert brute_force_bytes(xs, shares[chosen, s]) == secret
    # The batched reconstruction agrees, all secrets at once.
    batch = reconstruct(np.tile(xs, (len(secrets), 1)), shares[chosen].transpose(1, 0, 2))
    assert batch == secrets


def test_a_share_is_uniform_whatever_the_secret() -> None:
    # With t = 3, one share (fewer than t) is uniform over GF(p) for any secret: its mean is
    # p/2 (standard error ≈ 120 over 24,000 elements); without fresh coefficients it would be
    # the secret's limbs themselves (0 and 65,535 here).
    for secret in (bytes(16), bytes([255]) * 16):
        shares = np.stack([deal([secret], threshold=3, holders=[1, 2, 3])[0, 0]
                           for _ in range(3000)])
        assert abs(decode_elements(shares, 8).mean() - PRIME / 2) < 700


def test_element_encoding_round_trips_including_two_to_the_sixteen() -> None:
    elements = np.array([[0, 1, 65535, 65536, 7, 65536, 300, 2]], dtype=np.int64)
    raw = encode_elements(elements)
    assert raw.shape == (1, 17) and shamir.share_bytes(16) == 17
    assert decode_elements(raw, 8).tolist() == elements.tolist()


@settings(max_examples=30, deadline=None)
@given(base=st.sets(st.integers(1, PRIME - 1), min_size=3, max_size=30))
def test_leave_one_out_coefficients_equal_the_direct_ones(base: set[int]) -> None:
    points = np.array(sorted(base), dtype=np.int64)
    rows = np.stack([np.delete(points, k) for k in range(points.size)])
    direct = shamir._direct_coefficients(rows)
    assert lagrange_at_zero(rows).tolist() == direct.tolist()  # via the leave-one-out path
    for row, lam in zip(rows.tolist(), direct.tolist(), strict=True):
        # Σ λ_i x_i^k = [k = 0] for k < t: the coefficients interpolate every low power.
        for k in range(len(row)):
            assert sum(c * pow(x, k, PRIME) for c, x in zip(lam, row, strict=True)) % PRIME == (
                k == 0)


@pytest.mark.parametrize("bad", [0, 3, 5])
def test_recover_names_the_one_altered_share_and_reconstructs_around_it(bad: int) -> None:
    secret = os.urandom(16)
    holders = np.arange(1, 9)
    shares = deal([secret], threshold=5, holders=holders)[:, 0]
    shares[bad, 3] ^= 0x10
    found = recover(holders, shares, threshold=5, matches=lambda s: s == secret)
    assert found.secret == secret and found.altered == (bad,)


def test_recover_gives_up_on_two_altered_shares_or_no_spare() -> None:
    secret = os.urandom(16)
    holders = np.arange(1, 7)
    shares = deal([secret], threshold=4, holders=holders)[:, 0]
    honest = recover(holders, shares, threshold=4, matches=lambda s: s == secret)
    assert honest.secret == secret and honest.altered == ()
    shares[1, 0] ^= 1
    shares[2, 0] ^= 1
    assert recover(holders, shares, threshold=4, matches=lambda s: s == secret).secret is None
    no_spare = recover(holders[:4], shares[:4], threshold=4, matches=lambda s: s == secret)
    assert no_spare.secret is None


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32),
    count=st.integers(1, 12),
    data=st.data(),
)
def test_any_threshold_subset_reconstructs(secret: bytes, count: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(1, count))
    shares = split(secret, threshold=threshold, count=count)
    assert sorted(s.index for s in shares) == list(range(1, count + 1))
    subset = data.draw(st.permutations(shares))[: data.draw(st.integers(threshold, count))]
    assert combine(subset, threshold=threshold, commitment=commit(secret, LABEL),
                   label=LABEL) == secret


def test_too_few_shares() -> None:
    secret = bytes(range(16))
    shares = split(secret, threshold=3, count=5)
    with pytest.raises(ReconstructionError, match="2 shares, threshold is 3"):
        combine(shares[:2], threshold=3, commitment=commit(secret, LABEL), label=LABEL)


@pytest.mark.parametrize("position", [0, 5, 17, 33])
def test_a_tampered_share_fails_loudly(position: int) -> None:
    secret = bytes(range(32))
    shares = split(secret, threshold=3, count=4)
    victim = shares[1]
    value = bytearray(victim.value)
    value[position] ^= 0x01
    tampered = [shares[0], Share(victim.index, bytes(value)), shares[2]]
    with pytest.raises(ReconstructionError, match="altered") as err:
        combine(tampered, threshold=3, commitment=commit(secret, LABEL), label=LABEL)
    assert isinstance(err.value, AggregationError)  # so a round aborts instead of going on


def test_a_wrong_index_fails_loudly() -> None:
    secret = bytes(16)
    shares = split(secret, threshold=2, count=3)
    moved = [shares[0], Share(shares[2].index, shares[1].value)]
    with pytest.raises(ReconstructionError, match="altered"):
        combine(moved, threshold=2, commitment=commit(secret, LABEL), label=LABEL)


def test_commitment_is_bound_to_its_label() -> None:
    secret = bytes(16)
    shares = split(secret, threshold=2, count=2)
    with pytest.raises(ReconstructionError, match="does not match its commitment"):
        combine(shares, threshold=2, commitment=commit(secret, b"other"), label=LABEL)


def test_malformed_inputs() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        split(bytes(15), threshold=1, count=2)
    with pytest.raises(ValueError, match="threshold"):
        split(bytes(16), threshold=3, count=2)
    with pytest.raises(ValueError, match="distinct"):
        deal([bytes(16)], threshold=1, holders=[3, 3])
    with pytest.raises(ValueError, match=r"\[1, 65536\]"):
        deal([bytes(16)], threshold=1, holders=[0, 1])
    with pytest.raises(ValueError, match="one positive, even length"):
        deal([bytes(16), bytes(18)], threshold=1, holders=[1])
    shares = split(bytes(32), threshold=2, count=3)
    with pytest.raises(ReconstructionError, match="repeated share indices"):
        combine([shares[0], shares[0]], threshold=2, commitment=b"", label=LABEL)
    short = Share(shares[1].index, shares[1].value[:17])
    with pytest.raises(ReconstructionError, match="inconsistent lengths"):
        combine([shares[0], short], threshold=2, commitment=b"", label=LABEL)
