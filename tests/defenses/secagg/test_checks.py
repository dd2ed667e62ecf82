"""Tests for the checks against a malicious server: signed advertisements, model consistency,
the consistency-check round under dropouts, and what they cost on the wire."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fedbench.defenses.secagg.checks import (
    Checks,
    Directory,
    SurvivorSet,
    model_digest,
    signature_quorum,
)
from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.protocol import (
    ConsistencyError,
    KeyAdvertisement,
    SecAggRound,
    Stage,
    secure_sum,
)
from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import AggregationError

from .test_protocol import STAGES, expected_outcome

BOTH = Checks(consistency=True, model_consistency=True, quorum=signature_quorum(6))


def inputs_of(clients: tuple[int, ...], ring: Ring, dim: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, ring.modulus, size=dim, dtype=np.uint64).astype(ring.dtype)
            for c in clients}


def reference(inputs: dict, clients: Iterable[int], ring: Ring) -> list[int]:
    members = sorted(clients)
    dim = len(next(iter(inputs.values())))
    return [sum(int(inputs[c][i]) for c in members) % ring.modulus for i in range(dim)]


# -- model consistency ----------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [None, 2])
def test_same_model_hashes_sum_as_usual(degree: int | None) -> None:
    ring, clients = Ring(32), tuple(range(6))
    graph = Graph.full(clients) if degree is None else Graph.harary(clients, degree=degree,
                                                                   seed=bytes(32))
    inputs = inputs_of(clients, ring)
    result = secure_sum(inputs, ring=ring, graph=graph, threshold=2,
                        checks=Checks(model_consistency=True),
                        model_hashes=dict.fromkeys(clients, "0123456789abcdef"))
    assert result.total.tolist() == reference(inputs, clients, ring)


@pytest.mark.parametrize("degree", [None, 2])
def test_one_differing_model_hash_aborts_naming_the_clients(degree: int | None) -> None:
    ring, clients = Ring(32), tuple(range(6))
    graph = Graph.full(clients) if degree is None else Graph.harary(clients, degree=degree,
                                                                   seed=bytes(32))
    hashes = {**dict.fromkeys(clients, "0123456789abcdef"), 4: "ffffffffffffffff"}
    first = min(graph.neighbours(4) | {4})  # the first client (by id) that sees it
    with pytest.raises(ConsistencyError) as caught:
        SecAggRound(clients, ring=ring, graph=graph, threshold=2, round_index=3,
                    checks=Checks(model_consistency=True), model_hashes=hashes)
    message = str(caught.value)
    assert f"round 3: client {first} received the model" in message
    assert "different models" in message
    named = "[4]" if first != 4 else str(sorted(graph.neighbours(4)))
    assert f"neighbours {named}" in message


def test_model_consistency_needs_every_clients_hash() -> None:
    with pytest.raises(ValueError, match=r"clients \[2\] have none"):
        SecAggRound(range(3), ring=Ring(8), graph=Graph.full(range(3)), threshold=1,
                    checks=Checks(model_consistency=True), model_hashes={0: "aa", 1: "aa"})


def test_model_digest_reads_hex_and_other_strings() -> None:
    assert model_digest("00ff") == b"\x00\xff"
    assert model_digest("not hex") == b"not hex"


def test_a_server_cannot_rewrite_a_forwarded_model_hash() -> None:
    """The server evens out the hash it forwards for the client it sent another model: the
    advertisement's signature no longer verifies."""
    ring, clients = Ring(16), tuple(range(5))
    hashes = {**dict.fromkeys(clients, "aa"), 4: "bb"}

    class Forging(SecAggRound):
        def _run_key_rounds(self) -> None:
            route = self.server.route_keys

            def rewritten(adverts):  # type: ignore[no-untyped-def]
                return {u: {v: forge(v, a) for v, a in roster.items()}
                        for u, roster in route(adverts).items()}

            self.server.route_keys = rewritten  # type: ignore[method-assign]
            super()._run_key_rounds()

    def forge(sender: int, advert: KeyAdvertisement) -> KeyAdvertisement:
        return advert if sender != 4 else dataclasses.replace(advert, model_hash=b"\xaa")

    with pytest.raises(ConsistencyError, match=r"client 0: the forwarded key advertisements of "
                                               r"clients \[4\] do not carry"):
        Forging(clients, ring=ring, graph=Graph.full(clients), threshold=2,
                checks=Checks(model_consistency=True), model_hashes=hashes)


def test_the_directory_binds_each_client_once() -> None:
    directory = Directory()
    directory.register(1, bytes(32))
    with pytest.raises(ValueError, match="already registered"):
        directory.register(1, bytes(32))
    assert directory.key(2) is None


# -- the consistency check with an honest server ---------------------------------------------------


@st.composite
def checked_rounds(draw: st.DrawFn) -> dict:
    n = draw(st.integers(3, 9))
    clients = tuple(range(n))
    degree = draw(st.sampled_from([None, *range(2, n - 1, 2)]))
    graph = Graph.full(clients) if degree is None else Graph.harary(clients, degree=degree,
                                                                   seed=bytes(32))
    stage = st.sampled_from([None, None, None, *STAGES])
    return {"graph": graph, "threshold": draw(st.integers(1, graph.degree)),
            "dropouts": {c: s for c in clients if (s := draw(stage)) is not None},
            "seed": draw(st.integers(0, 2**16))}


def checked_outcome(case: dict) -> frozenset[int] | None:
    """U3, or None when the round must abort: the protocol's conditions, plus a quorum of
    survivors signing (a client that drops at the check does not sign)."""
    graph, dropouts = case["graph"], case["dropouts"]
    honest = expected_outcome(graph, case["threshold"], dropouts)
    if honest is None:
        return None
    survivors = honest[0]
    check = Stage.CONSISTENCY_CHECK.order
    signers = {c for c in survivors if c not in dropouts or dropouts[c].order > check}
    if len(signers) < signature_quorum(len(graph.clients)):
        return None
    return survivors


@settings(max_examples=60, deadline=None)
@given(checked_rounds())
def test_honest_server_with_the_check_sums_exactly_or_aborts(case: dict) -> None:
    graph, ring = case["graph"], Ring(16)
    inputs = inputs_of(graph.clients, ring, seed=case["seed"])
    checks = Checks(consistency=True, quorum=signature_quorum(len(graph.clients)))
    expected = checked_outcome(case)

    def run():  # type: ignore[no-untyped-def]
        return secure_sum(inputs, ring=ring, graph=graph, threshold=case["threshold"],
                          dropouts=case["dropouts"], checks=checks)

    if expected is None:
        event("aborts")
        with pytest.raises(AggregationError):
            run()
        return
    event("sums")
    result = run()
    assert result.contributors == tuple(sorted(expected))
    assert result.total.tolist() == reference(inputs, expected, ring)


def test_too_few_signers_abort_naming_the_quorum() -> None:
    ring, clients = Ring(16), tuple(range(6))
    dropouts = dict.fromkeys((0, 1, 2), Stage.CONSISTENCY_CHECK)
    with pytest.raises(ConsistencyError, match=r"client 3: only 3 signatures .* quorum 4"):
        secure_sum(inputs_of(clients, ring), ring=ring, graph=Graph.full(clients), threshold=2,
                   dropouts=dropouts, checks=Checks(consistency=True, quorum=4))


def test_a_client_refuses_to_sign_a_set_that_leaves_it_out() -> None:
    rnd = SecAggRound(range(4), ring=Ring(8), graph=Graph.full(range(4)), threshold=2,
                      checks=Checks(consistency=True, quorum=3))
    with pytest.raises(ConsistencyError, match="client 1 sent its masked input but"):
        rnd.clients[1].sign_survivors(SurvivorSet(frozenset({0, 2, 3})))


def test_quorum_is_more_than_half_of_clients_and_colluders() -> None:
    assert signature_quorum(10) == 6
    assert signature_quorum(10, corrupt=3) == 7
    for n in range(1, 30):
        for c in range(n):
            q = signature_quorum(n, corrupt=c)
            # Two groups with disjoint honest signers cannot both reach it.
            assert 2 * (q - c) > n - c


# -- costs ----------------------------------------------------------------------------------------


def test_check_bytes_follow_the_wire_format() -> None:
    n, dim = 6, 4
    ring, clients = Ring(32), tuple(range(n))
    inputs = inputs_of(clients, ring, dim=dim)
    hashes = dict.fromkeys(clients, "0123456789abcdef")
    plain = secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=3)
    checked = secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=3, checks=BOTH,
                         model_hashes=hashes)
    ident, verifying, signature, digest = 4, 32, 64, 8
    signed_advert = verifying + signature  # sent once, forwarded to n − 1 neighbours
    survivor_set = n * ident
    check_round = survivor_set + (ident + signature) + n * (ident + signature)
    per_client = n * (signed_advert + digest) + check_round
    extra = {c: checked.upload_bytes[c] + checked.download_bytes[c]
             - plain.upload_bytes[c] - plain.download_bytes[c] for c in clients}
    assert extra == dict.fromkeys(clients, per_client)
    assert checked.check_bytes == {
        "model_consistency": n * n * digest,
        "consistency_check": n * (n * signed_advert + check_round),
    }
    assert plain.check_bytes == {}
