"""Tests for fedbench.defenses.secagg.graph: Harary graphs and the choice of k and t."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import hypergeom

from fedbench.defenses.secagg.graph import (
    Graph,
    Plan,
    choose_degree,
    full_threshold,
    majority,
)


def connected(graph: Graph, removed: set[int]) -> bool:
    alive = [c for c in graph.clients if c not in removed]
    if not alive:
        return True
    seen, queue = {alive[0]}, deque([alive[0]])
    while queue:
        for v in graph.neighbours(queue.popleft()) - removed - seen:
            seen.add(v)
            queue.append(v)
    return len(seen) == len(alive)


@settings(max_examples=80, deadline=None)
@given(
    clients=st.sets(st.integers(0, 10_000), min_size=3, max_size=60),
    half=st.integers(1, 10),
    seed=st.binary(min_size=32, max_size=32),
)
def test_harary_graph_is_k_regular_symmetric_and_connected(
    clients: set[int], half: int, seed: bytes
) -> None:
    graph = Graph.harary(clients, degree=2 * half, seed=seed)
    n = len(clients)
    expected_degree = 2 * half if 2 * half < n - 1 else n - 1
    assert graph.degree == expected_degree
    assert graph.is_full == (2 * half >= n - 1)
    for c in clients:
        neighbours = graph.neighbours(c)
        assert c not in neighbours and neighbours <= clients
        assert len(neighbours) == expected_degree
        assert all(c in graph.neighbours(v) for v in neighbours)
    assert connected(graph, set())


def test_graph_is_determined_by_its_seed() -> None:
    clients = range(40)
    a = Graph.harary(clients, degree=6, seed=bytes(32))
    b = Graph.harary(clients, degree=6, seed=bytes(32))
    c = Graph.harary(clients, degree=6, seed=bytes(31) + b"\x01")
    assert all(a.neighbours(v) == b.neighbours(v) for v in clients)
    assert any(a.neighbours(v) != c.neighbours(v) for v in clients)
    assert a.commitment == b.commitment != c.commitment


def test_sorted_neighbours_are_the_neighbours_in_ascending_order() -> None:
    for graph in (Graph.harary(range(0, 80, 2), degree=6, seed=bytes(32)), Graph.full([4, 1, 9])):
        for v in graph.clients:
            assert graph.sorted_neighbours(v) == tuple(sorted(graph.neighbours(v)))
            assert graph.sorted_neighbours(v) is graph.sorted_neighbours(v)  # sorted once


def test_from_plan_and_full_graph() -> None:
    assert Graph.from_plan(range(5), Plan(None, 3), seed=bytes(32)).is_full
    full = Graph.full([4, 1, 9])
    assert full.clients == (1, 4, 9) and full.degree == 2
    assert full.neighbours(4) == {1, 9}
    with pytest.raises(KeyError, match="client 5"):
        full.neighbours(5)
    with pytest.raises(ValueError, match="even"):
        Graph.harary(range(10), degree=3, seed=bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        Graph.harary(range(10), degree=2, seed=bytes(16))


def test_thresholds() -> None:
    assert [majority(h) for h in (1, 2, 3, 4, 9)] == [1, 2, 2, 3, 5]
    assert full_threshold(10, corruption=0.1) == 5  # majority of 9 holders
    assert full_threshold(10, corruption=0.6) == 7  # more than the 6 corrupt clients


@pytest.mark.parametrize("n", [50, 100, 1000, 10_000])
def test_chosen_degree_meets_the_bounds_and_is_the_smallest(n: int) -> None:
    delta = gamma = 0.1
    plan = choose_degree(n, dropout=delta, corruption=gamma)
    assert plan.degree is not None and plan.degree < n - 1
    k, t = plan.degree, plan.threshold
    corrupt, dropped = math.ceil(gamma * n), math.ceil(delta * n)
    budget = 2.0**-40 / n
    assert k // 2 < t <= k
    assert hypergeom.sf(t - 1, n - 1, corrupt, k) <= budget
    assert hypergeom.sf(k - t, n - 1, dropped, k) <= 2.0**-30 / n
    # k − 2 admits no threshold (or fails the connectivity bound).
    smaller = k - 2
    ts = np.arange(smaller // 2 + 1, smaller + 1)
    feasible = (hypergeom.sf(ts - 1, n - 1, corrupt, smaller) <= budget) & (
        hypergeom.sf(smaller - ts, n - 1, dropped, smaller) <= 2.0**-30 / n
    )
    gap = math.prod((corrupt + dropped - i) / (n - 1 - i) for i in range(smaller // 2))
    assert not feasible.any() or gap > budget


def test_degree_grows_logarithmically() -> None:
    degrees = {n: choose_degree(n, dropout=0.1, corruption=0.1).degree for n in (10**3, 10**5)}
    assert degrees[10**3] is not None and degrees[10**5] is not None
    # 100× more clients cost only a few more neighbours: k = O(log n).
    assert degrees[10**5] - degrees[10**3] < 0.25 * degrees[10**3]
    # More tolerance needs more neighbours.
    wide = choose_degree(10**3, dropout=0.3, corruption=0.2).degree
    assert wide is not None and wide > degrees[10**3]


def test_small_rounds_fall_back_to_the_complete_graph() -> None:
    plan = choose_degree(4, dropout=0.25, corruption=0.25)
    assert plan == Plan(None, full_threshold(4, corruption=0.25))


def test_simulated_dropouts_leave_every_client_enough_neighbours() -> None:
    n, delta = 300, 0.1
    plan = choose_degree(n, dropout=delta, corruption=0.1)
    assert plan.degree is not None
    rng = np.random.default_rng(0)
    for trial in range(30):
        graph = Graph.harary(range(n), degree=plan.degree, seed=rng.bytes(32))
        dropped = set(rng.choice(n, size=int(delta * n), replace=False).tolist())
        survivors_per_client = [len(graph.neighbours(c) - dropped) for c in range(n)]
        assert min(survivors_per_client) >= plan.threshold, trial
        assert connected(graph, dropped)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        choose_degree(2, dropout=0.1, corruption=0.1)
    with pytest.raises(ValueError, match="fractions"):
        choose_degree(100, dropout=0.6, corruption=0.5)
