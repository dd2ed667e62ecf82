"""t-out-of-n secret sharing of 128-bit secrets (pycryptodome's Shamir), with tamper detection.

pycryptodome shares one 16-byte secret over GF(2^128); longer secrets are split into 16-byte
chunks shared with the same indices. Shamir's scheme alone cannot tell a wrong share from a
right one (any t points define some polynomial), so the dealer publishes a commitment
SHA-256(label ‖ secret) and :func:`combine` checks the reconstructed secret against it: a
tampered or corrupted share makes reconstruction raise instead of returning a wrong secret (and,
downstream, a wrong sum).

Example:
    >>> secret = bytes(range(16))
    >>> shares = split(secret, threshold=2, count=3)
    >>> combine(shares[1:], threshold=2, commitment=commit(secret, b"demo"), label=b"demo")
    b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e\\x0f'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from Crypto.Protocol.SecretSharing import Shamir

from fedbench.errors import AggregationError

CHUNK_BYTES = 16
INDEX_BYTES = 4  # a share's index on the wire


class ReconstructionError(AggregationError):
    """Shares are too few, inconsistent, or do not reconstruct the committed secret."""


@dataclass(frozen=True)
class Share:
    """One holder's share: the x-coordinate ``index`` and the chunks' y-values, concatenated."""

    index: int
    value: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return INDEX_BYTES + len(self.value)


def commit(secret: bytes, label: bytes) -> bytes:
    """SHA-256 commitment to ``secret`` under a domain label (a hiding, binding hash)."""
    return hashlib.sha256(b"fedbench/secagg/commit" + label + secret).digest()


def split(secret: bytes, *, threshold: int, count: int) -> list[Share]:
    """``count`` shares of ``secret`` (a multiple of 16 bytes), any ``threshold`` of which
    reconstruct it; share i has index i + 1."""
    if not secret or len(secret) % CHUNK_BYTES:
        raise ValueError(f"secret length must be a positive multiple of 16, got {len(secret)}")
    if not 1 <= threshold <= count:
        raise ValueError(f"need 1 <= threshold <= count, got threshold={threshold}, count={count}")
    columns = [
        Shamir.split(threshold, count, secret[i : i + CHUNK_BYTES])
        for i in range(0, len(secret), CHUNK_BYTES)
    ]
    return [
        Share(index=index, value=b"".join(column[row][1] for column in columns))
        for row, index in enumerate(i for i, _ in columns[0])
    ]


def combine(
    shares: Sequence[Share], *, threshold: int, commitment: bytes, label: bytes
) -> bytes:
    """The secret from ``threshold`` of ``shares``, checked against its commitment.

    Raises:
        ReconstructionError: Fewer than ``threshold`` shares, shares of different lengths or
            repeated indices, or a result that does not match ``commitment`` (a share was
            altered).
    """
    if len(shares) < threshold:
        raise ReconstructionError(
            f"{label.decode(errors='replace')}: {len(shares)} shares, threshold is {threshold}"
        )
    chosen = list(shares[:threshold])
    lengths = {len(s.value) for s in chosen}
    if len(lengths) != 1 or next(iter(lengths)) % CHUNK_BYTES or 0 in lengths:
        raise ReconstructionError(
            f"{label.decode(errors='replace')}: shares have inconsistent lengths {sorted(lengths)}"
        )
    if len({s.index for s in chosen}) != len(chosen):
        raise ReconstructionError(f"{label.decode(errors='replace')}: repeated share indices")
    length = next(iter(lengths))
    secret = b"".join(
        Shamir.combine([(s.index, s.value[i : i + CHUNK_BYTES]) for s in chosen])
        for i in range(0, length, CHUNK_BYTES)
    )
    if not hmac.compare_digest(commit(secret, label), commitment):
        raise ReconstructionError(
            f"{label.decode(errors='replace')}: the shares of holders "
            f"{sorted(s.index for s in chosen)} reconstruct a secret that does not match its "
            "commitment; at least one share was altered"
        )
    return secret
