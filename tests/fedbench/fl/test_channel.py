"""Tests for fedbench.fl.channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.channel import (
    AggregateResult,
    Channel,
    ChunkMessages,
    EncodedChunk,
    EncodedUpdate,
    PlaintextChannel,
    check_chunk,
    check_update,
    encodes_chunks,
)


def test_plaintext_sum_and_bytes() -> None:
    rng = np.random.default_rng(0)
    updates = {i: rng.standard_normal(50).astype(np.float32) for i in (2, 5, 9)}
    channel = PlaintextChannel()
    messages = {i: channel.encode(i, u) for i, u in updates.items()}
    result = channel.aggregate(messages)
    exact = sum(u.astype(np.float64) for u in updates.values())
    np.testing.assert_allclose(result.total, exact, rtol=1e-6, atol=1e-6)  # float32 accumulator
    assert result.contributors == (2, 5, 9)
    assert result.upload_bytes == {2: 200, 5: 200, 9: 200}
    np.testing.assert_array_equal(channel.reveal(messages[5]), updates[5])


def test_empty_round_is_an_aggregation_error() -> None:
    with pytest.raises(AggregationError, match="no client update"):
        PlaintextChannel().aggregate({})


@pytest.mark.parametrize(
    "update, message",
    [
        (np.zeros(4, dtype=np.float32), r"shape \(4,\), expected \(5,\)"),
        (np.zeros((5, 1), dtype=np.float32), r"shape \(5, 1\)"),
        (np.zeros(5, dtype=np.int64), "dtype int64"),
        (
            np.array([0, np.nan, 0, np.inf, 0], dtype=np.float32),
            "2 NaN/Inf entries .first at index 1",
        ),
    ],
)
def test_check_update_names_client_and_problem(update: np.ndarray, message: str) -> None:
    with pytest.raises(BadClientUpdate, match=f"client 7: .*{message}"):
        check_update(7, update, 5)


@pytest.mark.parametrize(
    "update",
    [
        np.array([np.inf, -np.inf, 0, 0, 0], dtype=np.float32),  # the sum is NaN, not cancelled
        np.array([np.nan, 0, 0, 0, 0], dtype=np.float64),
        np.array([np.finfo(np.float32).max] * 4 + [np.inf], dtype=np.float32),
    ],
)
def test_check_update_rejects_every_non_finite_pattern(update: np.ndarray) -> None:
    with pytest.raises(BadClientUpdate, match="NaN/Inf"):
        check_update(0, update, 5)



def _chunks(rows: np.ndarray, sizes: list[int]) -> ChunkMessages:
    """``rows`` encoded by the plaintext channel in chunks of ``sizes`` (clients 10, 11, ...)."""
    channel, chunks, start = PlaintextChannel(), [], 0
    for size in sizes:
        ids = list(range(10 + start, 10 + start + size))
        chunks.append(channel.encode_chunk(ids, rows[start : start + size]))
        start += size
    return ChunkMessages(chunks)


@pytest.mark.parametrize("dim", [1, 2, 7, 650, 4810])
@pytest.mark.parametrize("sizes", [[1], [9], [1000], [4, 1, 5], [300, 700]])
def test_a_chunked_sum_is_the_per_client_sum_bit_for_bit(dim: int, sizes: list[int]) -> None:
    rng = np.random.default_rng(dim)
    n = sum(sizes)
    # magnitudes spread over eight orders, so that any other order of additions rounds apart
    rows = (rng.standard_normal((n, dim)) * 10.0 ** rng.uniform(-4, 4, (n, 1))).astype(np.float32)
    channel = PlaintextChannel()
    each = channel.aggregate({10 + i: channel.encode(10 + i, row) for i, row in enumerate(rows)})
    chunked = channel.aggregate(_chunks(rows, sizes))
    np.testing.assert_array_equal(chunked.total, each.total)
    assert chunked.contributors == each.contributors
    assert chunked.upload_bytes == each.upload_bytes == {10 + i: 4 * dim for i in range(n)}


def test_chunk_messages_read_as_the_per_client_messages() -> None:
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    messages = _chunks(rows, [2, 3, 1])
    channel = PlaintextChannel()
    each = {10 + i: channel.encode(10 + i, row) for i, row in enumerate(rows)}
    assert list(messages) == list(each) and len(messages) == 6 and 13 in messages
    for cid, message in each.items():
        assert messages[cid].client_id == cid and messages[cid].nbytes == message.nbytes
        np.testing.assert_array_equal(channel.reveal(messages[cid]), message.payload)
    assert messages.upload_bytes() == {c: 16 for c in each}
    with pytest.raises(KeyError):
        messages[9]


def test_a_chunked_sum_that_overflows_is_named_as_the_per_client_one() -> None:
    rows = np.full((3, 4), 3e38, dtype=np.float32)
    with pytest.raises(AggregationError, match=r"clients \[10, 11, 12\] overflows .4 coord"):
        PlaintextChannel().aggregate(_chunks(rows, [2, 1]))


@pytest.mark.parametrize(
    "chunk",
    [
        np.array([[0, 1, 2, 3, 4], [0, np.nan, 0, np.inf, 0], [1, 1, 1, 1, 1],
                  [np.inf, -np.inf, 0, 0, 0]], dtype=np.float32),
        np.array([[np.finfo(np.float32).max] * 5] * 3, dtype=np.float32),  # rows sum to inf
        np.zeros((3, 4), dtype=np.float32),  # every row one entry short
        np.zeros((2, 5), dtype=np.int64),
        np.zeros((2, 5, 1), dtype=np.float32),
    ],
)
def test_check_chunk_rejects_the_rows_check_update_rejects(chunk: np.ndarray) -> None:
    ids = [20 + i for i in range(len(chunk))]
    expected = {}
    for row, cid in enumerate(ids):
        try:
            check_update(cid, chunk[row], 5)
        except BadClientUpdate as err:
            expected[row] = str(err)
    assert {row: str(err) for row, err in check_chunk(ids, chunk, 5).items()} == expected


class _OwnEncoding(PlaintextChannel):
    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        return EncodedUpdate(client_id, update * 2, update.nbytes)


class _OwnEncodingChunked(_OwnEncoding):
    def encode_chunk(self, client_ids: Sequence[int], updates: np.ndarray) -> EncodedChunk:
        return EncodedChunk(tuple(client_ids), updates * 2, updates[0].nbytes)


class _OwnSum(PlaintextChannel):
    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        return super().aggregate(messages)


class _PerClientOnly(Channel):
    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        return EncodedUpdate(client_id, update, update.nbytes)

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        return AggregateResult(np.zeros(1), tuple(messages))


def test_a_channel_encodes_chunks_where_its_chunk_encoding_is_its_encoding() -> None:
    assert encodes_chunks(PlaintextChannel())
    assert not encodes_chunks(_OwnEncoding())  # its encode_chunk would skip its encode
    assert encodes_chunks(_OwnEncodingChunked())
    assert encodes_chunks(_OwnSum())  # its aggregate reads ChunkMessages like any mapping
    assert not encodes_chunks(_PerClientOnly())  # the default: one client at a time
    with pytest.raises(NotImplementedError, match="one client at a time"):
        _PerClientOnly().encode_chunk([0], np.zeros((1, 1), dtype=np.float32))
