"""Tests for fedbench.defenses.he.paillier: CRT encryption against phe, sums, wire format."""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier as phe_paillier

from fedbench.defenses.he.paillier import (
    Encryptor,
    PaillierKeys,
    check_key_bits,
    decrypt,
    from_bytes,
    multiply,
    to_bytes,
)
from fedbench.errors import ConfigError


def _lambda(keys: PaillierKeys) -> mpz:
    assert keys.private is not None
    return gmpy2.lcm(mpz(keys.private.p) - 1, mpz(keys.private.q) - 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**700), min_size=1, max_size=6))
def test_crt_encryption_decrypts_with_phe(small_keys: PaillierKeys, values: list[int]) -> None:
    plaintexts = [mpz(v) % small_keys.n for v in values] + [small_keys.n - 1, mpz(0)]
    ciphertexts = Encryptor(small_keys).encrypt(plaintexts)
    assert small_keys.private is not None
    for m, c in zip(plaintexts, ciphertexts, strict=True):
        assert 0 < c < small_keys.nsquare
        assert small_keys.private.raw_decrypt(int(c)) == m  # phe's own decryption


def test_obfuscators_are_fresh_nth_residues(small_keys: PaillierKeys) -> None:
    rhos = Encryptor(small_keys).obfuscators(200)
    assert len(set(rhos)) == 200  # never reused
    lam = _lambda(small_keys)
    # r^n mod n² is exactly an element whose λ-th power is 1 (the n-th residues); a plaintext
    # component (1 + n)^k with k ≠ 0 mod n is not, so decryption sees no spurious offset.
    assert all(gmpy2.powmod(rho, lam, small_keys.nsquare) == 1 for rho in rhos)
    assert gmpy2.powmod(small_keys.n + 1, lam, small_keys.nsquare) != 1


def test_encryption_at_2048_bits_agrees_with_phe(keys_2048: PaillierKeys) -> None:
    encryptor = Encryptor(keys_2048)
    plaintexts = [mpz(3), mpz(2**2000 + 12345), keys_2048.n - 1]
    ours = encryptor.encrypt(plaintexts)
    assert decrypt(keys_2048, ours) == plaintexts
    # Ours and phe's ciphertexts are the same scheme: they add across implementations.
    theirs = [mpz(keys_2048.public.raw_encrypt(int(m))) for m in plaintexts]
    summed = decrypt(keys_2048, multiply(keys_2048, ours, theirs))
    assert summed == [(2 * m) % keys_2048.n for m in plaintexts]
    assert keys_2048.ciphertext_bytes == 512


def test_randomness_pool_is_used_once_each(small_keys: PaillierKeys) -> None:
    encryptor = Encryptor(small_keys)
    encryptor.precompute(5)
    pooled = list(encryptor._pool)
    plaintexts = [mpz(7)] * 8  # more than the pool holds
    ciphertexts = encryptor.encrypt(plaintexts)
    assert encryptor.pool_size == 0
    n, n2 = small_keys.n, small_keys.nsquare
    rhos = [c * gmpy2.invert(7 * n + 1, n2) % n2 for c in ciphertexts]
    assert sorted(rhos[:5]) == sorted(pooled)  # the pool first, each value once ...
    assert len(set(rhos)) == 8  # ... then fresh ones
    assert decrypt(small_keys, ciphertexts) == plaintexts


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2**60), min_size=3, max_size=3), min_size=1, max_size=8))
def test_product_of_ciphertexts_is_the_sum(small_keys: PaillierKeys, rows: list[list[int]]) -> None:
    encryptor = Encryptor(small_keys)
    server = small_keys.public_only()
    acc = encryptor.encrypt([mpz(v) for v in rows[0]])
    for row in rows[1:]:
        acc = multiply(server, acc, encryptor.encrypt([mpz(v) for v in row]))
    assert decrypt(small_keys, acc) == [sum(column) for column in zip(*rows, strict=True)]


def test_wire_format_round_trip_and_validation(small_keys: PaillierKeys) -> None:
    ciphertexts = Encryptor(small_keys).encrypt([mpz(1), mpz(2)])
    blob = to_bytes(small_keys, ciphertexts)
    assert len(blob) == 2 * small_keys.ciphertext_bytes
    assert from_bytes(small_keys, blob, 2) == ciphertexts
    with pytest.raises(ValueError, match="expected 3 × 192"):
        from_bytes(small_keys, blob, 3)
    width = small_keys.ciphertext_bytes
    zero = bytes(width)
    with pytest.raises(ValueError, match="ciphertext 1 is not a residue"):
        from_bytes(small_keys, blob[:width] + zero, 2)
    too_big = small_keys.nsquare.to_bytes(width, "big")
    with pytest.raises(ValueError, match="ciphertext 0 is not a residue"):
        from_bytes(small_keys, too_big + blob[width:], 2)


def test_short_keys_are_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match=r"key_bits = 1024 is insecure \(< 2048\)"):
        PaillierKeys.generate(1024)
    assert check_key_bits(2048, allow_insecure=False) is None
    assert check_key_bits(1024, allow_insecure=True) == "Paillier key of 1024 bits (< 2048)"
    with pytest.raises(ConfigError, match="even integer"):
        check_key_bits(1023, allow_insecure=True)


def test_server_keys_cannot_decrypt_or_encrypt_fast(small_keys: PaillierKeys) -> None:
    server = small_keys.public_only()
    assert server.private is None and server.key_id == small_keys.key_id
    with pytest.raises(ValueError, match="needs the private key"):
        decrypt(server, [mpz(1)])
    with pytest.raises(ValueError, match="secret factors"):
        Encryptor(server)
    other, _ = phe_paillier.generate_paillier_keypair(n_length=768)
    assert PaillierKeys(other).key_id != small_keys.key_id
