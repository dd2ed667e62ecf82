"""Mask expansion: a 128-bit seed becomes a uniform vector of Z/2^b via AES-128-CTR.

The keystream of AES-128 in counter mode (``cryptography``, i.e. OpenSSL) under the seed as key
is read as little-endian words of the ring's storage type; each word is uniform, so the mask is
uniform modulo 2^32 (2^64) and therefore modulo any 2^b below. Every seed is a fresh key, so the
all-zero initial counter block is safe.

Speed comes from never allocating per mask: the generator keeps one all-zero input buffer and one
output buffer, and ``update_into`` writes the keystream straight into the output buffer (encrypting
zeros yields the keystream itself). Long vectors are expanded chunk by chunk, every seed's cipher
advancing in step, so the keystream and the slice of the accumulator it is added to stay in the
CPU cache instead of making a round trip through memory per mask.

Example:
    >>> import numpy as np
    >>> from fedbench.defenses.secagg.ring import Ring
    >>> masks = MaskGenerator(Ring(32))
    >>> acc = np.zeros(4, dtype=np.uint32)
    >>> seed = bytes(range(16))
    >>> masks.apply(acc, add=[seed])
    >>> masks.apply(acc, subtract=[seed])
    >>> acc.tolist()
    [0, 0, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedbench.defenses.secagg.ring import Ring

SEED_BYTES = 16
# Every seed is used as a key once, so all ciphers may start from counter block zero.
_COUNTER = modes.CTR(bytes(16))
_BLOCK = 16
# 256 KiB per chunk: the keystream chunk and the accumulator slice fit in L2 together.
DEFAULT_CHUNK_BYTES = 1 << 18


def _cipher(seed: bytes) -> CipherContext:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return Cipher(algorithms.AES(seed), _COUNTER).encryptor()


class MaskGenerator:
    """Expands seeds into masks of a ring with AES-128-CTR, into buffers it reuses.

    Not thread-safe: one generator per thread. Its buffers grow to the largest chunk asked for
    and are then reused by every later call.

    Args:
        ring: The ring the masks live in.
        chunk_bytes: Size of the slices that long vectors are processed in.
    """

    def __init__(self, ring: Ring, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        itemsize = ring.dtype.itemsize
        if chunk_bytes < _BLOCK or chunk_bytes % (_BLOCK * itemsize):
            raise ValueError(
                f"chunk_bytes must be a positive multiple of {_BLOCK * itemsize}, got {chunk_bytes}"
            )
        self.ring = ring
        self.chunk_bytes = chunk_bytes
        self._zeros = np.zeros(0, dtype=np.uint8)
        self._out = np.zeros(0, dtype=np.uint8)

    def _buffers(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        # update_into wants room for one extra block beyond the input.
        if self._zeros.size < nbytes:
            self._zeros = np.zeros(nbytes, dtype=np.uint8)
            self._out = np.empty(nbytes + _BLOCK, dtype=np.uint8)
        return self._zeros[:nbytes], self._out

    def expand(self, seed: bytes, dim: int) -> np.ndarray:
        """The mask of ``seed``, a fresh array of ``dim`` ring elements: the keystream written
        straight into the new array (no accumulator, no add), as a mask generator alone does."""
        cipher = _cipher(seed)
        nbytes = dim * self.ring.dtype.itemsize
        zeros, _ = self._buffers(nbytes)
        raw = np.empty(nbytes + _BLOCK, dtype=np.uint8)
        cipher.update_into(memoryview(zeros), memoryview(raw))  # type: ignore[arg-type]
        return self.ring.reduce(raw[:nbytes].view(self.ring.dtype))

    def apply(
        self,
        acc: np.ndarray,
        *,
        add: Sequence[bytes] = (),
        subtract: Sequence[bytes] = (),
    ) -> None:
        """acc ← acc + Σ mask(add) − Σ mask(subtract) modulo 2^b, in place.

        Args:
            acc: A contiguous vector of the ring's storage type.
            add: Seeds whose masks are added.
            subtract: Seeds whose masks are subtracted.
        """
        if acc.dtype != self.ring.dtype or not acc.flags.c_contiguous:
            raise ValueError(f"acc must be a contiguous {self.ring.dtype} vector, got {acc.dtype}")
        ciphers: list[tuple[CipherContext, np.ufunc]] = [(_cipher(s), np.add) for s in add]
        ciphers += [(_cipher(s), np.subtract) for s in subtract]
        if not ciphers or acc.size == 0:
            self.ring.reduce(acc)
            return
        itemsize = self.ring.dtype.itemsize
        total = acc.size * itemsize
        step = min(self.chunk_bytes, total)
        zeros, out = self._buffers(step)
        view = out[:step].view(self.ring.dtype)
        source, target = memoryview(zeros), memoryview(out)  # type: ignore[arg-type]
        for start in range(0, total, step):
            size = min(step, total - start)
            words = size // itemsize
            part = acc[start // itemsize : start // itemsize + words]
            stream = view[:words]
            for cipher, combine in ciphers:
                cipher.update_into(source[:size], target)
                combine(part, stream, out=part)
        self.ring.reduce(acc)


def keystream_bytes(seed: bytes, nbytes: int) -> bytes:
    """The raw AES-128-CTR keystream of ``seed`` (a reference for tests and baselines)."""
    return _cipher(seed).update(bytes(nbytes))
