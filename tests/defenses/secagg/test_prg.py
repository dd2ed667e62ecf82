"""Tests for fedbench.defenses.secagg.prg, against pycryptodome's independent AES-CTR."""

from __future__ import annotations

import numpy as np
import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg.prg import MaskGenerator, keystream_bytes
from fedbench.defenses.secagg.ring import Ring


def reference_mask(seed: bytes, dim: int, ring: Ring) -> list[int]:
    """AES-128-CTR keystream from pycryptodome (128-bit big-endian counter from 0), read as
    little-endian words of the storage type and reduced mod 2^b."""
    width = ring.dtype.itemsize
    stream = AES.new(seed, AES.MODE_CTR, nonce=b"", initial_value=0).encrypt(bytes(dim * width))
    return [
        int.from_bytes(stream[i * width : (i + 1) * width], "little") % ring.modulus
        for i in range(dim)
    ]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=16),
    dim=st.integers(0, 300),
    bits=st.sampled_from([1, 8, 20, 32, 40, 64]),
    chunk_words=st.integers(1, 8),
)
def test_mask_is_the_aes_ctr_keystream(seed: bytes, dim: int, bits: int, chunk_words: int) -> None:
    ring = Ring(bits)
    # Small chunks (16-byte multiples) exercise the chunked expansion on short vectors.
    masks = MaskGenerator(ring, chunk_bytes=16 * ring.dtype.itemsize * chunk_words)
    assert masks.expand(seed, dim).tolist() == reference_mask(seed, dim, ring)


def test_keystream_helper_matches_pycryptodome() -> None:
    seed = bytes(range(16))
    expected = AES.new(seed, AES.MODE_CTR, nonce=b"", initial_value=0).encrypt(bytes(1000))
    assert keystream_bytes(seed, 1000) == expected


@settings(max_examples=60, deadline=None)
@given(
    seeds=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=6),
    signs=st.lists(st.booleans(), min_size=6, max_size=6),
    start=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40),
    bits=st.sampled_from([7, 32, 64]),
)
def test_apply_adds_and_subtracts_modulo_2_to_the_bits(
    seeds: list[bytes], signs: list[bool], start: list[int], bits: int
) -> None:
    ring = Ring(bits)
    dim = len(start)
    acc = np.array([v % ring.modulus for v in start], dtype=ring.dtype)
    add = [s for s, plus in zip(seeds, signs, strict=False) if plus]
    subtract = [s for s, plus in zip(seeds, signs, strict=False) if not plus]
    expected = [v % ring.modulus for v in start]
    for seed, plus in zip(seeds, signs, strict=False):
        mask = reference_mask(seed, dim, ring)
        expected = [(e + (m if plus else -m)) % ring.modulus for e, m in zip(expected, mask,
                                                                              strict=True)]
    MaskGenerator(ring, chunk_bytes=128).apply(acc, add=add, subtract=subtract)
    assert acc.tolist() == expected


def test_buffers_are_reused_without_corrupting_results() -> None:
    ring = Ring(32)
    masks = MaskGenerator(ring, chunk_bytes=1 << 12)
    seed_a, seed_b = bytes(16), bytes(range(16))
    first = masks.expand(seed_a, 5000)
    buffer = masks._out
    second = masks.expand(seed_b, 3000)
    assert masks._out is buffer  # no reallocation for a smaller or equal chunk
    assert first.tolist() == reference_mask(seed_a, 5000, ring)  # earlier result untouched
    assert second.tolist() == reference_mask(seed_b, 3000, ring)
    # A mask and its negation cancel exactly.
    acc = np.arange(10_000, dtype=np.uint32)
    masks.apply(acc, add=[seed_a, seed_b], subtract=[seed_b, seed_a])
    np.testing.assert_array_equal(acc, np.arange(10_000, dtype=np.uint32))


def test_bad_arguments() -> None:
    masks = MaskGenerator(Ring(32))
    with pytest.raises(ValueError, match="16 bytes"):
        masks.expand(b"short", 4)
    with pytest.raises(ValueError, match="contiguous uint32"):
        masks.apply(np.zeros(4, dtype=np.uint64), add=[bytes(16)])
    with pytest.raises(ValueError, match="contiguous"):
        masks.apply(np.zeros(8, dtype=np.uint32)[::2], add=[bytes(16)])
    with pytest.raises(ValueError, match="multiple of 64"):
        MaskGenerator(Ring(32), chunk_bytes=100)
