"""Tests for fedbench.defenses.secagg.keys: agreement, HKDF derivation, share encryption."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from fedbench.defenses.secagg import keys


def rfc5869(material: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 with an empty salt, written from RFC 5869 with the standard library."""
    prk = hmac.new(bytes(32), material, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_agreement_is_symmetric_and_pairwise_distinct() -> None:
    a, b, c = (keys.private_key_from_seed(bytes([i]) * 16) for i in range(3))
    ab = keys.shared_secret(a, keys.public_bytes(b))
    assert ab == keys.shared_secret(b, keys.public_bytes(a))
    assert ab != keys.shared_secret(a, keys.public_bytes(c))


def test_key_seed_determines_the_key() -> None:
    seed = keys.random_seed()
    assert len(seed) == 16 and seed != keys.random_seed()
    first = keys.public_bytes(keys.private_key_from_seed(seed))
    assert first == keys.public_bytes(keys.private_key_from_seed(seed))
    assert len(first) == keys.PUBLIC_KEY_BYTES
    with pytest.raises(ValueError, match="16 bytes"):
        keys.private_key_from_seed(bytes(32))


def test_mask_seed_is_hkdf_sha256_bound_to_round_and_pair() -> None:
    secret = bytes(range(32))
    seed = keys.mask_seed(secret, round_index=4, a=9, b=2)
    info = b"fedbench/secagg/pairwise-mask" + struct.pack(">QQQ", 4, 2, 9)
    assert seed == rfc5869(secret, info, 16)
    assert seed == keys.mask_seed(secret, round_index=4, a=2, b=9)
    assert seed != keys.mask_seed(secret, round_index=5, a=2, b=9)
    assert seed != keys.mask_seed(secret, round_index=4, a=2, b=8)


def test_share_keys_are_directional_and_agree_between_the_two_ends() -> None:
    secret = bytes(32)
    forward, backward = keys.share_keys(secret, round_index=0, a=1, b=2)
    assert forward != backward
    # Each end derives the same two keys, each for its own direction.
    assert keys.share_keys(secret, round_index=0, a=2, b=1) == (backward, forward)
    info = b"fedbench/secagg/share-encryption" + struct.pack(">QQQ", 0, 1, 2)
    assert forward + backward == rfc5869(secret, info, 32)
    assert forward != keys.share_keys(secret, round_index=1, a=1, b=2)[0]


def test_sealed_shares_resist_tampering_and_misdirection() -> None:
    key = keys.share_keys(bytes(32), round_index=0, a=1, b=2)[0]
    box = keys.seal(key, b"secret share", b"ad")
    assert len(box) == len(b"secret share") + keys.TAG_BYTES
    assert keys.open_sealed(key, box, b"ad") == b"secret share"
    with pytest.raises(ValueError, match="failed authentication"):
        keys.open_sealed(key, box[:-1] + bytes([box[-1] ^ 1]), b"ad")
    with pytest.raises(ValueError, match="failed authentication"):
        keys.open_sealed(key, box, b"other")
