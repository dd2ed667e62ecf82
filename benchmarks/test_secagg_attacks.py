"""What the attacks on secure aggregation cost the server: a complete full-SecAgg round at
n = 100 in which the server also unmasks individual inputs, against the same honest round,
measured alternately in the same run (ratios, never absolute seconds across machines).

- ``deviation``: the malicious server's inconsistent survivor sets
  (:class:`~fedbench.defenses.secagg.adversary.SplitViewServer`, one colluding neighbour of the
  target, no consistency check): it recovers the target's input from t self-mask and t key-seed
  shares and regenerates its self mask and all its pairwise masks.
- ``coalition``: t colluding clients hand the server every share they hold
  (:class:`~fedbench.defenses.secagg.adversary.CoalitionServer`): it unmasks every honest
  survivor's input, one self mask and n − 1 pairwise masks each.

Each row checks first that the round's sum is the honest sum and that every unmasked input is
the client's own. ``extra_info``: ``seconds`` (the attacked round), ``baseline_seconds`` (the
honest round), ``overhead_ratio``, ``unmasked`` (inputs recovered), ``extra_seconds_per_input``
(the decode cost of one recovered input) and ``expansions_per_input`` (the d-length masks it
regenerates). No target is set: what matters is that the attack is cheap next to the round.

Run: ``pytest benchmarks/test_secagg_attacks.py --benchmark-only --benchmark-json=OUT.json``;
smoke: ``FEDBENCH_BENCH_SMOKE=1 pytest benchmarks/test_secagg_attacks.py --benchmark-disable``
(n = 12, d = 100).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from aggregation_support import SMOKE, paired_best
from pytest_benchmark.fixture import BenchmarkFixture

from fedbench.defenses.secagg.adversary import CoalitionServer, SplitViewServer
from fedbench.defenses.secagg.graph import Graph, full_threshold
from fedbench.defenses.secagg.protocol import ServerPolicy, SumResult, secure_sum
from fedbench.defenses.secagg.ring import Ring

CLIENTS = 12 if SMOKE else 100
DIM = 100 if SMOKE else 10_000
REPEATS = 1 if SMOKE else 3
TARGET = 0


def _setting() -> tuple[Ring, Graph, int, dict[int, np.ndarray]]:
    ring = Ring(32)
    graph = Graph.full(range(CLIENTS))
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 2**16, size=DIM, dtype=np.uint32) for c in graph.clients}
    return ring, graph, full_threshold(CLIENTS, corruption=0.1), inputs


def _attack(name: str, threshold: int) -> tuple[Callable[[], ServerPolicy], list[int]]:
    """The server policy of one round (made fresh each round) and its colluders."""
    if name == "deviation":
        return (lambda: SplitViewServer(TARGET)), [1]
    return CoalitionServer, list(range(1, threshold + 1))


def _runner(
    policy: Callable[[], ServerPolicy] | None, colluders: list[int]
) -> Callable[[], tuple[SumResult, ServerPolicy | None]]:
    ring, graph, threshold, inputs = _setting()

    def run() -> tuple[SumResult, ServerPolicy | None]:
        server = None if policy is None else policy()
        result = secure_sum(inputs, ring=ring, graph=graph, threshold=threshold,
                            server_policy=server, colluders=colluders)
        return result, server

    return run


@pytest.mark.parametrize("attack", ["deviation", "coalition"])
def test_unmasking_cost_per_round(benchmark: BenchmarkFixture, attack: str) -> None:
    _, _, threshold, inputs = _setting()
    policy, colluders = _attack(attack, threshold)
    honest, attacked = _runner(None, []), _runner(policy, colluders)
    (plain, _), (result, server) = honest(), attacked()
    assert isinstance(server, CoalitionServer)
    if attack == "coalition":  # the deviation's lie moves the target out of the sum
        np.testing.assert_array_equal(result.total, plain.total)
    assert server.recovered, server.failures
    for client, vector in server.recovered.items():
        np.testing.assert_array_equal(vector, inputs[client])
    seconds, baseline = paired_best(attacked, honest, REPEATS)
    benchmark.pedantic(attacked, rounds=1, iterations=1, warmup_rounds=0)
    unmasked = len(server.recovered)
    benchmark.extra_info.update({
        "channel": "secagg", "role": "server", "phase": "complete_round", "attack": attack,
        "clients": CLIENTS, "dim": DIM, "threshold": threshold, "colluders": len(colluders),
        "seconds": seconds, "baseline_seconds": baseline, "overhead_ratio": seconds / baseline,
        "unmasked": unmasked, "extra_seconds_per_input": (seconds - baseline) / unmasked,
        "expansions_per_input": CLIENTS,  # its self mask and n − 1 pairwise masks
        "compare": {"overhead_ratio": "lower"},
    })
