"""The envelope of an encrypted message on the wire: a fixed header before the ciphertexts.

Every client message and every encrypted aggregate starts with the same 38-byte header, so the
receiver can refuse bytes that are not meant for it before touching a ciphertext: wrong scheme,
a key id that is not its key's (another context), a different vector length, or a body whose
length does not match what the header announces (truncated or padded in transit).

Example:
    >>> head = Header(Scheme.PAILLIER, key_id=b"k" * 16, dim=10, clients=1, chunks=1)
    >>> blob = head.pack() + b"body"
    >>> read_header(blob, Scheme.PAILLIER, b"k" * 16, where="client 3").dim
    10
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"FBHE"
VERSION = 1
KEY_ID_BYTES = 16
_LAYOUT = struct.Struct(">4sBB16sQII")  # magic, version, scheme, key id, dim, clients, chunks
HEADER_BYTES = _LAYOUT.size


class Scheme(IntEnum):
    """The encryption scheme of a message."""

    PAILLIER = 1
    CKKS = 2


class EnvelopeError(ValueError):
    """A message cannot be read: bad header, foreign key, wrong length or corrupt body."""


@dataclass(frozen=True)
class Header:
    """What precedes the ciphertexts of one message.

    Attributes:
        scheme: The encryption scheme.
        key_id: Fingerprint of the public key (or public context) the message was made under.
        dim: Length of the encrypted vector.
        clients: How many client vectors the message sums (1 for a client's message).
        chunks: Number of ciphertexts that follow.
    """

    scheme: Scheme
    key_id: bytes
    dim: int
    clients: int
    chunks: int

    def pack(self) -> bytes:
        """The header's bytes."""
        return _LAYOUT.pack(
            MAGIC, VERSION, int(self.scheme), self.key_id, self.dim, self.clients, self.chunks
        )


def read_header(data: bytes, scheme: Scheme, key_id: bytes, *, where: str) -> Header:
    """Parse and check the header at the start of ``data``.

    Args:
        data: The message.
        scheme: The scheme the receiver expects.
        key_id: The fingerprint of the receiver's key.
        where: Who sent it, for error messages ("client 3").

    Raises:
        EnvelopeError: Naming ``where`` and the problem.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise EnvelopeError(f"{where}: message is {type(data).__name__}, expected bytes")
    if len(data) < HEADER_BYTES:
        raise EnvelopeError(f"{where}: message of {len(data)} bytes is shorter than its header")
    magic, version, raw_scheme, kid, dim, clients, chunks = _LAYOUT.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise EnvelopeError(f"{where}: not a fedbench HE message (bad magic or version)")
    if raw_scheme != int(scheme):
        found = Scheme(raw_scheme).name if raw_scheme in Scheme._value2member_map_ else raw_scheme
        raise EnvelopeError(f"{where}: message is {found}, expected {scheme.name}")
    if kid != key_id:
        raise EnvelopeError(
            f"{where}: ciphertext was made under another key (key id {kid.hex()}, this "
            f"{scheme.name} context has {key_id.hex()})"
        )
    return Header(scheme, kid, dim, clients, chunks)
