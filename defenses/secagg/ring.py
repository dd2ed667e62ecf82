"""The ring Z/2^b that secure aggregation works in, stored in numpy unsigned integers.

Everything the masking protocol touches is a vector of integers modulo 2^b: inputs, masks,
masked inputs and the sum. Values live in ``uint32`` for b ≤ 32 and ``uint64`` for b ≤ 64, so
numpy's wrapping addition is already addition modulo 2^32 (2^64); for smaller b a final AND
with 2^b − 1 reduces the result, which is correct because 2^b divides the storage modulus.

On the wire a vector of a ring narrower than its storage type is bit-packed (:meth:`Ring.pack`):
b bits per value, little-endian, so a masked upload costs b/8 bytes per value, not 4 or 8. Eight
values of b bits fill exactly b bytes, so packing works on groups of eight: each value is shifted
into one or two of the group's 64-bit words, all groups at once.

Example:
    >>> import numpy as np
    >>> ring = Ring(8)
    >>> x = np.array([250, 10], dtype=ring.dtype)
    >>> total = x + np.array([10, 10], dtype=ring.dtype)
    >>> ring.reduce(total).tolist()
    [4, 20]
    >>> wire = Ring(12).pack(np.array([1, 4095, 7], dtype=np.uint32))
    >>> wire.nbytes, Ring(12).unpack(wire, 3).tolist()
    (5, [1, 4095, 7])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbench.errors import BadClientUpdate, ConfigError

MAX_BITS = 64
# Widest b whose value, at a shift below 8 in the 64-bit word starting at its byte, fits it.
_FAST_MAX_BITS = 57


@dataclass(frozen=True)
class Ring:
    """Integers modulo 2^bits.

    Args:
        bits: b, the number of bits of the modulus (1 to 64).
    """

    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise ConfigError(
                f"secagg: bits must be an integer in [1, {MAX_BITS}], got {self.bits}"
            )

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """The numpy storage type: uint32 up to 32 bits, uint64 above."""
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def modulus(self) -> int:
        """2^bits."""
        return 1 << self.bits

    @property
    def mask(self) -> int:
        """2^bits − 1, the largest element."""
        return self.modulus - 1

    @property
    def wraps_natively(self) -> bool:
        """Whether numpy's wrap-around of the storage type is already reduction mod 2^bits."""
        return self.bits == 8 * self.dtype.itemsize

    def zeros(self, dim: int) -> np.ndarray:
        """The zero vector of length ``dim``."""
        return np.zeros(dim, dtype=self.dtype)

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Reduce ``values`` (of the storage type) modulo 2^bits in place, and return them."""
        if not self.wraps_natively:
            np.bitwise_and(values, self.dtype.type(self.mask), out=values)
        return values

    def packed_nbytes(self, dim: int) -> int:
        """Bytes of ``dim`` values on the wire: ⌈dim·b/8⌉ (the storage size when b fills it)."""
        if self.wraps_natively:
            return dim * self.dtype.itemsize
        return -(-dim * self.bits // 8)

    def _layout(self) -> list[tuple[int, int]]:
        # (word, shift) of each of the 8 values of a group.
        return [divmod(j * self.bits, 64) for j in range(8)]

    def _lane_views(self, buffer: np.ndarray, groups: int) -> list[tuple[np.ndarray, np.uint64]]:
        """For each j < 8: (the unaligned little-endian 64-bit word that starts at the byte of
        value j of every group, the shift of value j inside it). Eight b-bit values fill b bytes,
        so group g's word j starts at byte g·b + ⌊j·b/8⌋; with b ≤ 57 the value and its shift
        (< 8) fit that word. ``buffer`` needs 8 spare bytes past the last group."""
        views = []
        for j in range(8):
            start, shift = divmod(j * self.bits, 8)
            view = np.ndarray((groups,), dtype="<u8", buffer=buffer, offset=start,
                              strides=(self.bits,))
            views.append((view, np.uint64(shift)))
        return views

    def pack(self, values: np.ndarray) -> np.ndarray:
        """Values of this ring (storage type) as b bits each: uint8 wire bytes, or the values
        themselves when b is the storage width."""
        if self.wraps_natively:
            return values
        if values.size == 0:
            return np.zeros(0, dtype=np.uint8)
        if 8 <= self.bits <= _FAST_MAX_BITS:
            # Each value ORed into the word at its byte: per j one strided pass of the groups.
            # b ≥ 8 bytes between a view's words, so no view overlaps itself.
            groups = -(-values.size // 8)
            buffer = np.zeros(groups * self.bits + 8, dtype=np.uint8)
            for j, (view, shift) in enumerate(self._lane_views(buffer, groups)):
                lane = values[j::8].astype(np.uint64)
                np.left_shift(lane, shift, out=lane)
                part = view[: lane.size]
                np.bitwise_or(part, lane, out=part)
            return buffer[: self.packed_nbytes(values.size)].copy()
        return self._pack_groups(values)

    def _pack_groups(self, values: np.ndarray) -> np.ndarray:
        """:meth:`pack` for any b, with (groups, 8) lanes shifted into each group's words."""
        groups = -(-values.size // 8)
        padded = np.zeros(8 * groups, dtype=np.uint64)
        padded[: values.size] = values
        lanes = padded.reshape(groups, 8)
        words = np.zeros((groups, -(-self.bits // 8) + 1), dtype=np.uint64)
        for j, (word, shift) in enumerate(self._layout()):
            words[:, word] |= lanes[:, j] << np.uint64(shift)
            if shift + self.bits > 64:
                words[:, word + 1] |= lanes[:, j] >> np.uint64(64 - shift)
        packed = words.view(np.uint8).reshape(groups, -1)[:, : self.bits]
        return packed.reshape(-1)[: self.packed_nbytes(values.size)].copy()

    def unpack(self, wire: np.ndarray, dim: int) -> np.ndarray:
        """The inverse of :meth:`pack`: ``dim`` values in the storage type."""
        if self.wraps_natively:
            return wire
        if dim == 0:
            return self.zeros(0)
        if self.bits <= _FAST_MAX_BITS:
            # Value j of every group: its word shifted and masked, one strided pass per j.
            groups = -(-dim // 8)
            buffer = np.zeros(groups * self.bits + 8, dtype=np.uint8)
            count = min(wire.size, groups * self.bits)
            buffer[:count] = wire[:count]
            out = np.empty(8 * groups, dtype=self.dtype)
            lane = np.empty(groups, dtype=np.uint64)
            mask = np.uint64(self.mask)
            for j, (view, shift) in enumerate(self._lane_views(buffer, groups)):
                np.right_shift(view, shift, out=lane)
                np.bitwise_and(lane, mask, out=lane)
                out[j::8] = lane
            return out[:dim]
        return self._unpack_groups(wire, dim)

    def _unpack_groups(self, wire: np.ndarray, dim: int) -> np.ndarray:
        """:meth:`unpack` for any b, from (groups, 8) lanes."""
        if dim == 0:
            return self.zeros(0)
        groups = -(-dim // 8)
        width = 8 * (-(-self.bits // 8) + 1)
        raw = np.zeros((groups, width), dtype=np.uint8)
        flat = np.zeros(groups * self.bits, dtype=np.uint8)
        flat[: wire.size] = wire
        raw[:, : self.bits] = flat.reshape(groups, self.bits)
        words = raw.view(np.uint64)
        mask = np.uint64(self.mask)
        lanes = np.empty((groups, 8), dtype=np.uint64)
        for j, (word, shift) in enumerate(self._layout()):
            lane = words[:, word] >> np.uint64(shift)
            if shift + self.bits > 64:
                lane |= words[:, word + 1] << np.uint64(64 - shift)
            lanes[:, j] = lane & mask
        return lanes.reshape(-1)[:dim].astype(self.dtype)

    def check(self, values: np.ndarray, client_id: int, dim: int) -> None:
        """Reject a vector that is not ``dim`` elements of this ring (in its storage type)."""
        if values.ndim != 1 or values.shape[0] != dim:
            raise BadClientUpdate(
                client_id, f"encoded input has shape {values.shape}, expected ({dim},)"
            )
        if values.dtype != self.dtype:
            raise BadClientUpdate(
                client_id, f"encoded input has dtype {values.dtype}, expected {self.dtype}"
            )
        if not self.wraps_natively and values.size and int(values.max()) > self.mask:
            raise BadClientUpdate(
                client_id,
                f"encoded input has an element {int(values.max())} outside Z/2^{self.bits}",
            )
