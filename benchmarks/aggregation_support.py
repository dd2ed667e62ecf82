"""What the aggregation benchmarks share: timing, same-session baselines, cases and the row schema.

- :func:`best_seconds` / :func:`paired_best`: best-of wall times (the least noisy statistic on a
  shared machine); paired runs alternate two callables so both see the same load.
- :class:`Baselines`: measured once per shape in the session — n float32 vectors added into a
  float32 buffer (``plaintext_sum``) and OpenSSL AES-128-CTR into a reused buffer (``raw_aes``).
- :class:`Case`: one channel at one size, set up once, with a callable per phase.
- :class:`Row`: the ``extra_info`` of one grid benchmark. Every row has the same keys (ratios
  that do not apply are None), so tables, figures and ``fedbench compare`` read every channel
  alike; ``compare`` declares the within-run ratios a regression check may judge.

Example:
    >>> row = Row(channel="secagg", role="channel", clients=10, dim=1000, dropout=0.0,
    ...           phase="server_aggregate", values=10_000, seconds=3e-6,
    ...           plaintext_sum_seconds=2e-6, message_bytes=4000, upload_bytes_per_client=6000.0,
    ...           download_bytes_per_client=900.0,
    ...           targets={"ratio_to_plaintext_sum": {"max": 1.5}})
    >>> info = row.extra_info()
    >>> info["ratio_to_plaintext_sum"], info["meets_target"], info["compare"]["bytes_per_value"]
    (1.5, True, 'lower')
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pytest_benchmark.fixture import BenchmarkFixture

from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import Client, MaskedInput

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
# Distinct float32 vectors behind a plaintext-sum baseline: 256 × 4 MB at d = 1e6 is far beyond
# every cache, so larger n repeat them instead of allocating n·d floats.
MAX_DISTINCT = 256

# Within-run ratios and their good direction, as ``fedbench compare`` reads them.
RATIOS: dict[str, str] = {
    "ratio_to_plaintext_sum": "lower",
    "mask_rate_vs_raw_aes": "higher",
    "speedup_vs_phe_per_value": "higher",
    "ratio_to_tenseal_loop": "lower",
    "bytes_per_value": "lower",
    "upload_vs_plaintext": "lower",
}


def best_seconds(fn: Callable[[], object], *, budget: float = 0.5, most: int = 50) -> float:
    """Best wall time of ``fn`` over repeats that fit in about ``budget`` seconds (≥ 1 run)."""
    tick = time.perf_counter()
    fn()
    best = time.perf_counter() - tick
    for _ in range(min(most, int(budget / max(best, 1e-9)))):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best


def measure(benchmark: BenchmarkFixture, fn: Callable[[], object], *, budget: float = 1.0) -> float:
    """Time ``fn`` with pytest-benchmark in rounds that fit ``budget`` (1 to 100) and return
    the best time; the first, untimed-by-the-plugin call is the warm-up and an estimate.

    Bounded rounds keep the JSON small (it stores every round) and each benchmark short.
    """
    estimate = best_seconds(fn, budget=0.0, most=0)
    rounds = 1 if SMOKE else int(np.clip(budget / max(estimate, 1e-9), 1, 100))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return min(benchmark.stats.stats.min, estimate) if benchmark.stats else estimate


def paired_best(
    ours: Callable[[], object], peer: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Best times of two callables run alternately, so both see the same machine load."""
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for index, fn in enumerate((ours, peer)):
            tick = time.perf_counter()
            fn()
            best[index] = min(best[index], time.perf_counter() - tick)
    return best[0], best[1]


def float32_sum(vectors: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """The plaintext server at its fastest: add float32 vectors into a float32 buffer."""
    np.copyto(out, vectors[0])
    for vector in vectors[1:]:
        np.add(out, vector, out=out)
    return out


def client_update(dim: int, seed: int) -> np.ndarray:
    """A client update: float32, well inside every channel's clip range."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, dim).astype(np.float32)


def replayed_masked_input(client: Client, values: np.ndarray, masks: MaskGenerator) -> MaskedInput:
    """``client``'s masked input, again: a benchmark replays one round's masking (several
    dimensions, repeated timings), which a client refuses (one input a round), so its flag is
    reset. Safe here only because the replayed inputs never reach anyone who could subtract
    them."""
    client._masked = False
    return client.masked_input(values, masks)


def plaintext_vectors(clients: int, dim: int) -> list[np.ndarray]:
    """``clients`` distinct float32 vectors (distinct, so the sum streams through memory)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(dim, dtype=np.float32) for _ in range(clients)]


class AesKeystream:
    """OpenSSL AES-128-CTR writing ``dim`` 32-bit words of keystream into a reused buffer."""

    def __init__(self, dim: int) -> None:
        nbytes = 4 * dim
        self.zeros = memoryview(np.zeros(nbytes, dtype=np.uint8))  # type: ignore[arg-type]
        self.buffer = np.empty(nbytes + 16, dtype=np.uint8)  # CTR may hold back a block
        self._out = memoryview(self.buffer)  # type: ignore[arg-type]
        self._cipher = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor()

    def __call__(self) -> int:
        return self._cipher.update_into(self.zeros, self._out)


class Baselines:
    """Same-session baselines, measured on first use per shape and cached."""

    def __init__(self) -> None:
        self._sums: dict[tuple[int, int], float] = {}
        self._aes: dict[int, float] = {}

    def plaintext_sum(self, clients: int, dim: int) -> float:
        """Seconds to add ``clients`` float32 vectors of length ``dim`` (beyond
        ``MAX_DISTINCT`` clients the distinct vectors repeat: they still stream from memory)."""
        key = (clients, dim)
        if key not in self._sums:
            distinct = plaintext_vectors(min(clients, MAX_DISTINCT), dim)
            vectors = [distinct[i % len(distinct)] for i in range(clients)]
            out = np.empty(dim, dtype=np.float32)
            self._sums[key] = best_seconds(lambda: float32_sum(vectors, out))
        return self._sums[key]

    def aes_seconds_per_word(self, dim: int) -> float:
        """Seconds per 32-bit word of AES-128-CTR keystream into a reused buffer."""
        if dim not in self._aes:
            self._aes[dim] = best_seconds(AesKeystream(dim)) / dim
        return self._aes[dim]


@dataclass
class Case:
    """One channel (or peer) at one size, set up once.

    Attributes:
        phases: Phase name → the zero-argument callable timed for it.
        values: Phase name → values one call processes (dim, or n·dim for the server's sum).
        message_bytes: One client's vector message (masked vector, ciphertexts...).
        upload_bytes_per_client: Everything one client sends in a round (keys, shares included).
        download_bytes_per_client: What one client receives from the channel in a round.
        aes_words: Phase name → 32-bit words of AES keystream one call expands (mask phases).
        masks_only: Phase name → a callable doing only the phase's mask expansion, where the
            phase does more (SecAgg unmasking: the seeds' Shamir reconstruction comes first).
        tenseal_loop: Phase name → the bare TenSEAL loop on the same data (CKKS), timed paired
            with ours.
        setup: Channel parameters (key size, graph degree...) for ``extra_info``.
    """

    phases: dict[str, Callable[[], object]]
    values: dict[str, int]
    message_bytes: int
    upload_bytes_per_client: float
    download_bytes_per_client: float
    aes_words: dict[str, int] = field(default_factory=dict)
    masks_only: dict[str, Callable[[], object]] = field(default_factory=dict)
    tenseal_loop: dict[str, Callable[[], object]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)


def _meets(value: float | None, bound: dict[str, float]) -> bool:
    if value is None or math.isnan(value):
        return False
    return value <= bound.get("max", math.inf) and value >= bound.get("min", -math.inf)


@dataclass
class Row:
    """The ``extra_info`` of one (channel, n, dim, dropout, phase) benchmark.

    Attributes:
        channel: Channel or peer name (``secagg``, ``ckks``, ``phe-per-value``...).
        role: ``channel`` (ours), ``peer`` (another library on the same data).
        clients: n, the clients whose messages the server sums.
        dim: Values per client.
        dropout: Fraction of the n clients that dropped after sharing keys (SecAgg only).
        phase: ``client_encode``, ``server_aggregate``, ``server_decode`` (SecAgg: the server
            unmasks) or ``client_decode`` (HE: the key-holding clients decrypt).
        values: Values one call processes.
        seconds: Best time of one call.
        plaintext_sum_seconds: The float32 sum of n × dim in this session.
        message_bytes: One client's vector message.
        upload_bytes_per_client: Everything one client sends in a round.
        download_bytes_per_client: What one client receives from the channel in a round.
        mask_rate_vs_raw_aes: AES keystream words per second of the phase's mask expansion
            over the raw AES-CTR rate.
        speedup_vs_phe_per_value: phe's per-value seconds per value over ours.
        ratio_to_tenseal_loop: Ours over the bare TenSEAL loop, timed paired.
        reference_seconds: The peer/baseline times the ratios came from.
        targets: Metric → ``{"max": x}`` or ``{"min": x}`` (recorded, never asserted).
        setup: Channel parameters.
    """

    channel: str
    role: str
    clients: int
    dim: int
    dropout: float
    phase: str
    values: int
    seconds: float
    plaintext_sum_seconds: float
    message_bytes: int
    upload_bytes_per_client: float
    download_bytes_per_client: float
    mask_rate_vs_raw_aes: float | None = None
    speedup_vs_phe_per_value: float | None = None
    ratio_to_tenseal_loop: float | None = None
    reference_seconds: dict[str, float] = field(default_factory=dict)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)

    def extra_info(self) -> dict[str, Any]:
        """The row as ``extra_info``: fields, derived ratios, target verdict and ``compare``."""
        info = asdict(self)
        info.update(
            seconds_per_value=self.seconds / self.values,
            ratio_to_plaintext_sum=self.seconds / self.plaintext_sum_seconds,
            bytes_per_value=self.message_bytes / self.dim,
            upload_vs_plaintext=self.upload_bytes_per_client / (4 * self.dim),
        )
        info["meets_target"] = (
            all(_meets(info[metric], bound) for metric, bound in self.targets.items())
            if self.targets else None
        )
        # Regressions are judged on our channels only; a peer's ratio is context.
        info["compare"] = {
            metric: direction for metric, direction in RATIOS.items()
            if self.role == "channel" and info[metric] is not None
        }
        return info
