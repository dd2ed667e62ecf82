"""The aggregation hot path of the channels, as ratios to baselines measured in the same run.

One parametrized suite over channels × clients n × dimension × dropout fraction × phase:

- ``client_encode``: one client turns its update into its message (SecAgg: masking the
  quantized update; the quantization's own time is in ``extra_info``);
- ``server_aggregate``: the server combines the n messages (SecAgg: the wrapping uint sum);
- ``server_decode``: the server turns the combination into the sum (SecAgg: unmasking, i.e.
  Shamir reconstruction of the seeds plus regeneration of the masks left in the sum).

Baselines, measured in this session with the same shapes (best of several runs):

- ``plaintext_sum``: n float32 vectors added into a float32 buffer;
- ``raw_aes_ctr``: OpenSSL AES-128-CTR (``cryptography``), one cipher writing into a reused
  buffer with ``update_into``: the keystream rate a mask generator could at best reach.

``extra_info`` holds the parameters, bytes per client and the ratios: ``ratio_to_plaintext_sum``
for every phase, ``mask_rate_vs_raw_aes`` (words of AES keystream the phase consumed per second
over the raw rate) where a phase expands masks. Targets (recorded, never asserted):
``server_aggregate`` without dropouts ≤ 1.5× the plaintext sum; mask generation ≥ 0.5 of the raw
AES-CTR rate.

Other channels join the suite by adding a builder to ``CASES`` (name → builder of a ``Case``).

Run: ``pytest benchmarks/test_aggregation.py --benchmark-only`` (full grid: several minutes);
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_aggregation.py --benchmark-disable``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedbench.defenses.secagg.encoding import FloatQuantizer
from fedbench.defenses.secagg.graph import Graph, choose_degree, full_threshold
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import SecAggRound, Stage, UnmaskingResponse

SMOKE = os.environ.get("FEDBENCH_BENCH_SMOKE") == "1"
CLIENTS = [10] if SMOKE else [10, 100]
DIMS = [10_000] if SMOKE else [10_000, 100_000, 1_000_000]
DROPOUTS = [0.0, 0.1]
PHASES = ["client_encode", "server_aggregate", "server_decode"]
AGGREGATION_TARGET = 1.5  # server_aggregate / plaintext_sum, no dropouts
MASK_RATE_TARGET = 0.5  # mask words per second / raw AES-CTR words per second
TOLERATED = 0.1  # SecAgg+'s design fractions (dropout and corruption)


def best_seconds(fn: Callable[[], object], *, budget: float = 0.5, most: int = 50) -> float:
    """Best wall time of ``fn`` over repeats that fit in about ``budget`` seconds."""
    tick = time.perf_counter()
    fn()
    best = time.perf_counter() - tick
    for _ in range(min(most, int(budget / max(best, 1e-9)))):
        tick = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tick)
    return best


def float32_sum(vectors: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """The plaintext server: add float32 vectors into a float32 buffer."""
    np.copyto(out, vectors[0])
    for vector in vectors[1:]:
        np.add(out, vector, out=out)
    return out


class Baselines:
    """Same-session baselines, measured on first use per shape and cached."""

    def __init__(self) -> None:
        self._sums: dict[tuple[int, int], float] = {}
        self._aes: dict[int, float] = {}

    def plaintext_sum(self, clients: int, dim: int) -> float:
        """Seconds to add ``clients`` float32 vectors of length ``dim``."""
        key = (clients, dim)
        if key not in self._sums:
            rng = np.random.default_rng(0)
            vectors = [rng.standard_normal(dim, dtype=np.float32) for _ in range(clients)]
            out = np.empty(dim, dtype=np.float32)
            self._sums[key] = best_seconds(lambda: float32_sum(vectors, out))
        return self._sums[key]

    def aes_seconds_per_word(self, dim: int) -> float:
        """Seconds per 32-bit word of AES-128-CTR keystream into a reused buffer."""
        if dim not in self._aes:
            nbytes = 4 * dim
            zeros = memoryview(np.zeros(nbytes, dtype=np.uint8))  # type: ignore[arg-type]
            out = memoryview(np.empty(nbytes + 16, dtype=np.uint8))  # type: ignore[arg-type]
            cipher = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor()
            self._aes[dim] = best_seconds(lambda: cipher.update_into(zeros, out)) / dim
        return self._aes[dim]


@pytest.fixture(scope="session")
def baselines() -> Baselines:
    return Baselines()


@dataclass
class Case:
    """One channel at one size, set up once.

    Attributes:
        phases: Phase name → the zero-argument callable timed for it.
        aes_words: Phase name → 32-bit words of AES keystream one call expands (mask phases).
        info: Parameters and bytes for ``extra_info``.
    """

    phases: dict[str, Callable[[], object]]
    aes_words: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# -- SecAgg and SecAgg+ ------------------------------------------------------------------------

@dataclass
class KeyRounds:
    """A round after its key rounds, and the survivors' unmasking answers (dimension-free)."""

    round: SecAggRound
    dropouts: dict[int, Stage]
    survivors: frozenset[int]
    responses: dict[int, UnmaskingResponse]


_KEY_ROUNDS: dict[tuple[str, int, float], KeyRounds] = {}


def key_rounds(mode: str, clients: int, dropout: float) -> KeyRounds:
    """The slow, dimension-free part of the set-up, cached for one configuration at a time."""
    key = (mode, clients, dropout)
    if key not in _KEY_ROUNDS:
        _KEY_ROUNDS.clear()
        members = list(range(clients))
        if mode == "secagg":
            graph = Graph.full(members)
            threshold = full_threshold(clients, corruption=TOLERATED)
        else:
            plan = choose_degree(clients, dropout=TOLERATED, corruption=TOLERATED)
            graph = Graph.from_plan(members, plan, seed=bytes(range(32)))
            threshold = plan.threshold
        rng = np.random.default_rng(clients)
        gone = rng.choice(clients, size=round(dropout * clients), replace=False)
        dropouts = {int(c): Stage.MASKED_INPUT for c in gone}
        ring = FloatQuantizer(quant_bits=16, bits=32).ring
        rnd = SecAggRound(members, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts)
        survivors = frozenset(members) - set(dropouts)
        _KEY_ROUNDS[key] = KeyRounds(
            rnd, dropouts, survivors, rnd.unmasking_responses(survivors)
        )
    return _KEY_ROUNDS[key]


def secagg_case(mode: str, clients: int, dim: int, dropout: float) -> Case:
    setup = key_rounds(mode, clients, dropout)
    rnd, survivors, responses = setup.round, setup.survivors, setup.responses
    quantizer = FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=16, bits=32)
    rng = np.random.default_rng(dim)
    update = rng.uniform(-0.5, 0.5, dim).astype(np.float32)
    encoded = quantizer.encode(update, rng)
    sent = {c: rnd.clients[c].masked_input(encoded, rnd.masks) for c in sorted(survivors)}
    server = rnd.server
    total = server.sum_masked(sent)
    add, subtract = server.mask_seeds(survivors, responses)
    client = rnd.clients[min(survivors)]
    client_masks = 1 + len(client._inbox)
    masks = MaskGenerator(rnd.setup.ring)
    masked_bytes = sent[min(survivors)].nbytes
    key_bytes = float(np.mean([rnd.upload[c] for c in survivors]))
    return Case(
        phases={
            "client_encode": lambda: client.masked_input(encoded, masks),
            "server_aggregate": lambda: server.sum_masked(sent),
            "server_decode": lambda: server.unmask(total, survivors, responses, rnd.masks),
        },
        aes_words={
            "client_encode": client_masks * dim,
            "server_decode": (len(add) + len(subtract)) * dim,
        },
        info={
            "degree": rnd.setup.graph.degree,
            "threshold": rnd.setup.threshold,
            "dropped": len(setup.dropouts),
            "masks_per_client": client_masks,
            "masks_regenerated": len(add) + len(subtract),
            "quantize_seconds": best_seconds(lambda: quantizer.encode(update, rng)),
            "reconstruct_seconds": best_seconds(
                lambda: server.mask_seeds(survivors, responses), budget=0.0, most=0
            ),
            "masked_input_bytes": masked_bytes,
            # rnd.upload holds the key rounds and the unmasking answers (the masked inputs
            # above were made outside its accounting).
            "key_bytes_per_client": key_bytes,
            "upload_bytes_per_client": key_bytes + masked_bytes,
            "upload_vs_plaintext": (key_bytes + masked_bytes) / (4 * dim),
            "download_bytes_per_client": float(np.mean([rnd.download[c] for c in survivors])),
        },
    )


CASES: dict[str, Callable[[int, int, float], Case]] = {
    "secagg": lambda n, dim, dropout: secagg_case("secagg", n, dim, dropout),
    "secagg+": lambda n, dim, dropout: secagg_case("secagg+", n, dim, dropout),
}

_CURRENT: dict[tuple[str, int, int, float], Case] = {}


def case_for(channel: str, clients: int, dim: int, dropout: float) -> Case:
    """The case of one configuration; only the latest is kept (n × dim vectors are large)."""
    key = (channel, clients, dim, dropout)
    if key not in _CURRENT:
        _CURRENT.clear()
        _CURRENT[key] = CASES[channel](clients, dim, dropout)
    return _CURRENT[key]


# Ordered so that consecutive tests share a case (and the key rounds across dimensions).
GRID = [
    pytest.param(channel, n, dropout, dim, phase, id=f"{channel}-n{n}-drop{dropout}-d{dim}-{phase}")
    for channel in CASES
    for n in CLIENTS
    for dropout in DROPOUTS
    for dim in DIMS
    for phase in PHASES
]


@pytest.mark.parametrize(("channel", "clients", "dropout", "dim", "phase"), GRID)
def test_channel_phase(
    benchmark, baselines: Baselines, channel: str, clients: int, dropout: float, dim: int,
    phase: str,
) -> None:
    case = case_for(channel, clients, dim, dropout)
    fn = case.phases[phase]
    estimate = best_seconds(fn, budget=0.0, most=0)
    rounds = 1 if SMOKE else int(np.clip(1.0 / max(estimate, 1e-9), 3, 100))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if SMOKE else 1)
    seconds = benchmark.stats.stats.min if benchmark.stats else estimate
    plaintext = baselines.plaintext_sum(clients, dim)
    info: dict[str, Any] = {
        "channel": channel, "clients": clients, "dim": dim, "dropout": dropout, "phase": phase,
        **case.info,
        "seconds": seconds,
        "plaintext_sum_seconds": plaintext,
        "ratio_to_plaintext_sum": seconds / plaintext,
    }
    if phase == "server_aggregate" and dropout == 0:
        info["target_ratio_to_plaintext_sum"] = AGGREGATION_TARGET
        info["meets_target"] = seconds / plaintext <= AGGREGATION_TARGET
    words = case.aes_words.get(phase)
    if words:
        raw = baselines.aes_seconds_per_word(dim)
        info["raw_aes_seconds_per_word"] = raw
        info["mask_rate_vs_raw_aes"] = raw * words / seconds
        if phase == "client_encode":
            info["target_mask_rate_vs_raw_aes"] = MASK_RATE_TARGET
            info["meets_target"] = raw * words / seconds >= MASK_RATE_TARGET
    benchmark.extra_info.update(info)


# -- the baselines, recorded on their own ------------------------------------------------------


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("clients", CLIENTS)
def test_baseline_plaintext_sum(benchmark, clients: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(dim, dtype=np.float32) for _ in range(clients)]
    out = np.empty(dim, dtype=np.float32)
    total = benchmark(float32_sum, vectors, out)
    np.testing.assert_allclose(total, np.sum(vectors, axis=0, dtype=np.float64), rtol=1e-4,
                               atol=1e-3)
    benchmark.extra_info.update({"clients": clients, "dim": dim, "bytes": 4 * dim * clients})


@pytest.mark.parametrize("dim", DIMS)
def test_baseline_raw_aes_ctr(benchmark, dim: int) -> None:
    nbytes = 4 * dim
    zeros = memoryview(np.zeros(nbytes, dtype=np.uint8))  # type: ignore[arg-type]
    out_array = np.empty(nbytes + 16, dtype=np.uint8)
    out = memoryview(out_array)  # type: ignore[arg-type]
    cipher = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16))).encryptor()
    benchmark(cipher.update_into, zeros, out)
    assert out_array[:nbytes].any()
    benchmark.extra_info.update({"dim": dim, "bytes": nbytes})


# -- peer: Flower's SecAgg+ mask generation ----------------------------------------------------


@pytest.mark.parametrize("dim", DIMS)
def test_peer_flower_secaggplus_masks(benchmark, dim: int) -> None:
    pytest.importorskip("flwr", reason="flwr (the optional `peers` extra) is not installed")
    try:
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    except ImportError as err:  # the helper moved between Flower releases
        pytest.skip(f"this flwr has no secaggplus_utils.pseudo_rand_gen: {err}")
    seed = bytes(range(32))
    benchmark(pseudo_rand_gen, seed, 1 << 31, [(dim,)])
    ours = MaskGenerator(FloatQuantizer().ring)
    acc = np.zeros(dim, dtype=np.uint32)
    mine = best_seconds(lambda: ours.apply(acc, add=[seed[:16]]))
    theirs = benchmark.stats.stats.min if benchmark.stats else float("nan")
    benchmark.extra_info.update(
        {"dim": dim, "ours_seconds": mine, "speedup_vs_flower": theirs / mine}
    )
