"""Batched t-out-of-n Shamir secret sharing over the prime field GF(65537), with commitments.

A secret of L bytes (L even; the protocol's seeds have 16) is read as L/2 little-endian 16-bit
limbs, each an element of GF(p) with p = 65537 = 2^16 + 1, a prime. Every limb is shared with its
own random polynomial of degree t − 1, and all limbs of all of a dealer's secrets are evaluated
at once: the shares are one matrix product V·C mod p, V the Vandermonde matrix of the holders'
x-coordinates (public integers 1 … 65536; the protocol uses a client's position in the round
plus one) and C the coefficients, the secrets' limbs in its first row.

Why this field: a product of two elements is below 2^34 and a sum of up to 2^19 of them below
2^53, so float64 matrix products (BLAS) and int64 sums are exact; 16-bit limbs are field elements
as they are (no rejection, no bias). A share element can be 2^16, one more than 16 bits hold, so
a share of an L-byte secret travels as the L bytes of its low halves plus one bit per limb:
``share_bytes(16) == 17``.

Reconstruction computes the Lagrange coefficients at 0 of every secret's holders at once, as
sums of discrete logs, and applies them to all secrets in one batched product
(:func:`reconstruct`); one set shared by every secret is computed once, and sets that all
lie inside one set of t + 1 points — the complete graph, where each owner's first t holders
are the first t + 1 answering clients but itself — get theirs from that set's in O(t) each. A
commitment SHA-256(label ‖ secret) published by the dealer tells a wrong reconstruction from a
right one, which Shamir's scheme alone cannot (any t points define some polynomial); with spare
shares, :func:`recover` finds the holder whose share is wrong and reconstructs from the others.

Example:
    >>> secret = bytes(range(16))
    >>> shares = split(secret, threshold=2, count=3)
    >>> combine(shares[1:], threshold=2, commitment=commit(secret, b"demo"), label=b"demo")
    b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\\t\\n\\x0b\\x0c\\r\\x0e\\x0f'
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from fedbench.errors import AggregationError

PRIME = 65537
MAX_HOLDERS = PRIME - 1  # x-coordinates 1 … 65536 (0 is the secret's own point)
INDEX_BYTES = 4  # a standalone share's x-coordinate on the wire
# (g, t, t) differences built at once when computing Lagrange coefficients: small enough
# that the temporaries stay in the cache and in malloc's heap (larger ones are fresh mmaps,
# whose page faults made the whole computation 3x slower in a process holding a round).
_CHUNK_ELEMENTS = 1 << 16


class ReconstructionError(AggregationError):
    """Shares are too few, inconsistent, or do not reconstruct the committed secret."""


@dataclass(frozen=True)
class Share:
    """One holder's share of one secret: its x-coordinate ``index`` and the encoded elements."""

    index: int
    value: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire of a standalone share (the protocol's x-coordinates are implicit)."""
        return INDEX_BYTES + len(self.value)


def commit(secret: bytes, label: bytes) -> bytes:
    """SHA-256 commitment to ``secret`` under a domain label (a hiding, binding hash)."""
    return hashlib.sha256(b"fedbench/secagg/commit" + label + secret).digest()


def share_bytes(secret_bytes: int) -> int:
    """Wire size of one share of a ``secret_bytes``-byte secret: low halves plus high bits."""
    limbs = secret_bytes // 2
    return secret_bytes + -(-limbs // 8)


# -- field arithmetic --------------------------------------------------------------------------


def _powmod(base: np.ndarray, exponent: int) -> np.ndarray:
    result = np.ones_like(base)
    power = base % PRIME
    while exponent:
        if exponent & 1:
            result = result * power % PRIME
        power = power * power % PRIME
        exponent >>= 1
    return result


@cache
def _inverses() -> np.ndarray:
    """inv[a] = a^(p−2) mod p for every element (inv[0] = 0), built once by Fermat."""
    return _powmod(np.arange(PRIME, dtype=np.int64), PRIME - 2)


def _product_mod(values: np.ndarray) -> np.ndarray:
    """Product mod p over the last axis, by pairwise halving (log2 of the width passes)."""
    while values.shape[-1] > 1:
        if values.shape[-1] % 2:
            values = np.concatenate([values, np.ones_like(values[..., :1])], axis=-1)
        half = values.shape[-1] // 2
        values = values[..., :half] * values[..., half:] % PRIME
    return values[..., 0]


# -- encoding: bytes ↔ limbs ↔ share bytes -----------------------------------------------------


def _limbs(secrets: Sequence[bytes]) -> np.ndarray:
    lengths = {len(s) for s in secrets}
    if len(lengths) != 1 or (length := lengths.pop()) == 0 or length % 2:
        found = sorted({len(s) for s in secrets})
        raise ValueError(f"secrets must have one positive, even length, got lengths {found}")
    raw = np.frombuffer(b"".join(secrets), dtype="<u2").reshape(len(secrets), length // 2)
    return raw.astype(np.int64)


def encode_elements(elements: np.ndarray) -> np.ndarray:
    """Field elements (…, limbs) → share bytes (…, limbs·2 + ⌈limbs/8⌉): low halves, high bits."""
    low = (elements & 0xFFFF).astype("<u2").view(np.uint8)
    high = np.packbits((elements >> 16).astype(np.uint8), axis=-1, bitorder="little")
    return np.concatenate([low, high], axis=-1)


def decode_elements(
    raw: np.ndarray, limbs: int, dtype: type[np.integer] | type[np.floating] = np.int64
) -> np.ndarray:
    """The inverse of :func:`encode_elements`: share bytes (…, S) → elements (…, limbs), as
    ``dtype`` (float64 for exact BLAS products: every element is at most 2^16)."""
    elements = np.unpackbits(raw[..., 2 * limbs :], axis=-1, count=limbs,
                             bitorder="little").astype(dtype)
    elements *= 1 << 16
    elements += np.ascontiguousarray(raw[..., : 2 * limbs]).view("<u2")
    return elements


def _secret_bytes(limbs: np.ndarray) -> bytes | None:
    """The bytes of one reconstructed secret, or None if a limb is not a 16-bit value (only a
    wrong share can make one)."""
    if int(limbs.max(initial=0)) > 0xFFFF:
        return None
    return limbs.astype("<u2").tobytes()


# -- dealing -----------------------------------------------------------------------------------


def _holders(holders: Sequence[int] | np.ndarray) -> np.ndarray:
    xs = np.asarray(holders, dtype=np.int64)
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError("holders must be a non-empty list of x-coordinates")
    if int(xs.min()) < 1 or int(xs.max()) > MAX_HOLDERS:
        raise ValueError(f"holder x-coordinates must lie in [1, {MAX_HOLDERS}]")
    if np.unique(xs).size != xs.size:
        raise ValueError("holder x-coordinates must be distinct")
    return xs


@lru_cache(maxsize=8)
def _vandermonde(largest: int, threshold: int) -> np.ndarray:
    """Row x − 1 holds x^0 … x^(t−1) mod p for x = 1 … ``largest``, as float64 (exact)."""
    xs = np.arange(1, largest + 1, dtype=np.int64)
    powers = np.empty((largest, threshold), dtype=np.int64)
    powers[:, 0] = 1
    for k in range(1, threshold):
        powers[:, k] = powers[:, k - 1] * xs % PRIME
    return powers.astype(np.float64)


def _random_elements(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform field elements from the OS CSPRNG: 64 random bits mod p (bias below 2^-47)."""
    count = int(np.prod(shape))
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (words % np.uint64(PRIME)).astype(np.int64).reshape(shape)


def deal(
    secrets: Sequence[bytes], *, threshold: int, holders: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Shares of every secret for every holder, in one matrix product.

    Args:
        secrets: m secrets of one even length L.
        threshold: t: any t shares of a secret reconstruct it, fewer reveal nothing.
        holders: The holders' distinct x-coordinates, in [1, 65536].

    Returns:
        uint8 array (holders, m, ``share_bytes(L)``): entry [h, s] is holder h's share of s.
    """
    xs = _holders(holders)
    if not 1 <= threshold <= xs.size:
        raise ValueError(
            f"need 1 <= threshold <= holders, got threshold={threshold}, holders={xs.size}"
        )
    limbs = _limbs(secrets)
    coefficients = np.empty((threshold, limbs.size), dtype=np.int64)
    coefficients[0] = limbs.ravel()
    coefficients[1:] = _random_elements((threshold - 1, limbs.size))
    powers = _vandermonde(int(xs.max()), threshold)[xs - 1]
    values = np.fmod(powers @ coefficients.astype(np.float64), PRIME).astype(np.int64)
    return encode_elements(values.reshape(xs.size, *limbs.shape))


def split(secret: bytes, *, threshold: int, count: int) -> list[Share]:
    """``count`` standalone shares of one secret, any ``threshold`` of which reconstruct it;
    share i has x-coordinate i + 1."""
    if not secret or len(secret) % 16:
        raise ValueError(f"secret length must be a positive multiple of 16, got {len(secret)}")
    if not 1 <= threshold <= count:
        raise ValueError(f"need 1 <= threshold <= count, got threshold={threshold}, count={count}")
    shares = deal([secret], threshold=threshold, holders=np.arange(1, count + 1))
    return [Share(index=i + 1, value=shares[i, 0].tobytes()) for i in range(count)]


# -- Lagrange coefficients ---------------------------------------------------------------------


@cache
def _log_tables() -> tuple[np.ndarray, np.ndarray]:
    """(log, exp) of GF(p)* to the base 3, a generator (65537 is a Fermat prime, for which 3 is
    a primitive root): exp[k] = 3^k for k < p − 1 and log[exp[k]] = k (log[0] unused). A
    product of field elements is then one integer sum of their logs modulo p − 1 = 2^16."""
    small, big = [1], [1]
    for _ in range(255):
        small.append(small[-1] * 3 % PRIME)
    step = small[-1] * 3 % PRIME  # 3^256
    for _ in range(255):
        big.append(big[-1] * step % PRIME)
    exp = (np.array(big, dtype=np.int64)[:, None] * np.array(small, dtype=np.int64) % PRIME)
    exp = exp.reshape(-1)
    log = np.zeros(PRIME, dtype=np.int32)
    log[exp] = np.arange(PRIME - 1, dtype=np.int32)
    return log, exp


@cache
def _difference_logs() -> np.ndarray:
    """table[δ + p − 2] = log(δ mod p) for every difference δ = x_j − x_i of two x-coordinates
    (|δ| ≤ p − 2), and 0 at δ = 0, so that a row's own point drops out of its sum with no
    masking of the diagonal and no reduction mod p of the differences."""
    log, _ = _log_tables()
    table = log[np.arange(-(PRIME - 2), PRIME - 1) % PRIME]
    table[PRIME - 2] = 0
    return table


def _direct_coefficients(rows: np.ndarray) -> np.ndarray:
    """λ[g, i] = Π_{j≠i} x_j / (x_j − x_i) mod p for each row of x-coordinates, O(t²) a row,
    as sums of discrete logs: log λ_i = Σ_j log x_j − log x_i − Σ_{j≠i} log(x_j − x_i)."""
    log, exp = _log_tables()
    differences = _difference_logs()
    count, width = rows.shape
    out = np.empty_like(rows)
    step = max(1, _CHUNK_ELEMENTS // (width * width))
    order = PRIME - 1
    logs = log[rows].astype(np.int64)
    numerators = logs.sum(axis=-1, keepdims=True) - logs
    # int32 differences, offset to index the table: x_j − x_i + p − 2 ≥ 0.
    shifted = rows.astype(np.int32)
    for start in range(0, count, step):
        xs = shifted[start : start + step]
        offsets = xs[:, None, :] - (xs[:, :, None] - (PRIME - 2))  # [g, i, j]
        denominators = differences[offsets].sum(axis=-1, dtype=np.int64)
        out[start : start + step] = exp[(numerators[start : start + step] - denominators) % order]
    return out


def _leave_one_out(base: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Coefficients of rows that are ``base`` (t + 1 sorted points) less one point each:
    λ^(B∖k)_i = λ^B_i · (x_k − x_i) / x_k, from λ^B computed once, O(t) a row. The missing
    point of a row is Σ B − Σ row."""
    full = _direct_coefficients(base[None])[0]
    missing = int(base.sum()) - rows.sum(axis=1)
    # A row's i-th point is the base's i-th before the missing point and its (i + 1)-th after.
    index = np.arange(rows.shape[1]) + (rows > missing[:, None])
    factors = (missing[:, None] - rows) % PRIME * _inverses()[missing][:, None] % PRIME
    out: np.ndarray = full[index] * factors % PRIME
    return out


def lagrange_at_zero(xs: np.ndarray) -> np.ndarray:
    """The Lagrange coefficients at 0 of each row of sorted, distinct x-coordinates (m × t).

    Rows that all lie in one set of t + 1 points (the complete graph: each owner's holders are
    the first t + 1 answering clients but itself) derive theirs from that set's, O(t) a row;
    otherwise each row is computed directly. (Searching for repeated rows, np.unique over
    rows, cost more than the O(t²) it saved: outside the complete graph, rows rarely repeat.)
    """
    present = np.zeros(MAX_HOLDERS + 1, dtype=bool)
    present[xs.reshape(-1)] = True
    union = np.flatnonzero(present)
    if union.size == xs.shape[1]:  # every row is the same set
        return np.repeat(_direct_coefficients(union[None]), xs.shape[0], axis=0)
    if union.size == xs.shape[1] + 1:
        return _leave_one_out(union, xs)
    return _direct_coefficients(xs)


# -- reconstruction ----------------------------------------------------------------------------


def reconstruct(xs: np.ndarray, shares: np.ndarray) -> list[bytes | None]:
    """Secrets from exactly t shares each, all at once.

    Args:
        xs: (m, t) sorted, distinct x-coordinates of each secret's holders.
        shares: (m, t, S) the encoded shares, in the same order.

    Returns:
        Each secret's bytes, or None where the shares cannot be right (a limb beyond 16 bits).
        A wrong share usually yields some other secret: check it against its commitment.
    """
    if shares.shape[:2] != xs.shape:
        raise ValueError(f"shares {shares.shape[:2]} do not match x-coordinates {xs.shape}")
    limbs = _limb_count(shares.shape[2])
    coefficients = lagrange_at_zero(xs)
    # Σ_i λ_i y_i as one batched float64 product: λ_i < 2^17 and y_i ≤ 2^16, so every term is
    # below 2^34 and a sum of at most 2^16 of them below 2^50: exact.
    weights = coefficients.astype(np.float64)[:, None, :]
    values = decode_elements(shares, limbs, np.float64)
    secrets = np.fmod(np.matmul(weights, values)[:, 0], PRIME).astype(np.int64)
    # A limb beyond 16 bits marks its row as wrong; the rest are cut from one buffer.
    wrong = (secrets > 0xFFFF).any(axis=1).tolist()
    width = 2 * limbs
    blob = secrets.astype("<u2").tobytes()
    return [None if bad else blob[i * width : (i + 1) * width] for i, bad in enumerate(wrong)]


def _limb_count(share_size: int) -> int:
    for limbs in range(1, share_size):
        if 2 * limbs + -(-limbs // 8) == share_size:
            return limbs
    raise ValueError(f"{share_size} bytes is not the size of an encoded share")


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found for one secret.

    Attributes:
        secret: The committed secret, or None when no subset tried reconstructs it.
        altered: Positions (in the shares given) of the share proven wrong, if one was.
    """

    secret: bytes | None
    altered: tuple[int, ...]


def recover(
    xs: np.ndarray, shares: np.ndarray, *, threshold: int, matches: Callable[[bytes], bool]
) -> Recovery:
    """One secret from all its shares when some may be wrong.

    The t + 1 secrets that each leave one of the first t + 1 shares out come from two sums in
    O(t): c_k = A − λ_k·y_k − (B − λ_k·x_k·y_k)/x_k, with λ the coefficients of all t + 1 points,
    A = Σ λ_i y_i and B = Σ λ_i x_i y_i. When every share is right, every candidate is the
    committed secret. When exactly one share k is wrong, only c_k is: every other candidate uses
    share k with a non-zero coefficient, so its error shows. Any other pattern means two or
    more wrong shares, which this cannot attribute: the result is then None. (Interpolating all
    t + 1 points at once is no test: two errors can cancel in it.) Attribution assumes the
    wrong holders do not collude to cancel their errors in a t-subset; the returned secret is
    the committed one either way.

    Args:
        xs: (s,) sorted, distinct x-coordinates.
        shares: (s, S) the shares, in the same order.
        threshold: t.
        matches: Whether a candidate secret matches its commitment.
    """
    limbs = _limb_count(shares.shape[1])
    if xs.size <= threshold:
        secret = reconstruct(xs[None, :threshold], shares[None, :threshold])[0]
        ok = xs.size == threshold and secret is not None and matches(secret)
        return Recovery(secret if ok else None, ())
    x, y = xs[: threshold + 1], decode_elements(shares[: threshold + 1], limbs)
    candidates = _leave_one_out_secrets(x, y)
    found = [(k, s) for k in range(x.size)
             if (s := _secret_bytes(candidates[k])) is not None and matches(s)]
    if len(found) == x.size:
        return Recovery(found[0][1], ())
    if len(found) == 1:
        return Recovery(found[0][1], (found[0][0],))
    return Recovery(None, ())


def _leave_one_out_secrets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row k: the secret (limbs) interpolated through every point of (x, y) but the k-th."""
    lam = lagrange_at_zero(x[None])[0]
    weighted = lam[:, None] * y % PRIME
    whole = weighted.sum(axis=0) % PRIME
    moment = (weighted * x[:, None]).sum(axis=0) % PRIME
    rest = (moment[None, :] - weighted * x[:, None] % PRIME) % PRIME
    out: np.ndarray = (whole[None, :] - weighted - rest * _inverses()[x][:, None]) % PRIME
    return out


def combine(
    shares: Sequence[Share], *, threshold: int, commitment: bytes, label: bytes
) -> bytes:
    """The secret from ``threshold`` of ``shares``, checked against its commitment.

    Raises:
        ReconstructionError: Fewer than ``threshold`` shares, shares of different lengths or
            repeated indices, or a result that does not match ``commitment`` (a share was
            altered).
    """
    name = label.decode(errors="replace")
    if len(shares) < threshold:
        raise ReconstructionError(f"{name}: {len(shares)} shares, threshold is {threshold}")
    chosen = sorted(shares[:threshold], key=lambda s: s.index)
    lengths = {len(s.value) for s in chosen}
    if len(lengths) != 1 or not _is_share_size(next(iter(lengths))):
        raise ReconstructionError(f"{name}: shares have inconsistent lengths {sorted(lengths)}")
    if len({s.index for s in chosen}) != len(chosen):
        raise ReconstructionError(f"{name}: repeated share indices")
    xs = np.array([[s.index for s in chosen]], dtype=np.int64)
    raw = np.frombuffer(b"".join(s.value for s in chosen), dtype=np.uint8)
    secret = reconstruct(xs, raw.reshape(1, len(chosen), -1))[0]
    if secret is None or not hmac.compare_digest(commit(secret, label), commitment):
        raise ReconstructionError(
            f"{name}: the shares of holders {[s.index for s in chosen]} reconstruct a secret "
            "that does not match its commitment; at least one share was altered"
        )
    return secret


def _is_share_size(size: int) -> bool:
    try:
        _limb_count(size)
    except ValueError:
        return False
    return True
