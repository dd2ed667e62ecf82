"""Active adversaries against the real protocol (X25519, HKDF, AES, Ed25519; no mocked messages):
the SecAgg deviation with and without the consistency check, and colluding clients on both
sides of the threshold."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg import shamir
from fedbench.defenses.secagg.adversary import (
    KEY_SEED,
    CoalitionServer,
    KeySwapServer,
    SplitViewServer,
    colluders_view,
)
from fedbench.defenses.secagg.checks import Checks, signature_quorum
from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.protocol import (
    ConsistencyError,
    SecAggRound,
    SumResult,
    _label,
    secure_sum,
)
from fedbench.defenses.secagg.ring import Ring


def random_inputs(clients: tuple[int, ...], ring: Ring, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, ring.modulus, size=dim, dtype=np.uint64).astype(ring.dtype)
            for c in clients}


def plain_sum(inputs: dict, clients: Iterable[int], ring: Ring) -> list[int]:
    """The reference: Python integers, reduced modulo 2^b once."""
    members = list(clients)
    dim = len(next(iter(inputs.values())))
    return [sum(int(inputs[c][i]) for c in members) % ring.modulus for i in range(dim)]


@st.composite
def deviations(draw: st.DrawFn) -> dict:
    """A round, a target, colluders and a threshold the key holders can still answer under
    (each keeps t surviving neighbours once the target is called dropped)."""
    n = draw(st.integers(4, 10))
    clients = tuple(range(n))
    degrees = [d for d in range(4, n - 1, 2)]
    degree = draw(st.sampled_from([None, *degrees]))
    seed = draw(st.binary(min_size=32, max_size=32))
    graph = Graph.full(clients) if degree is None else Graph.harary(clients, degree=degree,
                                                                   seed=seed)
    target = draw(st.sampled_from(clients))
    threshold = draw(st.integers(1, graph.degree - 1))
    others = sorted(set(clients) - {target})
    colluders = draw(st.sets(st.sampled_from(others), max_size=threshold - 1))
    return {"graph": graph, "target": target, "threshold": threshold,
            "colluders": frozenset(colluders), "bits": draw(st.sampled_from([8, 32, 64])),
            "seed": draw(st.integers(0, 2**32 - 1))}


def deviation_succeeds(case: dict) -> bool:
    """The specification: honest neighbours each give one share, colluders both; the server
    calls the fewest honest ones the target's key holders, and needs t of each kind."""
    neighbours = case["graph"].neighbours(case["target"])
    colluding = len(neighbours & case["colluders"])
    key_holders = max(0, case["threshold"] - colluding)
    return len(neighbours) - key_holders >= case["threshold"]


def run_deviation(case: dict, checks: Checks | None) -> tuple[SplitViewServer, dict, SumResult]:
    graph, ring = case["graph"], Ring(case["bits"])
    inputs = random_inputs(graph.clients, ring, dim=7, seed=case["seed"])
    server = SplitViewServer(case["target"])
    result = secure_sum(inputs, ring=ring, graph=graph, threshold=case["threshold"],
                        checks=checks, server_policy=server, colluders=case["colluders"])
    return server, inputs, result


@settings(max_examples=40, deadline=None)
@given(deviations())
def test_without_the_check_the_deviation_unmasks_the_target_exactly(case: dict) -> None:
    check_deviation_without_the_check(case)


def check_deviation_without_the_check(case: dict) -> None:
    """Where t of each share can be had, the target's input comes out exactly."""
    server, inputs, result = run_deviation(case, checks=None)
    target = case["target"]
    if deviation_succeeds(case):
        event("target unmasked")
        assert server.recovered[target].dtype == inputs[target].dtype
        np.testing.assert_array_equal(server.recovered[target], inputs[target])
    else:
        event("too few holders to split")
        assert target not in server.recovered and target in server.failures
    # Nobody noticed: the round returned the usual sum.
    assert result.total.tolist() == plain_sum(inputs, result.contributors, Ring(case["bits"]))


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(deviations())
def test_without_the_check_the_deviation_unmasks_the_target_exactly_many_trials(
    case: dict,
) -> None:
    check_deviation_without_the_check(case)


@settings(max_examples=40, deadline=None)
@given(deviations(), st.sampled_from(["matching", "all"]))
def test_with_the_check_honest_clients_abort_and_nothing_is_revealed(
    case: dict, forward: str
) -> None:
    check_deviation_with_the_check(case, forward)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(deviations(), st.sampled_from(["matching", "all"]))
def test_with_the_check_honest_clients_abort_and_nothing_is_revealed_many_trials(
    case: dict, forward: str
) -> None:
    check_deviation_with_the_check(case, forward)


def check_deviation_with_the_check(case: dict, forward: str) -> None:
    """The server deviates wherever it can; with the check, the round aborts and it has
    nothing of the target."""
    graph = case["graph"]
    quorum = signature_quorum(len(graph.clients), corrupt=len(case["colluders"]))
    checks = Checks(consistency=True, quorum=quorum)
    graph, ring = case["graph"], Ring(case["bits"])
    inputs = random_inputs(graph.clients, ring, dim=7, seed=case["seed"])
    server = SplitViewServer(case["target"], forward=forward)

    def run() -> SumResult:
        return secure_sum(inputs, ring=ring, graph=graph, threshold=case["threshold"],
                          checks=checks, server_policy=server, colluders=case["colluders"])

    if deviation_succeeds(case):
        event("server deviates, clients abort")
        with pytest.raises(ConsistencyError, match=r"round 0: the consistency check failed: cli"):
            run()
    else:  # the split cannot work, so the server stays honest and the round sums
        event("server cannot split")
        result = run()
        assert result.total.tolist() == plain_sum(inputs, graph.clients, ring)
    assert server.recovered == {}
    assert case["target"] in server.failures


def test_the_abort_names_the_round_and_the_clients_that_saw_disagreement() -> None:
    ring, clients = Ring(16), tuple(range(8))
    inputs = random_inputs(clients, ring, dim=3, seed=1)
    checks = Checks(consistency=True, quorum=signature_quorum(8))
    server = SplitViewServer(0, key_holders={1, 2}, forward="matching")
    with pytest.raises(ConsistencyError) as caught:
        secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=2, round_index=5,
                   checks=checks, server_policy=server)
    message = str(caught.value)
    # Clients 1 and 2 were told client 0 dropped and got only each other's signatures.
    assert "round 5: the consistency check failed: clients [1, 2]" in message
    assert "round 5: client 1: only 2 signatures" in message
    assert server.recovered == {}


def test_a_request_contradicting_the_signed_set_is_refused() -> None:
    """A server that shows everyone the same set in the check, then calls the target dropped in
    some unmasking requests, is refused by exactly those clients."""

    class LiesAtUnmasking(SplitViewServer):
        def survivor_set(self, server, client, survivors):  # type: ignore[no-untyped-def]
            return survivors

        def unmasking_survivors(self, server, client, survivors):  # type: ignore[no-untyped-def]
            return SplitViewServer.survivor_set(self, server, client, survivors)

    ring, clients = Ring(16), tuple(range(6))
    inputs = random_inputs(clients, ring, dim=3, seed=2)
    server = LiesAtUnmasking(0, key_holders={4, 5})
    with pytest.raises(ConsistencyError, match=r"clients \[4, 5\] saw disagreement") as caught:
        secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=2,
                   checks=Checks(consistency=True, quorum=signature_quorum(6)),
                   server_policy=server)
    assert "otherwise than the survivor set it signed" in str(caught.value)
    assert server.recovered == {}


@pytest.mark.parametrize("degree", [None, 4])
def test_honest_server_with_the_check_sums_as_usual(degree: int | None) -> None:
    ring, clients = Ring(32), tuple(range(9))
    graph = (Graph.full(clients) if degree is None
             else Graph.harary(clients, degree=degree, seed=bytes(32)))
    inputs = random_inputs(clients, ring, dim=11, seed=3)
    checks = Checks(consistency=True, quorum=signature_quorum(9))
    plain = secure_sum(inputs, ring=ring, graph=graph, threshold=3)
    checked = secure_sum(inputs, ring=ring, graph=graph, threshold=3, checks=checks)
    assert checked.total.tolist() == plain.total.tolist() == plain_sum(inputs, clients, ring)
    assert checked.contributors == plain.contributors


# -- colluding clients ---------------------------------------------------------------------------


def _round(n: int, threshold: int, seed: int, degree: int | None = None,
           colluders: frozenset[int] = frozenset()) -> tuple[SecAggRound, CoalitionServer, dict]:
    ring, clients = Ring(32), tuple(range(n))
    graph = (Graph.full(clients) if degree is None
             else Graph.harary(clients, degree=degree, seed=bytes([seed % 256]) * 32))
    server = CoalitionServer()
    rnd = SecAggRound(clients, ring=ring, graph=graph, threshold=threshold,
                      server_policy=server, colluders=colluders)
    return rnd, server, random_inputs(clients, ring, dim=9, seed=seed)


def _aggregate(rnd: SecAggRound, inputs: dict) -> SumResult:
    sent = {c: m for c, x in inputs.items() if (m := rnd.masked_input(c, x)) is not None}
    return rnd.aggregate(sent)


@st.composite
def coalitions(draw: st.DrawFn) -> dict:
    n = draw(st.integers(4, 10))
    degree = draw(st.sampled_from([None, *range(4, n - 1, 2)]))
    holders = n - 1 if degree is None else degree
    threshold = draw(st.integers(1, holders))
    colluders = draw(st.sets(st.integers(0, n - 1), max_size=threshold - 1))
    return {"n": n, "degree": degree, "threshold": threshold, "colluders": frozenset(colluders),
            "seed": draw(st.integers(0, 2**16))}


@settings(max_examples=30, deadline=None)
@given(coalitions())
def test_fewer_than_t_colluders_with_the_server_learn_only_the_honest_sum(case: dict) -> None:
    rnd, server, inputs = _round(case["n"], case["threshold"], case["seed"], case["degree"],
                                 case["colluders"])
    result = _aggregate(rnd, inputs)
    ring = rnd.setup.ring
    view = colluders_view(rnd, case["colluders"], inputs)
    honest = sorted(set(rnd.clients) - case["colluders"])
    # What they learn: the honest clients' sum, exactly ...
    assert view.honest_sum(result.total, ring).tolist() == plain_sum(inputs, honest, ring)
    # ... and no honest client's input: its key seed never has t shares in their hands.
    assert server.recovered == {}
    assert set(server.failures) == set(honest)
    assert all(KEY_SEED in why for why in server.failures.values())
    for owner in honest:
        holders, shares = view.shares_of(owner, KEY_SEED)
        assert len(holders) < case["threshold"]
        if len(holders):  # interpolating the shares they have gives some other value
            guess = shamir.reconstruct(rnd.setup.x(holders)[None], shares[None])[0]
            committed = shamir.commit(guess or b"", _label(rnd.setup, KEY_SEED, owner))
            assert committed != rnd.server.dealt[owner].key_commitment


@pytest.mark.parametrize("degree", [None, 4])
def test_t_colluding_neighbours_with_the_server_unmask_a_client_exactly(
    degree: int | None,
) -> None:
    n, threshold, target = 8, 3, 0
    graph = (Graph.full(range(n)) if degree is None
             else Graph.harary(range(n), degree=degree, seed=bytes([7]) * 32))
    colluders = frozenset(sorted(graph.neighbours(target))[:threshold])
    rnd, server, inputs = _round(n, threshold, 7, degree, colluders)
    _aggregate(rnd, inputs)
    np.testing.assert_array_equal(server.recovered[target], inputs[target])
    # The colluders' own shares reconstruct the committed key seed (the boundary's other side).
    holders, shares = colluders_view(rnd, colluders, inputs).shares_of(target, KEY_SEED)
    secret = shamir.reconstruct(rnd.setup.x(holders)[None], shares[None])[0]
    assert secret is not None
    label = _label(rnd.setup, KEY_SEED, target)
    assert shamir.commit(secret, label) == rnd.server.dealt[target].key_commitment


def test_n_minus_one_colluders_learn_the_last_clients_input_exactly() -> None:
    n, last = 7, 3
    colluders = frozenset(range(n)) - {last}
    rnd, _, inputs = _round(n, 4, 11)
    result = _aggregate(rnd, inputs)
    view = colluders_view(rnd, colluders, inputs)
    np.testing.assert_array_equal(view.honest_sum(result.total, rnd.setup.ring), inputs[last])


def test_n_minus_two_colluders_learn_only_the_sum_of_the_last_two() -> None:
    n, rest = 7, (2, 5)
    colluders = frozenset(range(n)) - set(rest)
    rnd, _, inputs = _round(n, 4, 12)
    result = _aggregate(rnd, inputs)
    learned = colluders_view(rnd, colluders, inputs).honest_sum(result.total, rnd.setup.ring)
    assert learned.tolist() == plain_sum(inputs, rest, rnd.setup.ring)
    assert learned.tolist() != inputs[2].tolist()


def test_the_quorum_must_count_colluders_that_sign_both_sets() -> None:
    """n = 10, t = 6, three colluding neighbours of the target sign both sets: 7 signatures on
    one set, 6 on the other. A quorum of a plain majority (6) lets both groups pass and the
    target is unmasked; the quorum with the colluders counted (7) makes the smaller group
    refuse."""
    ring, clients = Ring(32), tuple(range(10))
    inputs = random_inputs(clients, ring, dim=5, seed=4)
    colluders = frozenset({7, 8, 9})

    def attack(quorum: int) -> SplitViewServer:
        server = SplitViewServer(0)
        secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=6,
                   checks=Checks(consistency=True, quorum=quorum), server_policy=server,
                   colluders=colluders)
        return server

    fooled = attack(signature_quorum(10))
    np.testing.assert_array_equal(fooled.recovered[0], inputs[0])
    server = SplitViewServer(0)
    with pytest.raises(ConsistencyError, match=r"clients \[1, 2, 3\] saw disagreement"):
        secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=6,
                   checks=Checks(consistency=True, quorum=signature_quorum(10, corrupt=3)),
                   server_policy=server, colluders=colluders)
    assert server.recovered == {}


@st.composite
def key_swaps(draw: st.DrawFn) -> dict:
    """A round (full or SecAgg+ graph), a target and a threshold."""
    n = draw(st.integers(4, 9))
    clients = tuple(range(n))
    degree = draw(st.sampled_from([None, *range(4, n - 1, 2)]))
    graph = Graph.full(clients) if degree is None else Graph.harary(
        clients, degree=degree, seed=draw(st.binary(min_size=32, max_size=32)))
    return {"graph": graph, "target": draw(st.sampled_from(clients)),
            "threshold": draw(st.integers(1, graph.degree)),
            "seed": draw(st.integers(0, 2**32 - 1))}


@settings(max_examples=12, deadline=None)
@given(key_swaps())
def test_a_server_substituting_keys_unmasks_its_target_without_any_colluder(case: dict) -> None:
    """Without signed advertisements nobody notices (the sum is exact) and the server reads
    the target's input exactly from the shares it intercepted."""
    ring = Ring(32)
    inputs = random_inputs(case["graph"].clients, ring, 16, case["seed"])
    server = KeySwapServer(case["target"])
    result = secure_sum(inputs, ring=ring, graph=case["graph"], threshold=case["threshold"],
                        server_policy=server)
    assert result.total.tolist() == plain_sum(inputs, case["graph"].clients, ring)
    assert set(server.intercepted) == set(case["graph"].neighbours(case["target"]))
    np.testing.assert_array_equal(server.recovered[case["target"]], inputs[case["target"]])


@pytest.mark.parametrize("checks", [Checks(model_consistency=True),
                                    Checks(consistency=True, quorum=4)])
def test_signed_advertisements_stop_the_key_substitution(checks: Checks) -> None:
    ring = Ring(32)
    graph = Graph.full(range(6))
    inputs = random_inputs(graph.clients, ring, 16, 0)
    server = KeySwapServer(0)
    with pytest.raises(ConsistencyError, match=r"keys or model hashes substituted"):
        secure_sum(inputs, ring=ring, graph=graph, threshold=3, server_policy=server,
                   checks=checks, model_hashes=dict.fromkeys(graph.clients, "00"))
    assert server.intercepted == {} and server.recovered == {}
