"""What the checks against a malicious server cost: a complete SecAgg / SecAgg+ round at
n = 100 with the consistency-check round, the model-consistency check, or both, against the same
round without them, measured alternately in the same run (ratios, never absolute seconds across
machines).

A round here is everything the protocol does for all clients and the server, in process: key
rounds (with the checks: signing and verifying advertisements), every masked input, the
consistency check (each survivor signs; every client verifies every survivor's signature, n²
Ed25519 verifications in all), unmasking. Ring Z/2^32, no dropouts, honest server.

``extra_info``: ``seconds`` (with the check), ``baseline_seconds`` (without),
``overhead_ratio`` (their ratio), ``extra_seconds_per_client`` (the difference over n: what one
client's device would spend), ``verifications`` (Ed25519 verifications of the round, all
clients: n·k for the signed advertisements, n² more for the consistency check),
``verify_bound_seconds`` (verifications × one verification, timed here) and
``extra_vs_verify_bound`` (how much of the extra time the signatures explain), ``check_bytes``,
``check_bytes_per_client`` and ``bytes_ratio`` (all uploads + downloads with / without). The
checks cost the same whatever d, so the ratio falls as d grows; no target is set. Both rounds'
sums are checked equal first.

Run: ``pytest benchmarks/test_secagg_checks.py --benchmark-only --benchmark-json=OUT.json``
(a few minutes on 2 cores); smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest
benchmarks/test_secagg_checks.py --benchmark-disable`` (n = 12).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from aggregation_support import SMOKE, paired_best
from pytest_benchmark.fixture import BenchmarkFixture

from fedbench.defenses.secagg import keys
from fedbench.defenses.secagg.checks import Checks, signature_quorum
from fedbench.defenses.secagg.graph import Graph, choose_degree, full_threshold
from fedbench.defenses.secagg.protocol import SumResult, secure_sum
from fedbench.defenses.secagg.ring import Ring

CLIENTS = 12 if SMOKE else 100
DIM = 100 if SMOKE else 10_000
REPEATS = 1 if SMOKE else 3
CORRUPTION = 0.1
CHECKS = {
    "consistency_check": Checks(consistency=True),
    "model_consistency": Checks(model_consistency=True),
    "both": Checks(consistency=True, model_consistency=True),
}


def graph_and_threshold(mode: str, clients: int) -> tuple[Graph, int]:
    members = range(clients)
    if mode == "secagg":
        return Graph.full(members), full_threshold(clients, corruption=CORRUPTION)
    plan = choose_degree(clients, dropout=0.1, corruption=CORRUPTION)
    assert plan.degree is not None, "SecAgg+ fell back to the complete graph"
    return Graph.harary(members, degree=plan.degree, seed=bytes(32)), plan.threshold


def round_runner(mode: str, checks: Checks | None) -> Callable[[], SumResult]:
    """One complete round over fixed inputs, with ``checks`` (quorum for n and γ)."""
    ring = Ring(32)
    graph, threshold = graph_and_threshold(mode, CLIENTS)
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 2**16, size=DIM, dtype=np.uint32) for c in graph.clients}
    hashes = dict.fromkeys(graph.clients, "0123456789abcdef")
    if checks is not None and checks.consistency:
        corrupt = int(np.ceil(CORRUPTION * CLIENTS))
        checks = Checks(checks.consistency, checks.model_consistency,
                        quorum=signature_quorum(CLIENTS, corrupt=corrupt))

    def run() -> SumResult:
        return secure_sum(inputs, ring=ring, graph=graph, threshold=threshold, checks=checks,
                          model_hashes=hashes)

    return run


def total_bytes(result: SumResult) -> int:
    return sum(result.upload_bytes.values()) + sum(result.download_bytes.values())


def verifications(mode: str, checks: Checks) -> int:
    """Ed25519 verifications in a round without dropouts, all clients together."""
    graph, _ = graph_and_threshold(mode, CLIENTS)
    adverts = CLIENTS * graph.degree if checks.signs else 0
    return adverts + (CLIENTS * CLIENTS if checks.consistency else 0)


def one_verification() -> float:
    """Best time of one Ed25519 verification of a survivor-set-sized message."""
    key = keys.signing_key()
    public, message = keys.verifying_bytes(key), bytes(8 * CLIENTS)
    signature = keys.sign(key, message)
    best, _ = paired_best(lambda: keys.signature_valid(public, message, signature),
                          lambda: None, 200)
    return best


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_check_overhead_per_round(benchmark: BenchmarkFixture, mode: str, check: str) -> None:
    plain, checked = round_runner(mode, None), round_runner(mode, CHECKS[check])
    first, second = plain(), checked()
    np.testing.assert_array_equal(first.total, second.total)
    seconds, baseline = paired_best(checked, plain, REPEATS)
    benchmark.pedantic(checked, rounds=1, iterations=1, warmup_rounds=0)
    extra = sum(second.check_bytes.values())
    count = verifications(mode, CHECKS[check])
    bound = count * one_verification()
    benchmark.extra_info.update({
        "channel": mode, "role": "channel", "phase": "complete_round", "check": check,
        "clients": CLIENTS, "dim": DIM, "values": CLIENTS * DIM,
        "seconds": seconds, "baseline_seconds": baseline, "overhead_ratio": seconds / baseline,
        "extra_seconds_per_client": (seconds - baseline) / CLIENTS,
        "verifications": count, "verify_bound_seconds": bound,
        "extra_vs_verify_bound": (seconds - baseline) / bound,
        "check_bytes": extra, "check_bytes_per_client": extra / CLIENTS,
        "bytes_ratio": total_bytes(second) / total_bytes(first),
        "compare": {"overhead_ratio": "lower"},
    })
