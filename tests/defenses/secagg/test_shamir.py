"""Tests for fedbench.defenses.secagg.shamir: threshold reconstruction and tamper detection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg.shamir import ReconstructionError, Share, combine, commit, split
from fedbench.errors import AggregationError

LABEL = b"client 3 seed"


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


@pytest.mark.parametrize("position", [0, 5, 17, 31])
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
    shares = split(bytes(32), threshold=2, count=3)
    with pytest.raises(ReconstructionError, match="repeated share indices"):
        combine([shares[0], shares[0]], threshold=2, commitment=b"", label=LABEL)
    short = Share(shares[1].index, shares[1].value[:16])
    with pytest.raises(ReconstructionError, match="inconsistent lengths"):
        combine([shares[0], short], threshold=2, commitment=b"", label=LABEL)
