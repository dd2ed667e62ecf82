"""Tests for fedbench.defenses.he.ckks: security caps vs SEAL, error bound, canaries, chunking."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tenseal as ts

from fedbench.defenses.he.ckks import (
    MAX_COEFF_BITS_128,
    PRESETS,
    CKKSKeys,
    CKKSParams,
    add_chunks,
    chunk_count,
    decrypt_chunks,
    encrypt_chunks,
)
from fedbench.errors import ConfigError


def _seal_accepts(n: int, bits: list[int]) -> bool:
    try:
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=bits)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    "n, at_cap",
    [(4096, [60, 49]), (8192, [60, 60, 60, 38]), (16384, [60, 60, 60, 60, 59, 59, 40, 40])],
)
def test_security_cap_matches_seal(n: int, at_cap: list[int]) -> None:
    assert sum(at_cap) == MAX_COEFF_BITS_128[n]
    CKKSParams(n, tuple(at_cap), 40).check()
    assert _seal_accepts(n, at_cap)
    above = [*at_cap[:-1], at_cap[-1] + 1]
    with pytest.raises(ConfigError, match=rf"sum to {sum(above)} bits, above the "
                                          rf"{MAX_COEFF_BITS_128[n]} bits .* 128-bit security"):
        CKKSParams(n, tuple(above), 40).check()
    assert not _seal_accepts(n, above)  # SEAL agrees: it cannot build the weaker context


@pytest.mark.parametrize(
    "params, message",
    [
        (CKKSParams(3000, (60, 40), 40), "poly_modulus_degree must be one of"),
        (CKKSParams(8192, (60,), 40), "needs a data prime and a special prime"),
        (CKKSParams(8192, (61, 40), 40), "each of 20 to 60 bits"),
        (CKKSParams(8192, (60, 40), 55), r"scale_bits = 55 must be in \[20, 52\]"),
    ],
)
def test_meaningless_parameters_are_refused(params: CKKSParams, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params.check()


def test_presets_are_secure_and_keyless_on_the_server(ckks_keys: CKKSKeys) -> None:
    for params in PRESETS.values():
        params.check()
    server = ckks_keys.public_context
    assert server.is_public() and not server.has_secret_key()
    assert not server.has_relin_keys() and not server.has_galois_keys()


@pytest.mark.parametrize("preset, clients", [("n4096", 1), ("n4096", 30), ("n8192", 10)])
def test_sum_is_within_the_error_bound(
    preset: str, clients: int, ckks_keys: CKKSKeys, ckks_small_keys: CKKSKeys
) -> None:
    keys = ckks_keys if preset == "n8192" else ckks_small_keys
    rng = np.random.default_rng(clients)
    dim = keys.params.slots + 10  # two ciphertexts
    vectors = [rng.uniform(-1, 1, dim) for _ in range(clients)]
    acc = None
    for v in vectors:
        acc = add_chunks(keys, acc, encrypt_chunks(keys, v))
    assert acc is not None
    decoded = decrypt_chunks(keys, [c.serialize() for c in acc], dim=dim, clients=clients)
    error = np.abs(decoded - np.sum(vectors, axis=0)).max()
    assert error <= keys.params.error_bound(clients)
    assert error > 0  # CKKS is approximate: a zero error would mean nothing was encrypted


def test_sum_at_the_value_limit_decodes(ckks_small_keys: CKKSKeys) -> None:
    keys = ckks_small_keys
    clients = 4
    limit = keys.params.value_limit(clients)
    vector = np.array([limit, -limit, 0.5])
    acc = None
    for _ in range(clients):
        acc = add_chunks(keys, acc, encrypt_chunks(keys, vector))
    assert acc is not None
    decoded = decrypt_chunks(keys, [c.serialize() for c in acc], dim=3, clients=clients)
    np.testing.assert_allclose(decoded, clients * vector, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("dim", [1, 2046, 2047, 2048, 5000])
def test_chunking_uses_full_rows_and_prints_nothing(
    dim: int, ckks_small_keys: CKKSKeys, capfd: pytest.CaptureFixture[str]
) -> None:
    keys = ckks_small_keys
    values = np.arange(dim, dtype=np.float64) / dim
    blobs = encrypt_chunks(keys, values)
    assert len(blobs) == chunk_count(keys.params, dim) == -(-dim // 2047)
    assert capfd.readouterr().out == ""  # TenSEAL's split warning never fires
    for blob in blobs:
        assert ts.ckks_vector_from(keys.secret_context, blob).size() == keys.params.slots
    decoded = decrypt_chunks(keys, blobs, dim=dim, clients=1)
    np.testing.assert_allclose(decoded, values, atol=keys.params.error_bound(1))


def test_corrupted_bytes_fail_loudly_or_not_at_all(ckks_small_keys: CKKSKeys) -> None:
    keys = ckks_small_keys
    values = np.linspace(-1, 1, 1000)
    original = encrypt_chunks(keys, values)[0]
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(40):
        blob = bytearray(original)
        blob[int(rng.integers(len(blob)))] ^= int(rng.integers(1, 256))
        try:
            acc = add_chunks(keys, None, [bytes(blob)])
            decoded = decrypt_chunks(keys, [acc[0].serialize()], dim=1000, clients=1)
        except ValueError as err:
            assert re.search(r"encrypts 0 decrypts to .* tampered|does not load", str(err))
            caught += 1
        else:  # a byte that does not matter (e.g. framing padding): the sum is still right
            assert np.abs(decoded - values).max() <= keys.params.error_bound(1)
    assert caught >= 35  # without the canary most flips load and decrypt to noise silently


def test_ciphertext_of_another_context_is_detected(ckks_small_keys: CKKSKeys) -> None:
    keys = ckks_small_keys
    other = CKKSKeys.generate(keys.params)  # same parameters, another secret key
    assert other.key_id != keys.key_id
    values = np.linspace(-1, 1, 100)
    # TenSEAL loads it and adds it without complaint; the canary slot exposes it.
    acc = add_chunks(keys, None, encrypt_chunks(keys, values))
    acc = add_chunks(keys, acc, encrypt_chunks(other, values))
    with pytest.raises(ValueError, match=r"a slot that encrypts 0 decrypts to .* tampered"):
        decrypt_chunks(keys, [acc[0].serialize()], dim=100, clients=2)
    # A context with other parameters cannot even load it.
    with pytest.raises(ValueError, match="ciphertext 0 does not load"):
        add_chunks(keys, None, encrypt_chunks(CKKSKeys.generate(PRESETS["n8192"]), values))
