"""The channel: how client updates travel to the server and are summed there.

The channel is the one stage that decides what the server can see of a single client. The
plaintext channel reveals every update; secure aggregation and homomorphic encryption reveal
only the sum. ``aggregate`` is the server's hot path that benchmarks/ times.

Updates reach a channel one client at a time (``encode``), or, where the channel implements
``encode_chunk``, as a chunk of clients' updates stacked in one array: a channel whose encoding
is elementwise (the plaintext channel) encodes and sums a thousand small updates in a few array
operations instead of a thousand rounds of Python. Its messages then arrive as
:class:`ChunkMessages`, which reads as the same per-client messages.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.context import RoundContext
from fedbench.fl.stages import Stage


@dataclass(frozen=True)
class EncodedUpdate:
    """One client's message on the wire.

    Attributes:
        client_id: The sender.
        payload: What the server receives (a vector, masked vector, ciphertexts, bytes...).
        nbytes: Its serialized size in bytes.
    """

    client_id: int
    payload: Any
    nbytes: int


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk of clients' messages on the wire, stacked.

    Attributes:
        client_ids: The senders, in row order.
        payload: Their payloads, one row each (row i is what ``encode`` would send for
            ``client_ids[i]``).
        nbytes: The serialized size of each message in bytes (an elementwise encoding of
            updates of one length gives them all one size).
    """

    client_ids: tuple[int, ...]
    payload: np.ndarray
    nbytes: int

    def message(self, row: int) -> EncodedUpdate:
        """Row ``row`` as the per-client message (a view of the payload, no copy)."""
        return EncodedUpdate(self.client_ids[row], self.payload[row], self.nbytes)


class ChunkMessages(Mapping[int, EncodedUpdate]):
    """The messages of a round that arrived in chunks, by client, in arrival order.

    Read as a mapping it holds what per-client ``encode`` would have produced; the per-client
    messages are made only when read (the transcript reads them for the rounds it keeps): a
    thousand small objects a round cost more than the sum of their payloads.

    Args:
        chunks: The encoded chunks, in arrival order (each client in one of them).
    """

    def __init__(self, chunks: Sequence[EncodedChunk]) -> None:
        self.chunks = tuple(chunks)
        self._rows: dict[int, tuple[EncodedChunk, int]] | None = None

    def __getitem__(self, client_id: int) -> EncodedUpdate:
        if self._rows is None:
            self._rows = {c: (chunk, i) for chunk in self.chunks
                          for i, c in enumerate(chunk.client_ids)}
        chunk, row = self._rows[client_id]
        return chunk.message(row)

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks:
            yield from chunk.client_ids

    def __len__(self) -> int:
        return sum(len(chunk.client_ids) for chunk in self.chunks)

    def upload_bytes(self) -> dict[int, int]:
        """Each sender's message size, without making its message."""
        sizes: dict[int, int] = {}
        for chunk in self.chunks:
            sizes.update(dict.fromkeys(chunk.client_ids, chunk.nbytes))
        return sizes


@dataclass(frozen=True)
class AggregateResult:
    """The server's result for one round.

    Attributes:
        total: Sum of the contributing clients' updates (float64, decoded).
        contributors: Clients whose updates are in ``total``.
        dropped: Clients that dropped out or were excluded, with the reason or protocol stage.
        upload_bytes: Bytes each client sent in this round, all protocol messages included.
        download_bytes: Bytes each client received from the channel in this round (beyond the
            model broadcast), e.g. other clients' public keys or the encrypted aggregate.
        stats: Channel-specific numbers (e.g. quantization error, maximum decoding error).
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class Channel(Stage):
    """Base class of channels.

    A round calls ``begin_round`` once, ``encode`` once per client that finished training, then
    ``aggregate`` once with the messages that arrived. A channel that cannot produce the exact sum
    raises :class:`~fedbench.errors.AggregationError` and returns nothing.

    A channel that implements ``encode_chunk`` (see :func:`encodes_chunks`) may be given a
    chunk of clients' updates at once instead (the vectorized engine's chunks); ``aggregate``
    then receives :class:`ChunkMessages`.

    Attributes:
        reveals_client_updates: Whether the server can read a single client's update; when False
            the Transcript's ``client_update`` view is closed.
    """

    name: ClassVar[str] = "channel"
    reveals_client_updates: ClassVar[bool] = False

    def begin_round(self, ctx: RoundContext) -> None:
        """Per-round set-up (key exchange...) for the clients in ``ctx.sampled``."""

    @abstractmethod
    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        """Client side: turn a float32 update into the message sent to the server."""

    def encode_chunk(self, client_ids: Sequence[int], updates: np.ndarray) -> EncodedChunk:
        """Client side, for a chunk of clients at once: the float32 updates ``updates`` (row i
        is ``client_ids[i]``'s) as their messages, each exactly what ``encode`` would send.

        Implement it only where that holds without per-client state (an elementwise,
        deterministic encoding); the default is the per-client path.
        """
        raise NotImplementedError(f"{type(self).__name__} encodes one client at a time")

    @abstractmethod
    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        """Server side: the sum of the updates in ``messages``."""

    def reveal(self, message: EncodedUpdate) -> np.ndarray | None:
        """What the server can read of one message: the update, or None if it is hidden."""
        return None

    def reveal_with_client_secrets(self, message: EncodedUpdate) -> np.ndarray | None:
        """What a server helped by one colluding client (holding that client's secrets) reads
        of another client's message; by default what the server reads alone."""
        return self.reveal(message)

    def keep_contributions(self, clients: frozenset[int]) -> None:
        """Keep what each of ``clients`` adds to the sum (colluders subtract it); a channel
        whose contribution is the update itself has nothing to keep."""

    def contribution(self, client_id: int) -> np.ndarray | None:
        """What ``client_id`` (a kept client) added to this round's sum, as it can compute
        it, or None when that is its update as sent to ``encode``."""
        return None

    def expect_malicious_server(self) -> None:
        """Turn on the checks this channel has against a server that deviates (secure
        aggregation's consistency check); a channel without such checks has nothing to do."""


def encodes_chunks(channel: Channel) -> bool:
    """Whether ``channel`` takes chunks of clients at once: it implements ``encode_chunk``, in
    the class whose ``encode`` it uses or below it. A subclass that replaces ``encode`` alone
    keeps the per-client path, since the ``encode_chunk`` it inherits would skip its change."""
    cls = type(channel)
    chunked = _defined_by(cls, "encode_chunk")
    return chunked is not Channel and issubclass(chunked, _defined_by(cls, "encode"))


def _defined_by(cls: type, name: str) -> type:
    """The class in ``cls``'s method resolution order that defines attribute ``name``."""
    return next(c for c in cls.__mro__ if name in vars(c))


def check_update(client_id: int, update: np.ndarray, dim: int) -> None:
    """Reject a malformed update: wrong shape or dtype, NaN or infinite entries."""
    if update.ndim != 1 or update.shape[0] != dim:
        raise BadClientUpdate(client_id, f"update has shape {update.shape}, expected ({dim},)")
    if update.dtype.kind != "f":  # numpy's floating types, without issubdtype's slow path
        raise BadClientUpdate(client_id, f"update has dtype {update.dtype}, expected float")
    finite = np.isfinite(update)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise BadClientUpdate(
            client_id, f"update has {int((~finite).sum())} NaN/Inf entries (first at index {bad})"
        )


def check_chunk(
    client_ids: Sequence[int], updates: np.ndarray, dim: int
) -> dict[int, BadClientUpdate]:
    """:func:`check_update` of every row of a chunk (row i: ``client_ids[i]``'s update), in
    one pass over a well-formed chunk: the rows it rejects, with their errors, in row order."""
    if updates.ndim == 2 and updates.shape[1] == dim and updates.dtype.kind == "f":
        # Every row has the right shape and dtype: only a non-finite entry can reject one, and
        # a row holding one sums to NaN or an infinity (inf + x = inf, inf - inf = NaN). The
        # row sums read the chunk once without a chunk-sized temporary; a finite row whose sum
        # overflows is a suspect that check_update clears.
        sums = np.einsum("ij->i", updates)
        suspects: Sequence[int] = np.flatnonzero(~np.isfinite(sums)).tolist()
    else:
        suspects = range(len(client_ids))
    errors: dict[int, BadClientUpdate] = {}
    for row in suspects:
        try:
            check_update(client_ids[row], updates[row], dim)
        except BadClientUpdate as err:
            errors[row] = err
    return errors


def _check_finite_sum(total: np.ndarray, contributors: tuple[int, ...]) -> None:
    """Finite updates can still overflow float32 when summed: say so here, at the sum, rather
    than as a NaN test loss rounds later."""
    if np.isfinite(total).all():
        return
    bad = int(np.flatnonzero(~np.isfinite(total))[0])
    raise AggregationError(
        f"plaintext: the float32 sum of clients {list(contributors)} overflows "
        f"({int((~np.isfinite(total)).sum())} coordinates, the first at index {bad})"
    )


class PlaintextChannel(Channel):
    """No protection: the server receives every update in the clear and sums them."""

    name: ClassVar[str] = "plaintext"
    reveals_client_updates: ClassVar[bool] = True

    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        payload = np.ascontiguousarray(update, dtype=np.float32)
        return EncodedUpdate(client_id, payload, payload.nbytes)

    def encode_chunk(self, client_ids: Sequence[int], updates: np.ndarray) -> EncodedChunk:
        payload = np.ascontiguousarray(updates, dtype=np.float32)
        return EncodedChunk(tuple(client_ids), payload, payload[0].nbytes)

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        if not messages:
            raise AggregationError("plaintext: no client update arrived this round")
        if isinstance(messages, ChunkMessages):
            return self._aggregate_chunks(messages)
        ids = tuple(messages)
        # A float32 accumulator, as a plaintext FL server would use: rounding error ~n·2⁻²⁴
        # relative, far below any update's scale, at the speed of the float32 sum.
        total = np.array(messages[ids[0]].payload, dtype=np.float32)
        with np.errstate(over="ignore"):  # an overflow is detected and named just below
            for cid in ids[1:]:
                np.add(total, messages[cid].payload, out=total)
        _check_finite_sum(total, ids)
        return AggregateResult(
            total=total.astype(np.float64),
            contributors=ids,
            upload_bytes={i: messages[i].nbytes for i in ids},
        )

    def _aggregate_chunks(self, messages: ChunkMessages) -> AggregateResult:
        """The same float32 sum as the per-client loop, bit for bit, a chunk at a time."""
        ids = tuple(messages)
        total = None
        with np.errstate(over="ignore"):  # an overflow is detected and named just below
            for chunk in messages.chunks:
                total = _add_rows(total, chunk.payload)
        assert total is not None  # messages is not empty
        _check_finite_sum(total, ids)
        return AggregateResult(
            total=total.astype(np.float64),
            contributors=ids,
            upload_bytes=messages.upload_bytes(),
        )

    def reveal(self, message: EncodedUpdate) -> np.ndarray | None:
        return np.asarray(message.payload)


def _add_rows(total: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """``total`` (a float32 accumulator, or None to start one) plus each of ``rows`` in order,
    as the per-client loop adds them."""
    start = 0
    if total is None:
        if rows.ndim == 2 and rows.shape[1] > 1 and rows.flags.c_contiguous:
            # numpy reduces the leading axis of a C-contiguous array row after row into one
            # accumulator: the loop's additions in the loop's order. (Rows of one number it
            # may sum pairwise instead; those take the loop. test_channel checks both.)
            summed: np.ndarray = np.add.reduce(rows, axis=0, dtype=np.float32)
            return summed
        total, start = np.array(rows[0], dtype=np.float32), 1
    for row in rows[start:]:
        np.add(total, row, out=total)
    return total
