"""Tests for fedbench.defenses.secagg.protocol: exact sums under dropouts, aborts, tampering."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.protocol import (
    ProtocolViolation,
    SecAggRound,
    Stage,
    secure_sum,
)
from fedbench.defenses.secagg.ring import Ring
from fedbench.defenses.secagg.shamir import ReconstructionError, Share
from fedbench.errors import AggregationError, BadClientUpdate

STAGES = list(Stage)


def expected_outcome(
    graph: Graph, threshold: int, dropouts: dict[int, Stage]
) -> tuple[frozenset[int], frozenset[int]] | None:
    """The protocol's specification, written independently of its implementation.

    Returns (U3, the dropouts whose mask keys must be reconstructed), or None when the round
    must abort.
    """

    def sends(c: int, stage: Stage) -> bool:
        return c not in dropouts or STAGES.index(dropouts[c]) > STAGES.index(stage)

    u1 = {c for c in graph.clients if sends(c, Stage.ADVERTISE_KEYS)}
    u2 = {c for c in u1 if sends(c, Stage.SHARE_KEYS)}
    u3 = {c for c in u2 if sends(c, Stage.MASKED_INPUT)}
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
    return frozenset(u3), frozenset(dropped_with_survivors)


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
    }


@settings(max_examples=400, deadline=None)
@given(rounds())
def test_decoded_sum_is_exact_or_the_round_aborts(case: dict) -> None:
    graph, threshold, dropouts = case["graph"], case["threshold"], case["dropouts"]
    ring = Ring(case["bits"])
    rng = np.random.default_rng(case["data_seed"])
    inputs = {
        c: rng.integers(0, ring.modulus, size=case["dim"], dtype=np.uint64, endpoint=False)
        .astype(ring.dtype)
        for c in graph.clients
    }
    expected = expected_outcome(graph, threshold, dropouts)
    event("aborts" if expected is None else "sums")
    if expected is None:
        with pytest.raises(AggregationError):
            secure_sum(
                inputs, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts,
                round_index=case["data_seed"] % 7,
            )
        return
    result = secure_sum(
        inputs, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts,
        round_index=case["data_seed"] % 7,
    )
    survivors, reconstructed_keys = expected
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


def test_tampered_share_fails_loudly() -> None:
    # Threshold = every holder, so each share is used in reconstruction.
    rnd, _, survivors, total = _round_until_unmasking(threshold=4)
    responses = rnd.unmasking_responses(survivors)
    honest = rnd.server.unmask(total, survivors, responses, rnd.masks)
    assert honest.tolist() == [15] * 8
    victim = responses[3]
    share = victim.self_mask_shares[0]
    flipped = bytes([share.value[0] ^ 1]) + share.value[1:]
    tampered = dict(responses)
    tampered[3] = type(victim)(
        victim.sender, {**victim.self_mask_shares, 0: Share(share.index, flipped)},
        victim.key_shares,
    )
    with pytest.raises(ReconstructionError, match=r"self-mask seed of client 0.*altered"):
        rnd.server.unmask(total, survivors, tampered, rnd.masks)


def test_tampered_ciphertext_fails_authentication() -> None:
    ring = Ring(32)
    clients = list(range(4))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    inbox = rnd.clients[2]._inbox
    ciphertext = inbox[1]
    inbox[1] = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    sent = {c: rnd.masked_input(c, np.zeros(3, dtype=np.uint32)) for c in clients}
    with pytest.raises(AggregationError, match="client 2: the shares from client 1"):
        rnd.aggregate(sent)  # type: ignore[arg-type]


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
    ident, key, share, tag, commitment = 4, 32, 16, 16, 32
    ciphertext = 4 + 2 * share + tag  # share index + key-seed share + self-mask share + GCM tag
    advertise = ident + 2 * key
    share_keys = ident + (n - 1) * (ident + ciphertext) + 2 * commitment
    masked = ident + 4 * dim
    unmasking = ident + (n - 1) * (ident + 4 + share)  # one share per neighbour
    survivor_upload = advertise + share_keys + masked + unmasking
    assert result.upload_bytes == {**dict.fromkeys(range(4), survivor_upload),
                                   4: advertise + share_keys}
    roster = (n - 1) * advertise
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
    assert chisquare(_byte_histogram(masked.vector)).pvalue > 1e-6
    assert chisquare(_byte_histogram(plain)).pvalue < 1e-6  # the test can tell


def test_masked_values_are_uniform_in_a_small_ring() -> None:
    ring = Ring(12)
    clients = list(range(3))
    rnd = SecAggRound(clients, ring=ring, graph=Graph.full(clients), threshold=2)
    masked = rnd.masked_input(1, np.zeros(1 << 17, dtype=np.uint32))
    assert masked is not None
    assert int(masked.vector.max()) < 1 << 12
    counts = np.bincount(masked.vector, minlength=1 << 12)
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
    with pytest.raises(BadClientUpdate, match=r"client 1: masked input has shape \(4,\)"):
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
