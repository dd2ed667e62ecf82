"""What the homomorphic-encryption channels share: client, server and key-holder steps.

An encrypted round has three parties' steps, which benchmarks time separately:

1. ``encode`` (each client): quantize or encode, encrypt, serialize to bytes;
2. ``server_sum`` (server, public key only): deserialize every message and add the ciphertexts,
   serialize the encrypted sum;
3. ``decode`` (the clients, who share the secret key): decrypt and decode the sum.

``aggregate`` runs 2 and 3 and reports the bytes each client sent and downloaded, plus the
largest decoding error against the plaintext sum. That reference sum is measurement
instrumentation kept next to the channel (the plaintext updates pass through ``encode``
anyway); the server's code path never reads it.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedbench.errors import AggregationError, BadClientUpdate
from fedbench.fl.channel import AggregateResult, Channel, EncodedUpdate
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.seeding import Streams


def max_clients(run: RunInfo) -> int:
    """The most clients one round can sum: all of them under Poisson sampling."""
    if run.sampling == "poisson":
        return run.num_clients
    return math.ceil(run.expected_clients)


class EncryptedChannel(Channel):
    """Base of the HE channels: the server sees ciphertexts only.

    Attributes:
        history: The ``stats`` of every aggregated round, in order.
    """

    reveals_client_updates: ClassVar[bool] = False

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._streams: Streams | None = None
        self._entropy = np.random.default_rng()
        self._round = 0
        self._reference: np.ndarray | None = None
        self._reference_ids: set[int] = set()

    def setup(self, run: RunInfo) -> None:
        """Generate keys and size the encoding for the run's largest possible round."""
        self.configure(clients=max_clients(run), streams=run.streams)

    @abstractmethod
    def configure(self, *, clients: int, streams: Streams | None = None) -> None:
        """Generate keys (unless given) and size the encoding for sums of ``clients``.

        Args:
            clients: The most clients one aggregate will sum.
            streams: Random streams for the encoding's randomness (e.g. stochastic rounding);
                without them a fresh OS-seeded generator is used.
        """

    @abstractmethod
    def encrypt(self, client_id: int, update: np.ndarray) -> bytes:
        """Client side: the serialized message for ``update``."""

    @abstractmethod
    def server_sum(self, messages: Mapping[int, EncodedUpdate]) -> bytes:
        """Server side: the serialized encrypted sum of the messages.

        Raises:
            BadClientUpdate: Naming the client whose message cannot be read.
            AggregationError: If the messages cannot be summed together.
        """

    @abstractmethod
    def decode(self, aggregate: bytes) -> np.ndarray:
        """Key-holder side: the float64 sum from the encrypted sum.

        Raises:
            AggregationError: If the sum cannot be decrypted or fails its integrity check.
        """

    @abstractmethod
    def error_bound(self, clients: int) -> float:
        """A-priori bound on |decoded − exact sum of the encoded values| per coordinate."""

    def round_stats(self) -> dict[str, float]:
        """Channel-specific numbers for the round just aggregated (then reset)."""
        return {}

    def rng(self, client_id: int) -> np.random.Generator:
        """The encoding randomness of ``client_id`` in the current round."""
        if self._streams is None:
            return self._entropy
        return self._streams.numpy("he_encoding", self._round, client_id)

    def begin_round(self, ctx: RoundContext) -> None:
        self._round = ctx.round
        self._reference = None
        self._reference_ids = set()

    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        vector = np.asarray(update)
        if vector.ndim != 1:
            raise BadClientUpdate(client_id, f"update has shape {vector.shape}, expected 1-D")
        payload = self.encrypt(client_id, vector)
        if self._reference is None or self._reference.shape != vector.shape:
            self._reference = np.zeros(vector.shape, dtype=np.float64)
            self._reference_ids = set()
        self._reference += vector
        self._reference_ids.add(client_id)
        return EncodedUpdate(client_id, payload, len(payload))

    def reveal_with_client_secrets(self, message: EncodedUpdate) -> np.ndarray | None:
        """Every client holds the one secret key, so any colluding client decrypts any other
        client's message: a single ciphertext is a sum of one client (its header says so)."""
        return self.decode(message.payload)

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        if not messages:
            raise AggregationError(f"{self.name}: no client update arrived this round")
        encrypted = self.server_sum(messages)
        total = self.decode(encrypted)
        ids = tuple(messages)
        stats = {"error_bound": self.error_bound(len(ids)), **self.round_stats()}
        if self._reference is not None and self._reference_ids == set(ids):
            stats["max_abs_error"] = float(np.abs(total - self._reference).max(initial=0.0))
        self._reference = None
        self._reference_ids = set()
        self.history.append(stats)
        return AggregateResult(
            total=total,
            contributors=ids,
            upload_bytes={i: messages[i].nbytes for i in ids},
            download_bytes=dict.fromkeys(ids, len(encrypted)),
            stats=stats,
        )
