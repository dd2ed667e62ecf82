"""Distributed DP with the discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021): the maths.

No party adds all the noise. Each client clips its update to L2 norm C, rotates it with a
randomized Hadamard transform (so that no coordinate carries much of the norm), scales it by s,
rounds it stochastically to integers (conditionally: until its norm is at most Δ̃, the integer
sensitivity) and adds discrete Gaussian noise of variance σ_loc². Secure aggregation sums the
vectors modulo 2^b; the server only learns the sum, whose noise is the sum of the clients' shares:
with k shares the total variance is k·σ_loc², i.e. a noise multiplier √k·σ_loc/Δ̃ for the
Gaussian accountant (the discrete Gaussian has the same concentrated-DP guarantee as the
continuous one, and a sum of discrete Gaussians with σ_loc ≥ 2 is one up to Kairouz et al.'s τ,
which :func:`sum_gap` bounds). Fewer shares (dropped clients) mean less noise and a larger ε.

The neighbouring relation is the one of Kairouz et al.: one client's update is replaced (by zero),
while every participant still adds its noise share.

This module holds the pure functions and :class:`DistributedEncoder`; the ``distributed_dp``
defense that runs it under secure aggregation is in :mod:`.distributed_defense`, so that this
module does not depend on the secure-aggregation package.

Example:
    >>> import numpy as np
    >>> x = np.array([3.0, 4.0, 0.0])
    >>> signs = rotation_signs(4, np.random.default_rng(0))
    >>> np.allclose(unrotate(rotate(x, signs), signs, 3), x)
    True
    >>> round(float(np.linalg.norm(rotate(x, signs))), 6)
    5.0
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbench.errors import AggregationError, ConfigError

# Probability bound for one coordinate of one round's sum leaving the ring's signed range,
# union-bounded over the coordinates (see plan()).
WRAP_PROBABILITY = 1e-9
# Conditional rounding accepts a rounded vector with probability >= 1 − β (Kairouz et al.).
ROUNDING_BETA = math.exp(-0.5)
# τ·d above this means the summed discrete Gaussians are not close enough to one.
MAX_SUM_GAP = 1e-6


# -- rotation ---------------------------------------------------------------------------------


def padded_dim(dim: int) -> int:
    """The smallest power of two >= ``dim`` (the Hadamard transform needs one)."""
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    return 1 << (dim - 1).bit_length()


def hadamard(x: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh–Hadamard transform H·x/√n of a length-2^k vector (its own inverse).

    Iterative butterflies, O(n log n), on a float64 copy.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Hadamard transform needs a power-of-two length, got {n}")
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        blocks = y.reshape(-1, 2, h)
        top = blocks[:, 0, :].copy()
        blocks[:, 0, :] += blocks[:, 1, :]
        blocks[:, 1, :] *= -1
        blocks[:, 1, :] += top
        h *= 2
    return y / math.sqrt(n)


def rotation_signs(padded: int, rng: np.random.Generator) -> np.ndarray:
    """The random diagonal D (±1) of the rotation H·D; public, shared by a round's clients."""
    return rng.integers(0, 2, size=padded).astype(np.float64) * 2 - 1


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """H·D·pad(x): zero-pad to the signs' length, flip signs, Hadamard (norm preserving)."""
    padded = np.zeros(len(signs), dtype=np.float64)
    padded[: len(x)] = x
    return hadamard(padded * signs)


def unrotate(y: np.ndarray, signs: np.ndarray, dim: int) -> np.ndarray:
    """The inverse of :func:`rotate`, truncated to the first ``dim`` coordinates."""
    return np.asarray(signs * hadamard(y))[:dim]


# -- clipping and rounding --------------------------------------------------------------------


def clip_l2(x: np.ndarray, clip_norm: float) -> np.ndarray:
    """``x`` (as float64) scaled down to L2 norm at most ``clip_norm``."""
    x = np.asarray(x, dtype=np.float64)
    norm = float(np.linalg.norm(x))
    return x if norm <= clip_norm else x * (clip_norm / norm)


def rounded_norm_bound(norm: float, dim: int, beta: float = ROUNDING_BETA) -> float:
    """Δ̃: the norm a stochastically rounded vector of norm <= ``norm`` stays below w.p. >= 1−β.

    Kairouz et al.: Δ̃² = min(c² + d/4 + √(2 ln(1/β))·(c + √d/2), (c + √d)²), the second term
    being the worst case (every coordinate moves by less than 1).
    """
    slack = math.sqrt(2 * math.log(1 / beta))
    likely = norm**2 + dim / 4 + slack * (norm + math.sqrt(dim) / 2)
    return math.sqrt(min(likely, (norm + math.sqrt(dim)) ** 2))


def stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round each entry up with probability equal to its fractional part (unbiased), as int64."""
    floor = np.floor(x)
    return np.asarray(floor + (rng.random(x.shape) < x - floor), dtype=np.int64)


def conditional_round(
    x: np.ndarray, bound: float, rng: np.random.Generator, max_tries: int = 1000
) -> np.ndarray:
    """Stochastically round ``x`` until the integer vector's L2 norm is at most ``bound``.

    Accepting only such vectors makes ``bound`` a hard sensitivity bound, whatever the rounding
    drew.
    """
    for _ in range(max_tries):
        rounded = stochastic_round(x, rng)
        if float(np.linalg.norm(rounded.astype(np.float64))) <= bound:
            return rounded
    raise RuntimeError(
        f"conditional rounding found no vector within norm {bound:.6g} in {max_tries} tries "
        f"(input norm {float(np.linalg.norm(x)):.6g})"
    )


# -- the discrete Gaussian (Canonne, Kamath, Steinke, NeurIPS 2020) ---------------------------


RandomSource = random.Random  # random.Random (seeded) or secrets.SystemRandom (CSPRNG)


def _bernoulli_exp_small(rng: RandomSource, num: int, den: int) -> bool:
    # Bernoulli(exp(−num/den)) for 0 <= num/den <= 1, exactly: K = first k with A_k = 0 where
    # A_k ~ Bernoulli(γ/k); return K odd (CKS Algorithm 1).
    k = 1
    while rng.randrange(den * k) < num:
        k += 1
    return k % 2 == 1


def bernoulli_exp(rng: RandomSource, num: int, den: int) -> bool:
    """Bernoulli(exp(−num/den)) for integers num >= 0, den > 0, with exact integer arithmetic."""
    while num > den:  # exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋))
        if not _bernoulli_exp_small(rng, 1, 1):
            return False
        num -= den
    return _bernoulli_exp_small(rng, num, den)


def discrete_laplace(rng: RandomSource, scale: int) -> int:
    """One draw with P(x) ∝ exp(−|x|/scale) over the integers (CKS Algorithm 2)."""
    while True:
        u = rng.randrange(scale)
        if not bernoulli_exp(rng, u, scale):
            continue
        v = 0
        while bernoulli_exp(rng, 1, 1):
            v += 1
        magnitude = u + scale * v
        negative = rng.randrange(2) == 1
        if negative and magnitude == 0:
            continue
        return -magnitude if negative else magnitude


def discrete_gaussian(rng: RandomSource, variance: int) -> int:
    """One exact draw with P(x) ∝ exp(−x²/(2σ²)) over the integers, σ² = ``variance``.

    CKS Algorithm 3: a discrete Laplace proposal with scale t = ⌊σ⌋ + 1, accepted with
    probability exp(−(|y| − σ²/t)²/(2σ²)), evaluated exactly on integers.
    """
    if variance < 1:
        raise ValueError(f"variance must be a positive integer, got {variance}")
    t = math.isqrt(variance) + 1
    while True:
        y = discrete_laplace(rng, t)
        gap = abs(y) * t - variance  # (|y| − σ²/t)·t
        if bernoulli_exp(rng, gap * gap, 2 * t * t * variance):
            return y


def discrete_gaussian_vector(count: int, variance: int, rng: RandomSource) -> np.ndarray:
    """``count`` independent discrete Gaussian draws as int64, exactly, one at a time (pure
    Python, ~5 µs each): the sampler of ``secure_mode``, whose randomness is the OS CSPRNG."""
    return np.fromiter((discrete_gaussian(rng, variance) for _ in range(count)), dtype=np.int64,
                       count=count)


# Proposals drawn per missing value in one pass of the vectorized sampler: the acceptance rate is
# about 0.7 for every σ, so most vectors fill in one or two passes.
_OVERSAMPLE = 1.5


def discrete_gaussian_array(
    count: int, variance: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` discrete Gaussian draws (σ² = ``variance``) as int64, vectorized, for seeded runs.

    The rejection sampler of :func:`discrete_gaussian` on whole arrays: a discrete Laplace
    proposal of scale t = ⌊σ⌋ + 1 (|y| geometric with ratio e^(−1/t), a random sign, −0
    rejected) accepted with probability exp(−(|y| − σ²/t)²/(2σ²)). The acceptance test is
    evaluated in float64 rather than with exact Bernoulli(exp) integer arithmetic, which moves
    each probability by at most a few units in the 16th digit.
    """
    if variance < 1:
        raise ValueError(f"variance must be a positive integer, got {variance}")
    scale = math.isqrt(variance) + 1
    success = -math.expm1(-1.0 / scale)  # P(geometric = 1) = 1 − e^(−1/t)
    centre, width = variance / scale, 2.0 * variance
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        batch = int((count - filled) * _OVERSAMPLE) + 16
        magnitude = rng.geometric(success, batch) - 1
        negative = rng.random(batch) < 0.5
        gap = magnitude - centre
        keep = (rng.random(batch) < np.exp(-(gap * gap) / width)) & ~(negative & (magnitude == 0))
        draws = np.where(negative, -magnitude, magnitude)[keep][: count - filled]
        out[filled : filled + draws.size] = draws
        filled += draws.size
    return out


def sum_gap(local_variance: float, clients: int) -> float:
    """τ of Kairouz et al.: how far a sum of ``clients`` discrete Gaussians is from one.

    τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)); it enters ε only through τ·d, so the accounting
    below treats the sum as a discrete Gaussian of variance n·σ² only when τ·d is negligible.
    """
    return 10 * sum(
        math.exp(-2 * math.pi**2 * local_variance * k / (k + 1)) for k in range(1, clients)
    )


# -- the plan: scale, noise and modulus --------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The integer encoding of one run, with every bound that it was checked against.

    Attributes:
        dim: d, the update length.
        padded: d', the rotated length (a power of two).
        clip_norm: C (real units).
        scale: s, integers per real unit.
        sensitivity: Δ̃, the L2 norm bound of one client's rounded vector (integer units).
        local_variance: σ_loc², each client's discrete Gaussian variance (integer units).
        expected_clients: m, the noise shares the configuration is designed for.
        noise_multiplier: z, the accounted multiplier with m shares: √m·σ_loc/Δ̃ >= the target.
        bits: b, the ring Z/2^b.
        max_clients: The most clients whose sum is guaranteed (w.p. 1 − 1e-9) not to wrap.
        headroom: The |coordinate| bound of the sum of ``max_clients`` vectors (< 2^(b−1)).
    """

    dim: int
    padded: int
    clip_norm: float
    scale: float
    sensitivity: float
    local_variance: int
    expected_clients: float
    noise_multiplier: float
    bits: int
    max_clients: int
    headroom: float

    def shares_noise_multiplier(self, shares: float) -> float:
        """The accounted noise multiplier of a sum that holds ``shares`` noise shares."""
        return math.sqrt(shares * self.local_variance) / self.sensitivity

    @property
    def central_std(self) -> float:
        """Std of the summed noise with m shares, in real units (≈ z·C)."""
        return math.sqrt(self.expected_clients * self.local_variance) / self.scale


def _headroom(padded: int, clients: int, scaled_clip: float, local_variance: float) -> float:
    # The sum of n rotated vectors of norm <= sC is a rotation of a vector of norm <= n·sC: each
    # coordinate is sub-Gaussian with variance proxy (n·sC)²/d' (Hoeffding over the random
    # signs); the summed noise adds n·σ_loc²; the rounding moves each coordinate by < 1 per
    # client. A union bound over d' coordinates at WRAP_PROBABILITY.
    proxy = (clients * scaled_clip) ** 2 / padded + clients * local_variance
    return math.sqrt(2 * proxy * math.log(2 * padded / WRAP_PROBABILITY)) + clients


def plan(
    *,
    dim: int,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    max_clients: int,
    bits: int,
    scale: float | None = None,
) -> Plan:
    """Choose (or check) the scale, the local noise and the headroom; refuse what could wrap.

    Each client's variance is σ_loc² = ⌈(z·Δ̃)²/m⌉, so m shares give at least multiplier z with
    respect to the integer sensitivity Δ̃. Without ``scale`` the largest scale whose sum of
    ``max_clients`` vectors stays inside the signed range of Z/2^b is chosen.

    Raises:
        ConfigError: when the modulus cannot hold the sum (naming bits or scale), or the noise
            is too coarse for the discrete Gaussian accounting.
    """
    if not clip_norm > 0:
        raise ConfigError(f"distributed_dp: clip_norm must be positive, got {clip_norm}")
    if not noise_multiplier > 0:
        raise ConfigError(
            f"distributed_dp: noise_multiplier must be positive, got {noise_multiplier}"
        )
    if not 0 < expected_clients <= max_clients:
        raise ConfigError(
            f"distributed_dp: expected_clients must be in (0, max_clients={max_clients}], got "
            f"{expected_clients}"
        )
    padded = padded_dim(dim)
    limit = 2 ** (bits - 1)  # the sum is read as a signed integer in [−2^(b−1), 2^(b−1))

    def build(s: float) -> Plan:
        sensitivity = rounded_norm_bound(s * clip_norm, padded)
        variance = max(1, math.ceil((noise_multiplier * sensitivity) ** 2 / expected_clients))
        return Plan(
            dim=dim, padded=padded, clip_norm=clip_norm, scale=s, sensitivity=sensitivity,
            local_variance=variance, expected_clients=expected_clients,
            noise_multiplier=math.sqrt(expected_clients * variance) / sensitivity,
            bits=bits, max_clients=max_clients,
            headroom=_headroom(padded, max_clients, s * clip_norm, variance),
        )

    if scale is None:
        # The headroom grows with s: bisect (in log s) for the largest s that fits.
        low, high = 1e-9, float(limit)
        if build(low).headroom >= limit:
            raise ConfigError(
                f"distributed_dp: bits={bits} cannot hold the sum of {max_clients} clients "
                f"at any scale (rounding alone moves a coordinate by up to {max_clients}); "
                "raise bits"
            )
        for _ in range(100):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if build(middle).headroom < limit else (low, middle)
        scale = low
    elif not scale > 0:
        raise ConfigError(f"distributed_dp: scale must be positive, got {scale}")
    chosen = build(scale)
    if chosen.headroom >= limit:
        needed = math.ceil(math.log2(chosen.headroom)) + 1
        raise ConfigError(
            f"distributed_dp: wrap-prone: with scale={scale:g} the sum of {max_clients} clients "
            f"can reach ±{chosen.headroom:.4g}, beyond the ±2^{bits - 1} of bits={bits}; set "
            f"bits >= {needed} or a smaller scale (or leave scale unset to choose it)"
        )
    gap = sum_gap(chosen.local_variance, max_clients) * padded
    if gap > MAX_SUM_GAP:
        raise ConfigError(
            f"distributed_dp: the local noise (σ_loc² = {chosen.local_variance} integer units) "
            f"is too coarse: the sum of discrete Gaussians is not close to one (τ·d = {gap:.2g});"
            " use a larger scale or more bits"
        )
    return chosen


# -- the encoder (the IntegerEncoder of the secure-aggregation channel) ------------------------


class DistributedEncoder:
    """Float update ↔ ring vector: clip, rotate, scale, round, add discrete Gaussian noise.

    It has the interface of the secagg channel's ``IntegerEncoder`` (``ring``,
    ``check_headroom``, ``clip``, ``encode``, ``decode``, ``error_bound``) plus ``begin_round``,
    which sets the round's public rotation. ``decode`` records how many noise shares each
    round's sum held.

    Args:
        ring: The secure-aggregation ring Z/2^b (``defenses.secagg.ring.Ring``).
        secure: Draw the noise from the OS CSPRNG; otherwise from a seeded generator derived
            from the rounding stream.

    The encoding itself is fixed by :meth:`configure` once the run's dimension is known.
    """

    def __init__(self, ring: Any, *, secure: bool = False) -> None:
        self.ring = ring
        self.secure = secure
        self._plan: Plan | None = None
        self.signs: np.ndarray | None = None
        self.shares: list[int] = []

    def configure(self, plan: Plan) -> None:
        """Fix the encoding for a run (and forget the previous run's rounds)."""
        if plan.bits != self.ring.bits:
            raise ConfigError(
                f"distributed_dp: the plan is for bits={plan.bits}, the ring has {self.ring.bits}"
            )
        self._plan = plan
        self.signs = None
        self.shares = []

    @property
    def plan(self) -> Plan:
        """The run's encoding (set by :meth:`configure`)."""
        if self._plan is None:
            raise RuntimeError("distributed_dp: the encoder is used before setup")
        return self._plan

    def begin_round(self, signs: np.ndarray) -> None:
        """Set the round's rotation (the same for every client of the round)."""
        if signs.shape != (self.plan.padded,):
            raise ValueError(f"rotation has shape {signs.shape}, expected ({self.plan.padded},)")
        self.signs = signs

    def check_headroom(self, clients: int) -> None:
        """Refuse sums of more clients than the plan was checked for."""
        if clients > self.plan.max_clients:
            raise ConfigError(
                f"distributed_dp: {clients} clients exceed the {self.plan.max_clients} whose sum "
                f"fits bits={self.plan.bits} without wrapping"
            )

    def clip(self, update: np.ndarray) -> tuple[np.ndarray, int]:
        """``update`` clipped to L2 norm C as float64, and how many values that changed (all
        non-zero ones when the norm exceeds C, else none)."""
        clipped = clip_l2(update, self.plan.clip_norm)
        return clipped, int(np.count_nonzero(clipped != np.asarray(update, dtype=np.float64)))

    def integer_vector(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The client's signed integer vector (before reduction modulo 2^b): x̃ + noise."""
        if self.signs is None:
            raise RuntimeError("distributed_dp: encode called before begin_round")
        plan = self.plan
        scaled = rotate(clip_l2(update, plan.clip_norm), self.signs) * plan.scale
        rounded = conditional_round(scaled, plan.sensitivity, rng)
        noise = (
            discrete_gaussian_vector(plan.padded, plan.local_variance, secrets.SystemRandom())
            if self.secure
            else discrete_gaussian_array(plan.padded, plan.local_variance, rng)
        )
        return np.asarray(rounded + noise)

    def encode(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The client's vector in Z/2^b (two's complement of the signed integers)."""
        signed = self.integer_vector(update, rng)
        wrapped = signed.astype(np.uint64) & np.uint64(2**self.plan.bits - 1)
        return wrapped.astype(self.ring.dtype)

    def decode(self, total: np.ndarray, clients: int) -> np.ndarray:
        """The noisy float64 sum: centre the ring sum, unscale, unrotate; records the shares."""
        if self.signs is None:
            raise RuntimeError("distributed_dp: decode called before begin_round")
        self.check_headroom(clients)
        signed = to_signed(total, self.plan.bits)
        outside = np.count_nonzero(np.abs(signed) > self.plan.headroom)
        if outside:
            # Honest sums stay inside the headroom except with probability WRAP_PROBABILITY.
            raise AggregationError(
                f"distributed_dp: the unmasked sum has {outside} coordinates beyond "
                f"±{self.plan.headroom:.4g}, which {self.plan.max_clients} honest clients' "
                "vectors do not reach; an input or a share was altered, so the sum is refused"
            )
        self.shares.append(clients)
        return self.signed_to_float(signed)

    def contribution(self, encoded: np.ndarray) -> np.ndarray:
        """One client's vector in float coordinates, its noise share included (what a
        colluding client subtracts from the sum); unlike ``decode``, records no share."""
        return self.signed_to_float(to_signed(encoded, self.plan.bits))

    def signed_to_float(self, signed: np.ndarray) -> np.ndarray:
        """Signed integer sum → float sum in the original coordinates."""
        assert self.signs is not None
        return unrotate(signed.astype(np.float64) / self.plan.scale, self.signs, self.plan.dim)

    def error_bound(self, clients: int) -> float | None:
        """None: the decoded sum carries noise, so there is no worst-case bound."""
        return None


def to_signed(total: np.ndarray, bits: int) -> np.ndarray:
    """Ring elements in [0, 2^b) read as signed integers in [−2^(b−1), 2^(b−1))."""
    values = total.astype(np.uint64) & np.uint64(2**bits - 1)
    signed = values.astype(np.int64) if bits < 64 else values.view(np.int64)
    if bits < 64:
        signed[signed >= 2 ** (bits - 1)] -= 2**bits
    return signed
