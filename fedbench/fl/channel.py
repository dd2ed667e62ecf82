"""The channel: how client updates travel to the server and are summed there.

The channel is the one stage that decides what the server can see of a single client. The
plaintext channel reveals every update; secure aggregation and homomorphic encryption reveal
only the sum. ``aggregate`` is the server's hot path that benchmarks/ times.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
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

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        if not messages:
            raise AggregationError("plaintext: no client update arrived this round")
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

    def reveal(self, message: EncodedUpdate) -> np.ndarray | None:
        return np.asarray(message.payload)
