"""From float updates to elements of Z/2^b and back: clip, stochastic rounding, headroom.

The masking protocol (:mod:`.protocol`) only ever sees unsigned integer vectors modulo 2^b. An
:class:`IntegerEncoder` turns one client's float update into such a vector and the sum of n of
them back into floats. :class:`FloatQuantizer` is the encoder of the ``secagg`` channel; the
distributed-DP defense supplies its own (rotation, scaling, discrete noise) through the same
interface.

FloatQuantizer maps each coordinate, clipped to [lo, hi], onto the integers 0 … L with
L = 2^quant_bits − 1 and step (hi − lo)/L, rounding stochastically (unbiased, error < one step).
The sum of n clients is at most n·L, so it cannot wrap modulo 2^b as long as n·L ≤ 2^b − 1;
configurations that break this are refused with the number of bits they would need.

Example:
    >>> import numpy as np
    >>> q = FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=8, bits=16)
    >>> rng = np.random.default_rng(0)
    >>> parts = [q.encode(np.array([0.5, -0.25], dtype=np.float32), rng) for _ in range(3)]
    >>> total = q.ring.reduce(parts[0] + parts[1] + parts[2])
    >>> bool(np.all(np.abs(q.decode(total, 3) - [1.5, -0.75]) <= q.error_bound(3)))
    True
    >>> required_bits(300, 255)
    17
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import AggregationError, ConfigError


class IntegerEncoder(Protocol):
    """What the channel needs from an encoding of float updates into Z/2^b.

    Attributes:
        ring: The ring Z/2^b the encoded vectors live in.
    """

    ring: Ring

    def check_headroom(self, clients: int) -> None:
        """Raise ConfigError if the sum of ``clients`` encoded vectors could wrap modulo 2^b."""

    def clip(self, update: np.ndarray) -> tuple[np.ndarray, int]:
        """The float64 update the encoding represents before rounding (``update`` clipped into
        the encoder's range), and how many of its values clipping changed."""

    def encode(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One client's float update as a vector of ``ring.dtype`` with entries < 2^b."""

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        """The float64 sum represented by ``total``, the ring sum of ``clients`` encodings;
        raises AggregationError when ``total`` is outside what ``clients`` honest encodings
        can sum to."""

    def contribution(self, encoded: np.ndarray) -> np.ndarray:
        """What one client's encoded vector adds to the decoded sum (float64), as the client
        itself can compute it: its rounding, and any noise it added, included."""

    def error_bound(self, clients: int) -> float | None:
        """Worst-case absolute error per coordinate of a decoded sum for inputs inside the
        encoder's range (None when there is no finite bound, e.g. with added noise)."""


def required_bits(clients: int, levels: int) -> int:
    """Bits b such that ``clients`` values in 0 … ``levels`` always sum below 2^b."""
    if clients < 1 or levels < 1:
        raise ValueError(f"clients and levels must be positive, got {clients}, {levels}")
    return (clients * levels).bit_length()


class FloatQuantizer:
    """Clip to a range, quantize with stochastic rounding, and work modulo 2^bits.

    Args:
        clip_range: (lo, hi): every coordinate is clipped into this interval first.
        quant_bits: Each coordinate becomes one of 2^quant_bits levels over the range.
        bits: b, the ring Z/2^b the protocol sums in.

    Example:
        >>> FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=16, bits=32).step
        3.0518043793392844e-05
    """

    def __init__(
        self,
        *,
        clip_range: tuple[float, float] = (-1.0, 1.0),
        quant_bits: int = 16,
        bits: int = 32,
    ) -> None:
        lo, hi = (float(v) for v in clip_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(
                f"secagg: clip_range must be two finite numbers lo < hi, got {clip_range}"
            )
        self.ring = Ring(bits)
        if not 1 <= quant_bits <= min(bits, 52):
            # 52: the levels must be exact in float64 for the rounding below to be exact.
            raise ConfigError(
                f"secagg: quant_bits must be in [1, {min(bits, 52)}] (at most bits={bits} "
                f"and 52), got {quant_bits}"
            )
        self.lo, self.hi = lo, hi
        self.quant_bits = quant_bits
        self.levels = (1 << quant_bits) - 1
        self.scale = self.levels / (hi - lo)

    @property
    def step(self) -> float:
        """The quantization step (hi − lo) / L."""
        return (self.hi - self.lo) / self.levels

    def check_headroom(self, clients: int) -> None:
        needed = required_bits(clients, self.levels)
        if needed > self.ring.bits:
            raise ConfigError(
                f"secagg: bits={self.ring.bits} is too small: the sum of {clients} clients, each "
                f"coordinate quantized to 0..{self.levels} (quant_bits={self.quant_bits}) over "
                f"clip_range=({self.lo:g}, {self.hi:g}), needs {needed} bits to never wrap; set "
                f"bits >= {needed} or quant_bits <= {self.ring.bits - clients.bit_length()}"
            )

    def encode(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip, shift to [0, hi − lo], scale to [0, L] and round stochastically.

        Rounding up happens with probability equal to the fractional part, so the encoding is
        unbiased; ``rng`` should be a stream of its own (one per round and client).
        """
        scaled = np.clip(np.asarray(update, dtype=np.float64), self.lo, self.hi)
        scaled -= self.lo
        scaled *= self.scale
        scaled += rng.random(scaled.shape)
        np.floor(scaled, out=scaled)
        # (hi − lo)·scale can round to a hair above L; keep the encoding inside 0..L.
        np.minimum(scaled, self.levels, out=scaled)
        return scaled.astype(self.ring.dtype)

    def clip(self, update: np.ndarray) -> tuple[np.ndarray, int]:
        """``update`` clipped to [lo, hi] as float64, and how many coordinates lay outside."""
        values = np.asarray(update, dtype=np.float64)
        outside = int(np.count_nonzero((values < self.lo) | (values > self.hi)))
        return np.clip(values, self.lo, self.hi), outside

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        """The float64 sum: Σq / scale + n·lo (Σq converts exactly while n·L < 2^53).

        Raises:
            AggregationError: A coordinate exceeds n·L, which no n honest encodings reach: an
                input or a share was altered (a flipped byte moves the sum by up to 2^b).
        """
        if clients < 1:
            raise ValueError(f"decode needs at least one client, got {clients}")
        self.check_headroom(clients)
        reachable = clients * self.levels
        outside = np.count_nonzero(total > reachable)
        if outside:
            raise AggregationError(
                f"secagg: the unmasked sum has {outside} coordinates above {reachable}, the most "
                f"{clients} honest inputs of 0..{self.levels} reach (largest {int(total.max())})"
                "; an input or a share was altered, so the sum is refused"
            )
        return total.astype(np.float64) / self.scale + clients * self.lo

    def contribution(self, encoded: np.ndarray) -> np.ndarray:
        return self.decode(encoded, 1)

    def error_bound(self, clients: int) -> float:
        """Each client's rounding moves a coordinate by less than one step: n·step in all."""
        return clients * self.step
