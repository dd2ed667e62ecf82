"""Tests for fedbench.defenses.he.ckks_channel: error bound, refusals, tampering, FedAvg."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedbench.defenses.he.ckks import PRESETS, CKKSKeys
from fedbench.defenses.he.ckks_channel import CKKSAggregation, CKKSChannel
from fedbench.defenses.he.envelope import HEADER_BYTES
from fedbench.errors import AggregationError, BadClientUpdate, ConfigError
from fedbench.fl.channel import EncodedUpdate
from fedbench.registry import DEFENSES


def _channel(keys: CKKSKeys, clients: int) -> CKKSChannel:
    channel = CKKSChannel(keys=keys)
    channel.configure(clients=clients)
    return channel


def _updates(clients: int, dim: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {3 * c + 1: rng.normal(0, 0.3, dim).astype(np.float32) for c in range(clients)}


@pytest.mark.parametrize("clients, dim", [(1, 5), (10, 4095), (10, 4096), (25, 9000)])
def test_aggregate_is_within_the_reported_error_bound(
    ckks_keys: CKKSKeys, clients: int, dim: int
) -> None:
    channel = _channel(ckks_keys, clients)
    updates = _updates(clients, dim)
    messages = {c: channel.encode(c, u) for c, u in updates.items()}
    result = channel.aggregate(messages)
    exact = np.sum([u.astype(np.float64) for u in updates.values()], axis=0)
    error = np.abs(result.total - exact).max()
    assert result.stats["max_abs_error"] == pytest.approx(error, rel=1e-12)
    assert 0 < error <= result.stats["error_bound"] == ckks_keys.params.error_bound(clients)
    chunks = -(-dim // 4095)
    ciphertext = 2 * 8192 * 8  # 2 polynomials × N coefficients × one 64-bit word (one prime)
    for c, message in messages.items():
        assert result.upload_bytes[c] == len(message.payload)
        assert chunks * ciphertext < result.upload_bytes[c] < chunks * (ciphertext + 200) + 100
    assert set(result.download_bytes) == set(updates)
    assert result.contributors == tuple(updates)


def test_insecure_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="sum to 240 bits, above the 218 bits"):
        DEFENSES.create(
            "ckks", {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 60, 60, 60]}
        )
    with pytest.raises(ConfigError, match="sum to 110 bits, above the 109 bits"):
        CKKSAggregation(poly_modulus_degree=4096, coeff_mod_bit_sizes=[60, 50])
    with pytest.raises(ConfigError, match="poly_modulus_degree must be one of"):
        CKKSAggregation(poly_modulus_degree=2000, coeff_mod_bit_sizes=[30, 20])
    with pytest.raises(ConfigError, match="together, or neither"):
        CKKSAggregation(poly_modulus_degree=4096)
    with pytest.raises(ConfigError, match="unknown parameter 'scale'"):
        DEFENSES.create("ckks", {"scale": 40})
    defense = DEFENSES.create("ckks", {"preset": "n4096", "scale_bits": 30})
    assert defense.channel.params == PRESETS["n4096"].__class__(4096, (60, 49), 30)
    assert defense.insecure is None


def _replace(message: EncodedUpdate, payload: bytes) -> EncodedUpdate:
    return EncodedUpdate(message.client_id, payload, len(payload))


def test_tampered_ciphertext_fails_with_a_clear_error(ckks_small_keys: CKKSKeys) -> None:
    channel = _channel(ckks_small_keys, 3)
    updates = _updates(3, 3000)
    exact = np.sum([u.astype(np.float64) for u in updates.values()], axis=0)
    clear = r"tampered|does not load|truncated|follow the last ciphertext"
    caught = 0
    for fraction in (0.01, 0.25, 0.5, 0.75, 0.99):
        messages = {c: channel.encode(c, u) for c, u in updates.items()}
        payload = bytearray(messages[1].payload)
        body = len(payload) - HEADER_BYTES
        payload[HEADER_BYTES + 4 + int(fraction * (body - 8))] ^= 0x3C
        messages[1] = _replace(messages[1], bytes(payload))
        # Whatever the flipped byte hits (a length prefix, SEAL's header, compressed or raw
        # coefficients), the round fails with an error that says why, or the byte did not
        # matter and the sum is right. It is never silently wrong.
        try:
            result = channel.aggregate(messages)
        except (AggregationError, BadClientUpdate) as err:
            assert re.search(clear, str(err)), err
            caught += 1
        else:
            assert np.abs(result.total - exact).max() <= result.stats["error_bound"]
    assert caught >= 4


def test_ciphertext_from_another_context_fails_with_a_clear_error(
    ckks_small_keys: CKKSKeys,
) -> None:
    channel = _channel(ckks_small_keys, 3)
    stranger = _channel(CKKSKeys.generate(PRESETS["n4096"]), 3)
    messages = {c: channel.encode(c, u) for c, u in _updates(3, 100).items()}
    messages[4] = stranger.encode(4, np.zeros(100, np.float32))
    with pytest.raises(BadClientUpdate, match="client 4: ciphertext was made under another key"):
        channel.aggregate(messages)
    forged = messages[1].payload[:HEADER_BYTES] + messages[4].payload[HEADER_BYTES:]
    messages[4] = _replace(messages[4], forged)
    with pytest.raises(AggregationError, match=r"does not decode.*made under another key"):
        channel.aggregate(messages)


def test_malformed_or_oversized_input_is_refused(ckks_small_keys: CKKSKeys) -> None:
    channel = _channel(ckks_small_keys, 2)
    limit = channel.value_limit()
    assert limit == 2.0 ** (60 - 40 - 2) / 2
    with pytest.raises(BadClientUpdate, match=r"client 5: .*exceeds the CKKS limit"):
        channel.encode(5, np.array([0.0, 1.01 * limit], dtype=np.float32))
    messages = {c: channel.encode(c, np.ones(10, np.float32)) for c in (0, 1)}
    messages[1] = _replace(messages[1], messages[1].payload[:-10])
    with pytest.raises(BadClientUpdate, match="client 1: ciphertext 0 is truncated"):
        channel.aggregate(messages)
    messages[1] = _replace(messages[1], channel.encode(1, np.ones(10, np.float32)).payload + b"x")
    with pytest.raises(BadClientUpdate, match="client 1: 1 bytes follow the last ciphertext"):
        channel.aggregate(messages)
    messages[1] = channel.encode(1, np.ones(11, np.float32))
    with pytest.raises(BadClientUpdate, match="client 1: 11 values, others sent 10"):
        channel.aggregate(messages)
    messages = {c: channel.encode(c, np.ones(10, np.float32)) for c in (0, 1, 2)}
    with pytest.raises(AggregationError, match="3 messages, the value limit was set for sums "
                                               "of at most 2"):
        channel.aggregate(messages)


def test_encoding_prints_nothing(ckks_small_keys: CKKSKeys, capfd: pytest.CaptureFixture) -> None:
    channel = _channel(ckks_small_keys, 1)
    channel.encode(0, np.ones(3 * 2047 + 5, np.float32))
    assert capfd.readouterr().out == ""


def test_fedavg_reaches_plaintext_accuracy(
    run_digits: Callable[[list[Any]], dict[str, Any]], plaintext_digits: dict[str, Any]
) -> None:
    result = run_digits(["ckks"])
    assert abs(result["accuracy"] - plaintext_digits["accuracy"]) <= 0.01
    assert 0 < result["he_max_abs_error"] <= result["he_error_bound"] < 1e-4
    assert result["values_per_ciphertext"] == 4095
    assert result["insecure"] is None
    # The encryption noise reaches the model, and no seed fixes it: the records say so.
    assert "ckks: SEAL draws CKKS encryption noise" in result["irreproducible"]
