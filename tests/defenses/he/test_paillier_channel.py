"""Tests for fedbench.defenses.he.paillier_channel: exact sums, refusals, tampering, FedAvg."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbench.defenses.he import packing
from fedbench.defenses.he.envelope import HEADER_BYTES
from fedbench.defenses.he.paillier import PaillierKeys
from fedbench.defenses.he.paillier_channel import PaillierAggregation, PaillierChannel
from fedbench.errors import AggregationError, BadClientUpdate, ConfigError
from fedbench.fl.channel import EncodedUpdate
from fedbench.registry import DEFENSES
from fedbench.seeding import Streams

SEED = 11


def _channel(keys: PaillierKeys, clients: int, **kwargs: Any) -> PaillierChannel:
    channel = PaillierChannel(keys=keys, **kwargs)
    channel.configure(clients=clients, streams=Streams(SEED))
    return channel


def _expected_sum(updates: dict[int, np.ndarray], *, clip: float, bits: int) -> np.ndarray:
    """The sum recomputed in the clear: the same stochastic rounding, integer addition."""
    total = np.zeros(next(iter(updates.values())).size, dtype=np.int64)
    for cid, update in updates.items():
        rng = Streams(SEED).numpy("he_encoding", 0, cid)
        total += packing.quantize(update, clip=clip, bits=bits, rng=rng)[0]
    return packing.dequantize(total, clip=clip, bits=bits)


@st.composite
def _updates(draw: st.DrawFn) -> tuple[int, float, dict[int, np.ndarray]]:
    bits = draw(st.integers(2, 24))
    clip = draw(st.sampled_from([0.01, 1.0, 5.0]))
    clients = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 150))
    edge = st.sampled_from([clip, -clip, 1.5 * clip, -4 * clip, 0.0])
    value = st.one_of(edge, st.floats(-clip, clip))
    updates = {
        cid: np.array(draw(st.lists(value, min_size=dim, max_size=dim)), dtype=np.float32)
        for cid in draw(st.lists(st.integers(0, 99), min_size=clients, max_size=clients,
                                 unique=True))
    }
    return bits, clip, updates


@settings(max_examples=30, deadline=None)
@given(_updates())
def test_packed_sum_is_exact(small_keys: PaillierKeys, case) -> None:
    bits, clip, updates = case
    channel = _channel(small_keys, len(updates) + 2, bits=bits, clip=clip)
    result = channel.aggregate({c: channel.encode(c, u) for c, u in updates.items()})
    np.testing.assert_array_equal(result.total, _expected_sum(updates, clip=clip, bits=bits))
    assert result.contributors == tuple(updates)
    clipped = sum(int(np.sum(np.abs(u.astype(np.float64)) > clip)) for u in updates.values())
    assert result.stats["clipped_fraction"] == clipped / sum(u.size for u in updates.values())


def test_packed_sum_is_exact_at_2048_bits(keys_2048: PaillierKeys) -> None:
    rng = np.random.default_rng(0)
    updates = {c: rng.uniform(-1.2, 1.2, 1000).astype(np.float32) for c in range(10)}
    updates[3][:5] = [1.0, -1.0, 2.0, -2.0, 0.0]
    channel = _channel(keys_2048, 10)
    result = channel.aggregate({c: channel.encode(c, u) for c, u in updates.items()})
    np.testing.assert_array_equal(result.total, _expected_sum(updates, clip=1.0, bits=16))
    layout = channel.layout
    assert (layout.slot_bits, layout.slots) == (20, 100)  # (2047 − 40) // 20
    bytes_per_value = result.upload_bytes[0] / 1000
    assert result.upload_bytes[0] == HEADER_BYTES + 10 * 512
    assert bytes_per_value <= 8
    assert result.download_bytes == dict.fromkeys(range(10), HEADER_BYTES + 10 * 512)


def test_per_value_and_packed_modes_agree(small_keys: PaillierKeys) -> None:
    rng = np.random.default_rng(1)
    updates = {c: rng.uniform(-0.9, 0.9, 40).astype(np.float32) for c in (4, 8, 15)}
    totals = {}
    for per_value in (False, True):
        channel = _channel(small_keys, 3, per_value=per_value)
        result = channel.aggregate({c: channel.encode(c, u) for c, u in updates.items()})
        totals[per_value] = result.total
        chunks = 40 if per_value else 1
        assert result.upload_bytes[4] == HEADER_BYTES + chunks * small_keys.ciphertext_bytes
    np.testing.assert_array_equal(totals[False], totals[True])
    reference = sum(u.astype(np.float64) for u in updates.values())
    assert np.abs(totals[True] - reference).max() <= 3 / packing.qmax(16)


def test_summing_more_clients_than_configured_is_refused(small_keys: PaillierKeys) -> None:
    channel = _channel(small_keys, 3)
    messages = {c: channel.encode(c, np.ones(10, np.float32)) for c in range(4)}
    needed = packing.slot_bits(16, 4)
    with pytest.raises(AggregationError, match=f"4 clients needs {needed} bits per slot"):
        channel.aggregate(messages)


def test_bad_settings_are_refused_before_keygen() -> None:
    with pytest.raises(ConfigError, match=r"bits must be an integer in \[2, 32\], got 40"):
        PaillierChannel(bits=40)
    with pytest.raises(ConfigError, match="randomness_pool must be ≥ 0"):
        PaillierChannel(randomness_pool=-1)


def _messages(channel: PaillierChannel, dim: int = 300) -> dict[int, EncodedUpdate]:
    rng = np.random.default_rng(2)
    return {c: channel.encode(c, rng.normal(0, 0.1, dim).astype(np.float32)) for c in range(3)}


def _replace(message: EncodedUpdate, payload: bytes) -> EncodedUpdate:
    return EncodedUpdate(message.client_id, payload, len(payload))


@pytest.mark.parametrize("offset", [0, 17, 100, 191])
def test_tampered_ciphertext_fails_with_a_clear_error(
    small_keys: PaillierKeys, offset: int
) -> None:
    channel = _channel(small_keys, 3)
    messages = _messages(channel)
    payload = bytearray(messages[1].payload)
    payload[HEADER_BYTES + small_keys.ciphertext_bytes + offset] ^= 0x01  # second ciphertext
    messages[1] = _replace(messages[1], bytes(payload))
    # A flipped bit makes the ciphertext decrypt to a near-uniform number modulo n, which fails
    # the packed range check; near the top it may also leave the residues modulo n².
    caught = (AggregationError, BadClientUpdate)
    with pytest.raises(caught, match=r"does not decode.*tampered|client 1: .* not a residue"):
        channel.aggregate(messages)


def test_ciphertext_from_another_key_fails_with_a_clear_error(small_keys: PaillierKeys) -> None:
    channel = _channel(small_keys, 3)
    stranger = _channel(PaillierKeys.generate(768, allow_insecure=True), 3)
    messages = _messages(channel)
    messages[2] = stranger.encode(2, np.zeros(300, np.float32))
    with pytest.raises(BadClientUpdate, match="client 2: ciphertext was made under another key"):
        channel.aggregate(messages)
    # With the header forged to name our key, the foreign ciphertexts are either out of range
    # modulo our n² (the server refuses them) or decrypt to garbage (the range check does).
    forged = (messages[0].payload[:HEADER_BYTES]
              + messages[2].payload[HEADER_BYTES:])
    messages[2] = _replace(messages[2], forged)
    caught = (AggregationError, BadClientUpdate)
    with pytest.raises(caught, match=r"does not decode|client 2: .* not a residue modulo n²"):
        channel.aggregate(messages)


def test_malformed_messages_name_the_client(small_keys: PaillierKeys) -> None:
    channel = _channel(small_keys, 3)
    messages = _messages(channel)
    messages[1] = _replace(messages[1], messages[1].payload[:-5])
    with pytest.raises(BadClientUpdate, match=r"client 1: paillier: \d+ bytes of ciphertext"):
        channel.aggregate(messages)
    messages = _messages(channel)
    messages[0] = channel.encode(0, np.zeros(299, np.float32))
    with pytest.raises(BadClientUpdate, match=r"client 1: 300 values in \d+ ciphertexts, "
                                              r"others sent 299"):
        channel.aggregate(messages)
    with pytest.raises(AggregationError, match="no client update"):
        channel.aggregate({})


def test_randomness_pool_is_refilled_each_round(small_keys: PaillierKeys) -> None:
    from fedbench.fl.context import RoundContext

    channel = _channel(small_keys, 2, randomness_pool=6)
    ctx = RoundContext(round=0, sampled=[0, 1], num_clients=2, expected_clients=2, dim=300,
                       streams=Streams(SEED))
    channel.begin_round(ctx)
    messages = {c: channel.encode(c, np.full(300, 0.5, np.float32)) for c in (0, 1)}
    assert channel._encryptor is not None and channel._encryptor.pool_size == 0  # 6 used
    np.testing.assert_allclose(channel.aggregate(messages).total, 1.0, atol=2 / 32767)
    channel.begin_round(ctx)
    assert channel._encryptor.pool_size == 6


def test_defense_refuses_short_keys_unless_allowed() -> None:
    with pytest.raises(ConfigError, match=r"key_bits = 1024 is insecure"):
        DEFENSES.create("paillier", {"key_bits": 1024})
    defense = DEFENSES.create("paillier", {"key_bits": 1024, "allow_insecure": True})
    assert defense.insecure == "Paillier key of 1024 bits (< 2048)"
    assert DEFENSES.create("paillier").insecure is None
    with pytest.raises(ConfigError, match="unknown parameter 'bit'"):
        DEFENSES.create("paillier", {"bit": 8})
    with pytest.raises(ConfigError, match="clip must be positive"):
        PaillierAggregation(clip=0.0)


def test_fedavg_reaches_plaintext_accuracy(
    run_digits: Callable[[list[Any]], dict[str, Any]], plaintext_digits: dict[str, Any]
) -> None:
    packed = run_digits(["paillier"])
    per_value = run_digits(
        [{"name": "paillier", "mode": "per_value", "key_bits": 768, "allow_insecure": True}]
    )
    for result in (packed, per_value):
        # 3 rounds of sums that each differ by at most 5 quantization steps per coordinate.
        assert abs(result["accuracy"] - plaintext_digits["accuracy"]) <= 0.01
        assert result["clipped_fraction"] == 0.0
        assert 0 < result["he_max_abs_error"] <= result["he_error_bound"]
    assert packed["upload_bytes_per_param"] <= 8
    assert packed["insecure"] is None
    assert per_value["upload_bytes_per_param"] > 192  # one 768-bit-key ciphertext per value
    assert per_value["insecure"] == "paillier: Paillier key of 768 bits (< 2048)"


@pytest.mark.slow
def test_fedavg_per_value_at_2048_bits(
    run_digits: Callable[[list[Any]], dict[str, Any]], plaintext_digits: dict[str, Any]
) -> None:
    result = run_digits([{"name": "paillier", "mode": "per_value"}])
    assert abs(result["accuracy"] - plaintext_digits["accuracy"]) <= 0.01
    assert result["upload_bytes_per_param"] > 512
