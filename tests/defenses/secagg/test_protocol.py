"""Tests for fedbench.defenses.secagg.protocol: exact sums under dropouts, aborts, tampering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.protocol import (
    MaskedInput,
    ProtocolViolation,
    RoundSetup,
    SecAggRound,
    Stage,
    SumResult,
    secure_sum,
)
from fedbench.defenses.secagg.ring import Ring
from fedbench.defenses.secagg.shamir import ReconstructionError
from fedbench.errors import AggregationError, BadClientUpdate

STAGES = list(Stage)


def expected_outcome(
    graph: Graph, threshold: int, dropouts: dict[int, Stage], rejected: frozenset[int] = frozenset()
) -> tuple[frozenset[int], frozenset[int], frozenset[int]] | None:
    """The protocol's specification, written independently of its implementation.

    ``rejected``: clients whose masked input was altered on its way (the server must leave it
    out and unmask them as dropouts).

    Returns (U3, the dropouts whose mask keys must be reconstructed, the clients that answer
    the unmasking request), or None when the round must abort.
    """

    def sends(c: int, stage: Stage) -> bool:
        return c not in dropouts or STAGES.index(dropouts[c]) > STAGES.index(stage)

    u1 = {c for c in graph.clients if sends(c, Stage.ADVERTISE_KEYS)}
    u2 = {c for c in u1 if sends(c, Stage.SHARE_KEYS)}
    u3 = {c for c in u2 if sends(c, Stage.MASKED_INPUT)} - rejected
    u5 = {c for c in u3 if sends(c, Stage.UNMASKING)}
    # A dealer needs t neighbours with keys to deal its shares (Bonawitz's round-1 check).
    if any(len(graph.neighbours(u) & u1) < threshold for u in u2):
        return None
    if not u3:
        return None
    dropped_with_survivors = {v for v in u2 - u3 if graph.neighbours(v) & u3}
    for owner in u3 | dropped_with_survivors:
        if len(graph.neighbours(owner) & u5) < threshold:
            return None
    return frozenset(u3), frozenset(dropped_with_survivors), frozenset(u5)


def share_tampering_outcome(
    graph: Graph, threshold: int, answering: frozenset[int], holder: int, owner: int
) -> str:
    """What altering ``holder``'s share of ``owner`` must do: "harmless" (the share is not among
    the t the server uses), "named" (a spare share exists: the holder is named and the sum is
    still exact) or "abort" (no spare share to tell which share is wrong)."""
    holders = sorted(graph.neighbours(owner) & answering)  # x-coordinate order = id order
    if holder not in holders[:threshold]:
        return "harmless"
    return "named" if len(holders) > threshold else "abort"


@st.composite
def rounds(draw: st.DrawFn) -> dict:
    n = draw(st.integers(3, 9))
    clients = sorted(draw(st.sets(st.integers(0, 40), min_size=n, max_size=n)))
    degrees = [d for d in range(2, n - 1, 2)]
    degree = draw(st.sampled_from([None, *degrees]))
    seed = draw(st.binary(min_size=32, max_size=32))
    graph = (
        Graph.full(clients) if degree is None else Graph.harary(clients, degree=degree, seed=seed)
    )
    threshold = draw(st.integers(1, graph.degree))
    stage = st.sampled_from([None, None, None, *STAGES])
    dropouts = {c: s for c in clients if (s := draw(stage)) is not None}
    return {
        "graph": graph,
        "threshold": threshold,
        "dropouts": dropouts,
        "dim": draw(st.integers(1, 24)),
        "bits": draw(st.sampled_from([1, 5, 16, 31, 32, 33, 64])),
        "data_seed": draw(st.integers(0, 2**32 - 1)),
        # Which tampering to try, if any (resolved against the round's actual senders).
        "tamper_input": draw(st.sampled_from([False, False, True])),
        "tamper_share": draw(st.sampled_from([False, False, True])),
        "pick": draw(st.integers(0, 2**16)),
    }


def _tamper_share(response, owner: int):  # type: ignore[no-untyped-def]
    """The response with one byte of its share of ``owner`` (either kind) flipped."""
    for owners, name in ((response.self_mask_owners, "self_mask_shares"),
                         (response.key_owners, "key_shares")):
        rows = np.flatnonzero(owners == owner)
        if rows.size:
            shares = getattr(response, name).copy()
            shares[int(rows[0]), 0] ^= 1
            return dataclasses.replace(response, **{name: shares})
    raise AssertionError(f"the response holds no share of client {owner}")


def _alter_shares_of(rnd: SecAggRound, holder: int, owner: int) -> None:
    """Make ``holder`` answer the unmasking request with its share of ``owner`` altered."""
    client = rnd.clients[holder]
    honest = client.unmask

    def altered(survivors, dropped):  # type: ignore[no-untyped-def]
        return _tamper_share(honest(survivors, dropped), owner)

    client.unmask = altered  # type: ignore[method-assign]


def _flip_a_byte(message: MaskedInput, where: int) -> MaskedInput:
    payload = message.payload.copy()
    payload.view(np.uint8)[where % payload.nbytes] ^= 1 << (where % 8)
    return dataclasses.replace(message, payload=payload)


def _plan_tampering(case: dict) -> tuple[int | None, tuple[int, int] | None]:
    """(client whose masked input is altered, (holder, owner) whose share is altered)."""
    graph, threshold, dropouts = case["graph"], case["threshold"], case["dropouts"]
    pick = case["pick"]
    rejected = None
    honest = expected_outcome(graph, threshold, dropouts)
    if case["tamper_input"] and honest is not None:
        senders = sorted(honest[0])
        rejected = senders[pick % len(senders)]
    expected = expected_outcome(graph, threshold, dropouts, frozenset({rejected} - {None}))
    if not case["tamper_share"] or expected is None:
        return rejected, None
    survivors, keyed, answering = expected
    pairs = [(h, o) for o in sorted(survivors | keyed)
             for h in sorted(graph.neighbours(o) & answering)]
    return rejected, pairs[pick % len(pairs)]


def check_round(case: dict) -> str:
    """Run one randomized round, tampered as the case says, against the specification."""
    graph, threshold, dropouts = case["graph"], case["threshold"], case["dropouts"]
    ring = Ring(case["bits"])
    rng = np.random.default_rng(case["data_seed"])
    inputs = {
        c: rng.integers(0, ring.modulus, size=case["dim"], dtype=np.uint64, endpoint=False)
        .astype(ring.dtype)
        for c in graph.clients
    }
    rejected, altered = _plan_tampering(case)
    expected = expected_outcome(graph, threshold, dropouts, frozenset({rejected} - {None}))
    outcome = "sums"
    if expected is not None and altered is not None:
        outcome = share_tampering_outcome(graph, threshold, expected[2], *altered)

    def run() -> SumResult:
        rnd = SecAggRound(graph.clients, ring=ring, graph=graph, threshold=threshold,
                          dropouts=dropouts, round_index=case["data_seed"] % 7)
        sent = {c: m for c in graph.clients if (m := rnd.masked_input(c, inputs[c])) is not None}
        if rejected is not None:
            sent[rejected] = _flip_a_byte(sent[rejected], case["pick"])
        if altered is not None:
            _alter_shares_of(rnd, *altered)
        return rnd.aggregate(sent)

    if rejected is not None:
        event("a masked input altered")
    if expected is None or outcome == "abort":
        with pytest.raises(AggregationError):
            run()
        return "aborts" if expected is None else "tampered share aborts"
    result = run()
    survivors, reconstructed_keys, _ = expected
    # Independent reference: Python integers, reduced modulo 2^b once.
    reference = [
        sum(int(inputs[c][i]) for c in survivors) % ring.modulus for i in range(case["dim"])
    ]
    assert result.total.dtype == ring.dtype
    assert result.total.tolist() == reference
    assert result.contributors == tuple(sorted(survivors))
    # The server reconstructs self-masks of survivors and keys of dropouts, never both.
    assert result.revealed_self_masks == survivors
    assert result.revealed_keys == reconstructed_keys
    assert not result.revealed_self_masks & result.revealed_keys
    assert set(result.rejected) == ({rejected} - {None})
    named = {altered[0]: (altered[1],)} if altered is not None and outcome == "named" else {}
    assert result.altered_shares == named
    return "sums" if outcome == "sums" else f"tampered share {outcome}"


@settings(max_examples=400, deadline=None)
@given(rounds())
def test_decoded_sum_is_exact_or_the_round_aborts(case: dict) -> None:
    event(check_round(case))


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(rounds())
def test_decoded_sum_is_exact_or_the_round_aborts_many_trials(case: dict) -> None:
    event(check_round(case))


def test_sum_without_dropouts_full_and_sparse_graphs() -> None:
    ring = Ring(32)
    rng = np.random.default_rng(1)
    clients = list(range(12))
    inputs = {c: rng.integers(0, 2**32, 50, dtype=np.uint64).astype(np.uint32) for c in clients}
    reference = sum(v.astype(np.uint64) for v in inputs.values()) % 2**32
    for graph in (Graph.full(clients), Graph.harary(clients, degree=4, seed=bytes(32))):
        result = secure_sum(inputs, ring=ring, graph=graph, threshold=3)
        np.testing.assert_array_equal(result.total, reference)
        assert result.dropped == {}


def test_abort_below_threshold_returns_nothing() -> None:
    ring = Ring(16)
    clients = list(range(6))
    inputs = {c: np.ones(4, dtype=ring.dtype) for c in clients}
    # Threshold 4 of 5 holders; two clients drop during unmasking: survivors' self-mask seeds
    # have only 3 answering holders.
    dropouts = {0: Stage.UNMASKING, 1: Stage.UNMASKING}
    with pytest.raises(AggregationError, match="fewer than the threshold 4"):
        secure_sum(inputs, ring=ring, graph=Graph.full(clients), threshold=4, dropouts=dropouts)
    # With threshold 3 the same dropouts are survivable and both inputs still count.
    result = secure_sum(
        inputs, ring=ring, graph=Graph.full(clients), threshold=3, dropouts=dropouts
    )
    assert result.total.tolist() == [6, 6, 6, 6]
    assert result.dropped == {0: Stage.UNMASKING, 1: Stage.UNMASKING}


def test_dealer_with_too_few_keyed_neighbours_aborts_setup() -> None:
    ring = Ring(32)
    clients = list(range(5))
    dropouts = {c: Stage.ADVERTISE_KEYS for c in (0, 1, 2)}
    with pytest.raises(AggregationError, match="fewer than the threshold 2"):
        SecAggRound(
            clients, ring=ring, graph=Graph.full(clients), threshold=2, dropouts=dropouts
        )


def _round_until_unmasking(
    threshold: int, n: int = 5, dim: int = 8
) -> tuple[SecAggRound, dict, frozenset[int], np.ndarray]:
    ring = Ring(32)
    clients = list(range(n))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=threshold)
    inputs = {c: np.full(dim, c + 1, dtype=np.uint32) for c in clients}
    sent = {c: rnd.masked_input(c, x) for c, x in inputs.items()}
    survivors = frozenset(sent)
    total = rnd.server.sum_masked(sent)  # type: ignore[arg-type]
    return rnd, sent, survivors, total


def test_tampered_share_without_a_spare_fails_naming_dealer_and_holders() -> None:
    # Threshold = every holder, so each share is used and none is spare.
    rnd, _, survivors, total = _round_until_unmasking(threshold=4)
    responses = rnd.unmasking_responses(survivors)
    honest = rnd.server.unmask(total, survivors, responses, rnd.masks)
    assert honest.tolist() == [15] * 8
    tampered = {**responses, 3: _tamper_share(responses[3], owner=0)}
    with pytest.raises(
        ReconstructionError,
        match=r"self-mask seed of client 0 \(dealer\): the shares held by clients \[1, 2, 3, 4\]"
        r".*no spare share",
    ):
        rnd.server.unmask(total, survivors, tampered, rnd.masks)


def test_tampered_share_with_spares_is_reconstructed_around_and_its_holder_named() -> None:
    rnd, _, survivors, total = _round_until_unmasking(threshold=3, n=6)
    responses = rnd.unmasking_responses(survivors)
    # Holder 2 alters its shares of clients 0 and 5 (the first three holders of each include 2)
    # and holder 5 its share of client 0 (0's fifth holder: never used, so harmless).
    bad = _tamper_share(_tamper_share(responses[2], owner=0), owner=5)
    tampered = {**responses, 2: bad, 5: _tamper_share(responses[5], owner=0)}
    unmasked = rnd.server.unmask(total, survivors, tampered, rnd.masks)
    assert unmasked.tolist() == [21] * 8
    assert rnd.server.altered == {2: [0, 5]}


def _with_self_mask_shares(response, owners: list[int], rows: np.ndarray):  # type: ignore[no-untyped-def]
    return dataclasses.replace(response, self_mask_owners=np.array(owners, dtype=np.int64),
                               self_mask_shares=rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A share of someone outside the round would otherwise sort among a member's shares.
        (lambda r: _with_self_mask_shares(r, [*r.self_mask_owners[:-1].tolist(), 99],
                                          r.self_mask_shares),
         r"client 2 sent a share of the self-mask seed of client 99, which is not in the round"),
        (lambda r: _with_self_mask_shares(r, [*r.self_mask_owners[:-1].tolist(),
                                              int(r.self_mask_owners[0])], r.self_mask_shares),
         r"client 2 sent two shares of the self-mask seed of client 0"),
        (lambda r: _with_self_mask_shares(r, r.self_mask_owners.tolist(),
                                          r.self_mask_shares[:, :-1]),
         r"the unmasking response of client 2 is malformed"),
    ],
)
def test_a_malformed_unmasking_response_names_its_sender(change, message: str) -> None:  # type: ignore[no-untyped-def]
    rnd, _, survivors, total = _round_until_unmasking(threshold=3, n=6)
    responses = rnd.unmasking_responses(survivors)
    with pytest.raises(ProtocolViolation, match=message):
        rnd.server.unmask(total, survivors, {**responses, 2: change(responses[2])}, rnd.masks)


@settings(max_examples=40, deadline=None)
@given(members=st.sets(st.integers(0, 10**9), min_size=2, max_size=40),
       compact=st.booleans(), probes=st.lists(st.integers(-5, 10**9 + 5), max_size=30))
def test_positions_are_each_members_index_and_minus_one_for_strangers(
    members: set[int], compact: bool, probes: list[int]
) -> None:
    # Compact ids take the table path, spread ones the binary search; both must agree with a
    # plain dictionary, strangers included (just outside the table's range too).
    ids = list(range(min(members), min(members) + len(members))) if compact else sorted(members)
    setup = RoundSetup(0, Ring(32), Graph.full(ids), threshold=1)
    index = {c: i for i, c in enumerate(ids)}
    asked = [*ids, *probes, ids[0] - 1, ids[-1] + 1]
    assert setup.positions(asked).tolist() == [index.get(c, -1) for c in asked]
    assert setup.x(ids).tolist() == [i + 1 for i in range(len(ids))]


def test_share_keys_from_a_client_outside_the_round_is_refused() -> None:
    rnd, _, _, _ = _round_until_unmasking(threshold=2, n=4)
    dealt = dict(rnd.server.dealt)
    dealt[99] = dataclasses.replace(dealt[3], sender=99)
    with pytest.raises(ProtocolViolation, match="ShareKeys message of client 99, which is not"):
        rnd.server.route_shares(dealt)


def _without_share_of(response, owner: int):  # type: ignore[no-untyped-def]
    keep = response.self_mask_owners != owner
    return _with_self_mask_shares(response, response.self_mask_owners[keep].tolist(),
                                  response.self_mask_shares[keep])


def test_holders_lacking_shares_send_the_server_past_the_first_responses() -> None:
    # Complete graph, t = 3: the first t + 2 = 5 responses (clients 0-4) hold four shares of
    # client 5, enough to read no further. Here holders 1, 2 and 3 lack theirs (as if the
    # server had withheld them), so the prefix holds two, fewer than t: the later responses
    # must be read (holders 0, 4, 6), or the round would abort.
    rnd, _, survivors, total = _round_until_unmasking(threshold=3, n=8)
    responses = rnd.unmasking_responses(survivors)
    honest = rnd.server.unmask(total, survivors, responses, rnd.masks)
    lacking = {**responses, **{h: _without_share_of(responses[h], 5) for h in (1, 2, 3)}}
    assert rnd.server.unmask(total, survivors, lacking, rnd.masks).tolist() == honest.tolist()
    assert honest.tolist() == [36] * 8


def test_the_round_reports_the_holder_that_altered_shares() -> None:
    ring = Ring(32)
    clients = list(range(6))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=3)
    liar = rnd.clients[1]
    honest_unmask = liar.unmask

    def altered_unmask(survivors, dropped):  # type: ignore[no-untyped-def]
        return _tamper_share(honest_unmask(survivors, dropped), owner=3)

    liar.unmask = altered_unmask  # type: ignore[method-assign]
    sent = {c: rnd.masked_input(c, np.full(4, c, dtype=np.uint32)) for c in clients}
    result = rnd.aggregate(sent)  # type: ignore[arg-type]
    assert result.total.tolist() == [15] * 4
    assert result.altered_shares == {1: (3,)}
def test_client_never_reveals_both_secrets_of_a_neighbour() -> None:
    rnd, _, _, _ = _round_until_unmasking(threshold=2)
    client = rnd.clients[0]
    with pytest.raises(ProtocolViolation, match=r"both secrets of clients \[1\]"):
        client.unmask(survivors={1, 2, 3, 4}, dropped={1})
    # One request per round: a second, even an honest-looking one, is refused.
    with pytest.raises(ProtocolViolation, match="already answered"):
        client.unmask(survivors={1, 2}, dropped={3, 4})


def test_client_refuses_to_unmask_with_too_few_survivors() -> None:
    rnd, _, _, _ = _round_until_unmasking(threshold=3)
    with pytest.raises(AggregationError, match="refuses to unmask: only 2"):
        rnd.clients[0].unmask(survivors={1, 2}, dropped={3, 4})


def test_masked_input_from_a_non_dealer_is_rejected() -> None:
    ring = Ring(32)
    clients = list(range(4))
    rnd = SecAggRound(
        clients, ring=ring, graph=Graph.full(clients), threshold=2,
        dropouts={3: Stage.SHARE_KEYS},
    )
    assert rnd.masked_input(3, np.zeros(2, dtype=np.uint32)) is None
    forged = rnd.clients[3].masked_input(np.zeros(2, dtype=np.uint32), rnd.masks)
    sent = {c: rnd.masked_input(c, np.zeros(2, dtype=np.uint32)) for c in range(3)}
    with pytest.raises(ProtocolViolation, match="client 3, which did not deal shares"):
        rnd.server.sum_masked({**sent, 3: forged})  # type: ignore[dict-item]


def test_bad_encoded_input_names_the_client() -> None:
    ring = Ring(16)
    clients = list(range(3))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    with pytest.raises(BadClientUpdate, match=r"client 1: .*outside Z/2\^16"):
        rnd.masked_input(1, np.array([70000], dtype=np.uint32))
    with pytest.raises(BadClientUpdate, match=r"client 2: .*dtype float32"):
        rnd.masked_input(2, np.zeros(3, dtype=np.float32))


def test_message_bytes_follow_the_wire_format() -> None:
    n, dim = 5, 10
    ring = Ring(32)
    clients = list(range(n))
    result = secure_sum(
        {c: np.zeros(dim, dtype=np.uint32) for c in clients},
        ring=ring, graph=Graph.full(clients), threshold=3,
        dropouts={4: Stage.MASKED_INPUT},
    )
    # A share of a 16-byte seed: 8 elements of GF(65537), 16 low bytes and 1 byte of high bits;
    # its x-coordinate is the holder's position in the round, so it is not sent.
    ident, key, share, tag, commitment = 4, 32, 17, 16, 32
    ciphertext = 2 * share + tag  # key-seed share + self-mask share + GCM tag
    advertise = ident + 2 * key
    share_keys = ident + (n - 1) * (ident + ciphertext) + 2 * commitment
    masked = ident + 4 * dim + tag  # the vector and its GMAC
    unmasking = ident + (n - 1) * (ident + share)  # one share per neighbour
    survivor_upload = advertise + share_keys + masked + unmasking
    assert result.upload_bytes == {**dict.fromkeys(range(4), survivor_upload),
                                   4: advertise + share_keys}
    roster = (n - 1) * advertise + key  # the neighbours' keys and the server's round key
    inbox = (n - 1) * (ident + ciphertext)
    request = (n - 1) * ident
    assert result.download_bytes == {**dict.fromkeys(range(4), roster + inbox + request),
                                     4: roster + inbox}


def _byte_histogram(vector: np.ndarray) -> np.ndarray:
    return np.bincount(vector.view(np.uint8), minlength=256)


def test_a_masked_vector_is_uniform_and_the_plain_one_is_not() -> None:
    ring = Ring(32)
    clients = list(range(4))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    # A very non-uniform input: small counts, as a quantized update would be.
    plain = (np.arange(1 << 16, dtype=np.uint32) % 7) * 1000
    masked = rnd.masked_input(0, plain)
    assert masked is not None
    assert chisquare(_byte_histogram(masked.payload)).pvalue > 1e-6
    assert chisquare(_byte_histogram(plain)).pvalue < 1e-6  # the test can tell


def test_a_client_masks_one_input_a_round() -> None:
    ring = Ring(32)
    clients = list(range(3))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    first = rnd.masked_input(0, np.zeros(4, dtype=np.uint32))
    assert first is not None
    with pytest.raises(ProtocolViolation, match=r"round 0: client 0: .*one input a round"):
        rnd.clients[0].masked_input(np.full(4, 9, dtype=np.uint32), rnd.masks)
    # Why: the two would share every mask, so their difference is the difference of inputs.
    client = rnd.clients[0]
    client._masked = False
    second = client.masked_input(np.full(4, 9, dtype=np.uint32), rnd.masks)
    difference = ring.unpack(second.payload, 4) - ring.unpack(first.payload, 4)
    assert difference.tolist() == [9, 9, 9, 9]


def test_masked_values_are_uniform_in_a_small_ring() -> None:
    ring = Ring(12)
    clients = list(range(3))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    masked = rnd.masked_input(1, np.zeros(1 << 17, dtype=np.uint32))
    assert masked is not None
    assert masked.payload.nbytes == (1 << 17) * 12 // 8  # packed: 12 bits a value
    values = ring.unpack(masked.payload, masked.dim)
    counts = np.bincount(values, minlength=1 << 12)
    assert counts.size == 1 << 12
    assert chisquare(counts).pvalue > 1e-6


def test_round_rejects_inconsistent_arguments() -> None:
    ring = Ring(32)
    with pytest.raises(ValueError, match="vertices"):
        SecAggRound([0, 1, 2], ring=ring, graph=Graph.full([0, 1]), threshold=1)
    with pytest.raises(ValueError, match="threshold"):
        SecAggRound([0, 1, 2], ring=ring, graph=Graph.full([0, 1, 2]), threshold=3)
    with pytest.raises(ValueError, match=r"dropouts name clients \[7\]"):
        SecAggRound(
            [0, 1, 2], ring=ring, graph=Graph.full([0, 1, 2]), threshold=2,
            dropouts={7: Stage.UNMASKING},
        )
    with pytest.raises(AggregationError, match="no masked input"):
        SecAggRound([0, 1, 2], ring=ring, graph=Graph.full([0, 1, 2]), threshold=2).aggregate({})


def test_masked_inputs_of_different_lengths_are_rejected_before_summing() -> None:
    ring = Ring(32)
    clients = list(range(3))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    sent = {c: rnd.masked_input(c, np.zeros(4 if c else 5, dtype=np.uint32)) for c in clients}
    with pytest.raises(BadClientUpdate, match=r"client 1: masked input of 4 values"):
        rnd.server.sum_masked(sent)  # type: ignore[arg-type]


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(10, 40),
    dim=st.integers(100, 3000),
    half=st.integers(1, 6),
    drop=st.floats(0, 0.3),
    stage=st.sampled_from(STAGES),
    seed=st.integers(0, 2**32 - 1),
)
def test_larger_rounds_sum_exactly(
    n: int, dim: int, half: int, drop: float, stage: Stage, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    clients = list(range(n))
    graph = Graph.harary(clients, degree=2 * half, seed=rng.bytes(32))
    threshold = graph.degree // 2 + 1
    dropouts = {int(c): stage for c in rng.choice(n, size=int(drop * n), replace=False)}
    ring = Ring(32)
    inputs = {c: rng.integers(0, 2**32, dim, dtype=np.uint64).astype(np.uint32) for c in clients}
    expected = expected_outcome(graph, threshold, dropouts)
    if expected is None:
        with pytest.raises(AggregationError):
            secure_sum(inputs, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts)
        return
    result = secure_sum(inputs, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts)
    reference = sum(inputs[c].astype(np.uint64) for c in expected[0]) % 2**32
    np.testing.assert_array_equal(result.total, reference)
