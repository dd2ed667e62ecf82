"""Quantization and slot packing for additively homomorphic encryption (BatchCrypt-style).

A client clips its update to [−clip, clip], quantizes it to signed ``bits``-bit integers with
stochastic rounding (unbiased), shifts each integer by ``qmax`` so that it is non-negative, and
packs ``slots`` of them into one big plaintext integer, ``slot_bits`` bits apart. Adding the
plaintexts of n clients adds every slot independently as long as no slot sum reaches
2^slot_bits, so ``slot_bits`` is derived from the largest number of clients a sum may hold:
``slot_bits = bit_length(2 · n · qmax)`` (the padding above ``bits`` is what the sum of n
clients needs). The top ``GUARD_BITS`` of the plaintext space stay empty: a ciphertext that was
tampered with, or made under another key, decrypts to a near-uniform number modulo the public
modulus, which lands in the packed range with probability below 2^-40 and is refused.

Per-value encryption is the same layout with one slot per plaintext, so both modes decode
through the same code.

Example:
    >>> import numpy as np
    >>> layout = slot_layout(bits=8, clients=3, plaintext_bits=200)
    >>> layout.slot_bits, layout.slots
    (10, 16)
    >>> rng = np.random.default_rng(0)
    >>> q = [quantize(np.array([0.5, -1.0, 0.25]), clip=1.0, bits=8, rng=rng)[0] for _ in range(3)]
    >>> packed = [pack(v, layout) for v in q]
    >>> total = [sum(parts) for parts in zip(*packed)]
    >>> bool((unpack(total, layout, dim=3, clients=3) == sum(q)).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np

from fedbench.errors import ConfigError

GUARD_BITS = 40  # empty top bits of every plaintext: garbage passes the range check w.p. < 2^-40
MAX_BITS = 32  # quantization width; keeps slot sums of up to 2^29 clients inside int64
MAX_SLOT_BITS = 62  # slot sums are handled as int64 in numpy
_BATCH_VALUES = 1 << 16  # values packed per numpy batch (bounds the bit-matrix memory)


def qmax(bits: int) -> int:
    """The largest quantized magnitude, 2^(bits−1) − 1 (the range is symmetric)."""
    return (1 << (bits - 1)) - 1


def slot_bits(bits: int, clients: int) -> int:
    """Bits a slot needs so that the sum of ``clients`` shifted ``bits``-bit values never carries.

    Each shifted value lies in [0, 2·qmax], so a sum of n lies in [0, 2·n·qmax].
    """
    return (2 * clients * qmax(bits)).bit_length()


@dataclass(frozen=True)
class SlotLayout:
    """How quantized values sit in one plaintext integer.

    Attributes:
        bits: Signed quantization width b (values in [−qmax, qmax]).
        clients: The most client values one slot sum may hold (n).
        slot_bits: Width of one slot, b plus the padding that n needs.
        slots: Slots per plaintext (1 for per-value encryption).
    """

    bits: int
    clients: int
    slot_bits: int
    slots: int

    @property
    def qmax(self) -> int:
        """Largest quantized magnitude."""
        return qmax(self.bits)

    @property
    def padding_bits(self) -> int:
        """Bits above ``bits`` reserved for the carries of summing ``clients`` values."""
        return self.slot_bits - self.bits

    @property
    def packed_bits(self) -> int:
        """Bits of a plaintext that carry slots; every valid (summed) plaintext is below 2^this."""
        return self.slots * self.slot_bits

    def plaintexts(self, dim: int) -> int:
        """Number of plaintexts (ciphertexts) for a vector of ``dim`` values."""
        return -(-dim // self.slots)

    def check_clients(self, clients: int) -> None:
        """Refuse a sum of more clients than the slots were sized for (it could carry)."""
        if clients > self.clients:
            raise ConfigError(
                f"packing: a sum of {clients} clients needs {slot_bits(self.bits, clients)} bits "
                f"per slot, the layout has {self.slot_bits} (sized for at most {self.clients} "
                "clients); slots could overflow into their neighbours"
            )


def slot_layout(
    *, bits: int, clients: int, plaintext_bits: int, per_value: bool = False
) -> SlotLayout:
    """The slot layout for ``clients`` summands of ``bits``-bit values.

    Args:
        bits: Signed quantization width b (2 to 32).
        clients: The most clients whose values one aggregate sums.
        plaintext_bits: Bits available in a plaintext: every integer below 2^plaintext_bits must
            be a valid plaintext (for Paillier, bit_length(n) − 1).
        per_value: One value per plaintext instead of as many as fit.

    Raises:
        ConfigError: If the width is out of range or a slot (plus the guard bits) does not fit
            the plaintext space; the message states the bits needed.
    """
    if not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
        raise ConfigError(f"packing: bits must be an integer in [2, {MAX_BITS}], got {bits}")
    if not isinstance(clients, int) or clients < 1:
        raise ConfigError(f"packing: clients must be a positive integer, got {clients}")
    width = slot_bits(bits, clients)
    if width > MAX_SLOT_BITS:
        raise ConfigError(
            f"packing: {clients} clients × {bits}-bit values need {width} bits per slot, "
            f"more than the {MAX_SLOT_BITS} supported"
        )
    usable = plaintext_bits - GUARD_BITS
    if width > usable:
        raise ConfigError(
            f"packing: one slot needs {width} bits ({bits} value bits + {width - bits} padding "
            f"bits for {clients} clients) plus {GUARD_BITS} guard bits = {width + GUARD_BITS}, "
            f"but the plaintext space has {plaintext_bits} bits"
        )
    return SlotLayout(bits, clients, width, 1 if per_value else usable // width)


def quantize(
    values: np.ndarray, *, clip: float, bits: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Clip to [−clip, clip] and round stochastically to integers in [−qmax, qmax].

    Stochastic rounding makes the quantized value an unbiased estimate of the clipped value:
    x·qmax/clip is rounded up with probability equal to its fractional part.

    Returns:
        The int64 values, and how many inputs were clipped.
    """
    if not clip > 0:
        raise ConfigError(f"packing: clip must be positive, got {clip}")
    x = np.asarray(values, dtype=np.float64)
    clipped = int(np.count_nonzero(np.abs(x) > clip))
    scaled = np.clip(x, -clip, clip) * (qmax(bits) / clip)
    low = np.floor(scaled)
    up = rng.random(scaled.shape) < (scaled - low)
    return (low + up).astype(np.int64), clipped


def dequantize(sums: np.ndarray, *, clip: float, bits: int) -> np.ndarray:
    """Float64 values of (sums of) quantized integers."""
    return np.asarray(sums, dtype=np.float64) * (clip / qmax(bits))


def pack(values: np.ndarray, layout: SlotLayout) -> list[gmpy2.mpz]:
    """Shift quantized values to [0, 2·qmax] and pack them into plaintext integers.

    Slot i of a plaintext holds bits [i·slot_bits, (i+1)·slot_bits). The last plaintext is
    padded with zeros (shifted like any value).
    """
    q = np.asarray(values, dtype=np.int64)
    if q.size and (q.min() < -layout.qmax or q.max() > layout.qmax):
        raise ValueError(f"packing: values must lie in [−{layout.qmax}, {layout.qmax}]")
    count = layout.plaintexts(q.size)
    shifted = np.full(count * layout.slots, layout.qmax, dtype=np.uint64)
    shifted[: q.size] = (q + layout.qmax).astype(np.uint64)
    per_batch = max(1, _BATCH_VALUES // layout.slots)
    out: list[gmpy2.mpz] = []
    from_bytes = gmpy2.mpz.from_bytes
    for start in range(0, count, per_batch):
        block = shifted[start * layout.slots : (start + per_batch) * layout.slots]
        rows = _to_bytes_rows(block.reshape(-1, layout.slots), layout.slot_bits)
        out.extend(from_bytes(row.tobytes(), "little") for row in rows)
    return out


def unpack(
    plaintexts: Sequence[gmpy2.mpz], layout: SlotLayout, *, dim: int, clients: int
) -> np.ndarray:
    """Slot sums of ``clients`` packed vectors, shifted back: the int64 sum of the values.

    Raises:
        ValueError: If a plaintext or a slot is outside the range a sum of ``clients`` valid
            vectors can take (a ciphertext was tampered with, made under another key, or more
            clients were summed than stated).
    """
    layout.check_clients(clients)
    if len(plaintexts) != layout.plaintexts(dim):
        raise ValueError(
            f"packing: {len(plaintexts)} plaintexts for {dim} values, "
            f"expected {layout.plaintexts(dim)}"
        )
    nbytes = -(-layout.packed_bits // 8)
    for index, value in enumerate(plaintexts):
        if value < 0 or value.bit_length() > layout.packed_bits:
            raise ValueError(
                f"packing: plaintext {index} has {value.bit_length()} bits, a valid sum has at "
                f"most {layout.packed_bits}"
            )
    raw = b"".join(value.to_bytes(nbytes, "little") for value in plaintexts)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(plaintexts), nbytes)
    per_batch = max(1, _BATCH_VALUES // layout.slots)
    sums = np.concatenate([
        _from_bytes_rows(rows[start : start + per_batch], layout.slot_bits, layout.slots)
        for start in range(0, len(rows), per_batch)
    ]).reshape(-1)
    limit = 2 * clients * layout.qmax
    over = np.flatnonzero(sums > np.uint64(limit))
    if over.size:
        raise ValueError(
            f"packing: slot {int(over[0])} holds {int(sums[over[0]])}, above {limit}, the "
            f"largest sum of {clients} clients ({over.size} slots out of range)"
        )
    return sums[:dim].astype(np.int64) - clients * layout.qmax


def _to_bytes_rows(values: np.ndarray, width: int) -> np.ndarray:
    """Rows of uint64 slot values -> little-endian bytes of the packed integers."""
    shifts = np.arange(width, dtype=np.uint64)
    bits = ((values[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(values.shape[0], -1), axis=1, bitorder="little")


def _from_bytes_rows(rows: np.ndarray, width: int, slots: int) -> np.ndarray:
    """Little-endian bytes of packed integers -> rows of uint64 slot values."""
    bits = np.unpackbits(rows, axis=1, bitorder="little")[:, : slots * width]
    weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
    return bits.reshape(rows.shape[0], slots, width).astype(np.uint64) @ weights
