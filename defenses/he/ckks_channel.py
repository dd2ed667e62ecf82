"""The ``ckks`` defense: CKKS-encrypted aggregation with TenSEAL.

Clients encrypt their float update under the shared CKKS key (no quantization: CKKS encodes
real numbers approximately), the server adds the ciphertexts in place with the public context
and returns the encrypted sum, and the clients decrypt it. The decoding error is bounded a
priori (:meth:`~fedbench.defenses.he.ckks.CKKSParams.error_bound`) and measured every round.

Example:
    >>> import numpy as np
    >>> channel = CKKSChannel(params=PRESETS["n4096"])
    >>> channel.configure(clients=2)
    >>> messages = {i: channel.encode(i, np.full(3000, 0.25, np.float32)) for i in (0, 1)}
    >>> result = channel.aggregate(messages)
    >>> round(float(result.total[0]), 6), result.stats["max_abs_error"] < 1e-6
    (0.5, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
import tenseal as ts

from fedbench.defense import Defense
from fedbench.defenses.he.ckks import (
    PRESETS,
    CKKSKeys,
    CKKSParams,
    add_chunks,
    chunk_count,
    decrypt_chunks,
    encrypt_chunks,
)
from fedbench.defenses.he.encrypted import EncryptedChannel
from fedbench.defenses.he.envelope import (
    HEADER_BYTES,
    EnvelopeError,
    Header,
    Scheme,
    read_header,
)
from fedbench.errors import AggregationError, BadClientUpdate, ConfigError
from fedbench.fl.channel import EncodedUpdate
from fedbench.metrics.base import Metric
from fedbench.registry import register_defense
from fedbench.seeding import Streams

_LENGTH_BYTES = 4  # each ciphertext is preceded by its length (big-endian uint32)


def frame(head: Header, blobs: list[bytes]) -> bytes:
    """Header, then each serialized ciphertext preceded by its length."""
    parts = [head.pack()]
    for blob in blobs:
        parts += [len(blob).to_bytes(_LENGTH_BYTES, "big"), blob]
    return b"".join(parts)


def unframe(data: bytes, chunks: int) -> list[bytes]:
    """The ciphertext blobs of a framed message (``chunks`` of them, nothing left over)."""
    out = []
    offset = HEADER_BYTES
    for index in range(chunks):
        size = int.from_bytes(data[offset : offset + _LENGTH_BYTES], "big")
        offset += _LENGTH_BYTES
        if size == 0 or offset + size > len(data):
            raise EnvelopeError(f"ciphertext {index} is truncated")
        out.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise EnvelopeError(f"{len(data) - offset} bytes follow the last ciphertext")
    return out


class CKKSChannel(EncryptedChannel):
    """CKKS aggregation channel.

    Args:
        params: Encryption parameters (checked for 128-bit security).
        keys: The clients' keys; generated in :meth:`configure` when None.
    """

    name: ClassVar[str] = "ckks"

    def __init__(
        self, *, params: CKKSParams = PRESETS["n8192"], keys: CKKSKeys | None = None
    ) -> None:
        super().__init__()
        params.check()
        self.params = keys.params if keys is not None else params
        self.keys = keys
        self.clients = 1

    def configure(self, *, clients: int, streams: Streams | None = None) -> None:
        if self.keys is None:
            self.keys = CKKSKeys.generate(self.params)
        self.clients = clients
        self._streams = streams

    def _keys(self) -> CKKSKeys:
        if self.keys is None:
            raise RuntimeError("ckks: call configure() (or setup) before use")
        return self.keys

    def value_limit(self) -> float:
        """Largest |value| a client may send (so that the sum cannot wrap)."""
        return self.params.value_limit(self.clients)

    def encrypt(self, client_id: int, update: np.ndarray) -> bytes:
        keys = self._keys()
        largest = float(np.abs(update).max(initial=0.0))
        if largest > self.value_limit():
            raise BadClientUpdate(
                client_id, f"|value| up to {largest:.3g} exceeds the CKKS limit "
                f"{self.value_limit():.3g} for sums of {self.clients} clients"
            )
        blobs = encrypt_chunks(keys, update)
        return frame(Header(Scheme.CKKS, keys.key_id, update.size, 1, len(blobs)), blobs)

    def server_sum(self, messages: Mapping[int, EncodedUpdate]) -> bytes:
        keys = self._keys()
        if len(messages) > self.clients:
            raise AggregationError(
                f"ckks: {len(messages)} messages, the value limit was set for sums of at most "
                f"{self.clients} clients"
            )
        acc: list[ts.CKKSVector] | None = None
        first: Header | None = None
        for cid, message in messages.items():
            where = f"client {cid}"
            try:
                head = read_header(message.payload, Scheme.CKKS, keys.key_id, where=where)
                if head.clients != 1:
                    raise EnvelopeError(f"message claims to sum {head.clients} clients")
                if head.chunks != chunk_count(keys.params, head.dim):
                    raise EnvelopeError(f"{head.chunks} ciphertexts for {head.dim} values")
                if first is not None and head.dim != first.dim:
                    raise EnvelopeError(f"{head.dim} values, others sent {first.dim}")
                acc = add_chunks(keys, acc, unframe(message.payload, head.chunks))
            except ValueError as err:
                raise BadClientUpdate(cid, str(err).removeprefix(f"{where}: ")) from None
            first = first or head
        assert first is not None and acc is not None
        head = Header(Scheme.CKKS, keys.key_id, first.dim, len(messages), len(acc))
        return frame(head, [vector.serialize() for vector in acc])

    def decode(self, aggregate: bytes) -> np.ndarray:
        keys = self._keys()
        try:
            head = read_header(aggregate, Scheme.CKKS, keys.key_id, where="aggregate")
            blobs = unframe(aggregate, head.chunks)
            return decrypt_chunks(keys, blobs, dim=head.dim, clients=head.clients)
        except ValueError as err:
            reason = str(err).removeprefix("ckks: ")
            raise AggregationError(f"ckks: the encrypted sum does not decode: {reason}") from None

    def error_bound(self, clients: int) -> float:
        return self.params.error_bound(clients)


@register_defense("ckks")
class CKKSAggregation(Defense):
    """CKKS-encrypted aggregation (TenSEAL) at 128-bit security.

    The clients share a CKKS key; the server holds a public context without secret, Galois or
    relinearisation keys and adds ciphertexts. Decoding is approximate: the error is bounded a
    priori and measured against the plaintext sum every round.

    Args:
        preset: "n8192" (N = 8192, 4,096 slots, coefficient modulus [60, 40] bits), "n4096"
            ([60, 49]) or "n16384" ([60, 60]); all with scale 2^40.
        poly_modulus_degree: Overrides the preset's ring degree (with ``coeff_mod_bit_sizes``).
        coeff_mod_bit_sizes: Overrides the preset's primes (data primes, then the special one).
        scale_bits: Overrides the preset's log2 scale.

    Example:
        >>> CKKSAggregation(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60, 60, 60])
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fedbench.errors.ConfigError: ckks: coeff_mod_bit_sizes [60, 60, 60, 60] sum to 240 bits, ...
    """

    def __init__(
        self,
        *,
        preset: Literal["n4096", "n8192", "n16384"] = "n8192",
        poly_modulus_degree: int | None = None,
        coeff_mod_bit_sizes: list[int] | None = None,
        scale_bits: int | None = None,
    ) -> None:
        base = PRESETS[preset]
        if (poly_modulus_degree is None) != (coeff_mod_bit_sizes is None):
            raise ConfigError(
                "ckks: set poly_modulus_degree and coeff_mod_bit_sizes together, or neither"
            )
        params = CKKSParams(
            poly_modulus_degree or base.poly_modulus_degree,
            tuple(coeff_mod_bit_sizes or base.coeff_mod_bit_sizes),
            scale_bits if scale_bits is not None else base.scale_bits,
        )
        self.channel: CKKSChannel = CKKSChannel(params=params)
        # Decoding adds the encryption noise, and TenSEAL exposes no seed for it.
        self.irreproducible = "SEAL draws CKKS encryption noise from the OS (TenSEAL has no seed)"

    def metrics(self) -> list[Metric]:
        history = self.channel.history
        if not history:
            return []
        errors = [s["max_abs_error"] for s in history if "max_abs_error" in s]
        return [
            Metric("he_max_abs_error", max(errors) if errors else None, False, kind="utility",
                   note="largest |decoded sum − plaintext sum| over rounds (CKKS noise)"),
            Metric("he_error_bound", max(s["error_bound"] for s in history), None,
                   note="a-priori CKKS decoding error bound of one round's sum"),
            Metric("values_per_ciphertext", self.channel.params.slots - 1, None),
        ]
