"""The ring Z/2^b that secure aggregation works in, stored in numpy unsigned integers.

Everything the masking protocol touches is a vector of integers modulo 2^b: inputs, masks,
masked inputs and the sum. Values live in ``uint32`` for b ≤ 32 and ``uint64`` for b ≤ 64, so
numpy's wrapping addition is already addition modulo 2^32 (2^64); for smaller b a final AND
with 2^b − 1 reduces the result, which is correct because 2^b divides the storage modulus.

Example:
    >>> import numpy as np
    >>> ring = Ring(8)
    >>> x = np.array([250, 10], dtype=ring.dtype)
    >>> total = x + np.array([10, 10], dtype=ring.dtype)
    >>> ring.reduce(total).tolist()
    [4, 20]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbench.errors import BadClientUpdate, ConfigError

MAX_BITS = 64


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
