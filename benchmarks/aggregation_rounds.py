"""Complete SecAgg / SecAgg+ rounds at cross-device scale, their AES lower bounds, and Flower's
SecAgg+ server unmasking built from its own primitives on the same n, d.

A :class:`Fixture` is one (mode, n) round after its key rounds (no client drops before the
masked-input stage, so the key rounds serve every dropout setting), with the masked inputs of
one dimension. Dropouts are then a choice of which masked inputs arrive: the same messages serve
dropout 0 and 10%, only the survivors' unmasking answers differ.

- :func:`server_round`: everything the server does from the first message to the unmasked sum —
  route the keys (and agree each client's input-authentication key), route the shares, verify
  and sum the masked inputs, build the unmasking requests, reconstruct every needed seed
  (Shamir), derive the dropouts' pairwise seeds and regenerate every mask left in the sum.
- :func:`client_round`: one client's whole round — new keys, the roster's agreements, Shamir
  dealing and sealing of its shares, masking and tagging its input, and answering the unmasking
  request.
- Bounds: the number of d-length mask expansions the party must do (server: one per survivor
  plus one per (dropout, surviving neighbour) pair; client: one per neighbour plus its own)
  times one raw AES-128-CTR expansion measured in the same session, plus (server) the float32
  sum of the survivors' vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aggregation_support import SMOKE, Baselines, best_seconds, replayed_masked_input

from fedbench.defenses.secagg.graph import Graph, choose_degree, full_threshold
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import (
    Client,
    MaskedInput,
    SecAggRound,
    UnmaskingResponse,
)
from fedbench.defenses.secagg.ring import Ring

TOLERATED = 0.1  # SecAgg+'s design fractions (dropout and corruption)
RING = Ring(32)
QUANT_LEVELS = 1 << 16  # inputs as a 16-bit quantizer makes them

# (mode, n) of the grid; full SecAgg stops at n = 500: the benchmark's own set-up (every client
# masking with n − 1 neighbours at d = 1e6) takes minutes beyond.
ROUND_SIZES = (
    [("secagg", 20), ("secagg+", 20)] if SMOKE
    else [("secagg", 100), ("secagg", 500), ("secagg+", 100), ("secagg+", 500), ("secagg+", 1000)]
)
ROUND_DIMS = [10_000] if SMOKE else [100_000, 1_000_000]
ROUND_DROPOUTS = (0.0, 0.1)
FLOWER_CLIENTS = 20 if SMOKE else 100  # Flower's pure-Python Shamir makes larger n take minutes


def plan(mode: str, clients: int) -> tuple[Graph, int]:
    """The graph and threshold the ``secagg`` defense would use for ``clients``."""
    members = list(range(clients))
    if mode == "secagg":
        return Graph.full(members), full_threshold(clients, corruption=TOLERATED)
    chosen = choose_degree(clients, dropout=TOLERATED, corruption=TOLERATED)
    return Graph.from_plan(members, chosen, seed=bytes(range(32))), chosen.threshold


@dataclass
class Fixture:
    """One round after its key rounds, with the masked inputs of one dimension.

    Attributes:
        round: The round (clients and server as the protocol left them after round 1).
        dim: d.
        values: The one encoded input every client masks (the masks make each message distinct).
        sent: Every client's masked input.
        answers: Survivor set → the survivors' unmasking responses.
    """

    round: SecAggRound
    dim: int
    values: np.ndarray
    sent: dict[int, MaskedInput]
    answers: dict[frozenset[int], dict[int, UnmaskingResponse]] = field(default_factory=dict)

    def survivors(self, dropout: float) -> frozenset[int]:
        """The clients whose masked inputs arrive: all but round(dropout·n), drawn once."""
        members = list(self.round.clients)
        rng = np.random.default_rng(len(members))
        gone = rng.choice(members, size=round(dropout * len(members)), replace=False)
        return frozenset(members) - {int(c) for c in gone}

    def responses(self, survivors: frozenset[int]) -> dict[int, UnmaskingResponse]:
        """The survivors' answers to the server's unmasking requests for this survivor set."""
        if survivors not in self.answers:
            requests = self.round.server.unmasking_requests(survivors)
            answers = {}
            for u, (alive, gone) in requests.items():
                client = self.round.clients[u]
                # The benchmark replays one round under several dropout patterns; a client
                # answers once per round, so its answered flag is reset between patterns.
                client._answered = False
                answers[u] = client.unmask(alive, gone)
            self.answers[survivors] = answers
        return self.answers[survivors]


_FIXTURE: dict[tuple[str, int, int], Fixture] = {}
_ROUNDS: dict[tuple[str, int], SecAggRound] = {}


def fixture(mode: str, clients: int, dim: int) -> Fixture:
    """The fixture of one configuration; only the latest round and dimension are kept."""
    key = (mode, clients, dim)
    if key not in _FIXTURE:
        _FIXTURE.clear()
        if (mode, clients) not in _ROUNDS:
            _ROUNDS.clear()
            graph, threshold = plan(mode, clients)
            _ROUNDS[(mode, clients)] = SecAggRound(
                range(clients), ring=RING, graph=graph, threshold=threshold
            )
        rnd = _ROUNDS[(mode, clients)]
        values = np.random.default_rng(dim).integers(0, QUANT_LEVELS, dim).astype(RING.dtype)
        sent = {
            c: replayed_masked_input(client, values, rnd.masks)
            for c, client in rnd.clients.items()
        }
        _FIXTURE[key] = Fixture(rnd, dim, values, sent)
    return _FIXTURE[key]


def server_round(fix: Fixture, survivors: frozenset[int]) -> Callable[[], np.ndarray]:
    """The server's complete round over the survivors' masked inputs (repeatable)."""
    rnd = fix.round
    server = rnd.server
    adverts, dealt = dict(server.keys), dict(server.dealt)
    sent = {c: fix.sent[c] for c in sorted(survivors)}
    responses = fix.responses(survivors)

    def run() -> np.ndarray:
        server.route_keys(adverts)
        server.route_shares(dealt)
        total = server.sum_masked(sent)
        server.unmasking_requests(server.senders)
        return server.unmask(total, server.senders, responses, rnd.masks)

    return run


def reconstruction(fix: Fixture, survivors: frozenset[int]) -> Callable[[], object]:
    """The Shamir part of the server's round alone."""
    server, responses = fix.round.server, fix.responses(survivors)
    return lambda: server.reconstruct_seeds(survivors, responses)


def authentication(fix: Fixture, survivors: frozenset[int]) -> Callable[[], object]:
    """The server's GMAC verification of the survivors' masked inputs alone."""
    server = fix.round.server
    sent = {c: fix.sent[c] for c in sorted(survivors)}
    return lambda: server.authentic(sent)


def expected_sum(fix: Fixture, survivors: frozenset[int]) -> np.ndarray:
    """Σ x_u over the survivors, computed without the protocol."""
    return (fix.values.astype(np.uint64) * len(survivors) % RING.modulus).astype(RING.dtype)


def server_expansions(fix: Fixture, survivors: frozenset[int]) -> int:
    """Masks the server must regenerate: each survivor's self-mask and each pairwise mask
    between a dropout and a surviving neighbour."""
    graph = fix.round.setup.graph
    dropped = set(fix.round.clients) - survivors
    return len(survivors) + sum(len(graph.neighbours(v) & survivors) for v in dropped)


def client_round(fix: Fixture) -> tuple[Callable[[], object], Callable[[], object], int]:
    """(new client's keys, sharing and masking; the unmasking answer; masks it expands).

    The first callable plays client 0 anew with fresh keys against the real roster and inbox
    (its own sharing and masking are exactly a client's work); the second is the real client
    0's answer to a no-dropout unmasking request (decrypting its neighbours' shares).
    """
    rnd = fix.round
    setup, server = rnd.setup, rnd.server
    me = rnd.clients[0]
    roster = {v: server.keys[v] for v in sorted(setup.graph.neighbours(0))}
    inbox = me._inbox
    masks = MaskGenerator(RING)

    def share_and_mask() -> object:
        fresh = Client(0, setup, setup.graph.commitment, server.public)
        fresh.advertise_keys()
        fresh.share_keys(setup.graph, roster)
        fresh.receive_shares(inbox)
        return fresh.masked_input(fix.values, masks)

    everyone = frozenset(rnd.clients)
    alive, gone = server.unmasking_requests(everyone)[0]

    def answer() -> object:
        me._answered = False  # replayed: see Fixture.responses
        return me.unmask(alive, gone)

    return share_and_mask, answer, 1 + len(me.dealers)


def aes_expansion(baselines: Baselines, dim: int) -> float:
    """Seconds of one d-length mask expansion at the raw AES-128-CTR rate."""
    return baselines.aes_seconds_per_word(dim) * dim


# -- Flower's SecAgg+ server unmasking, from flwr's own primitives ----------------------------


@dataclass
class FlowerRound:
    """What Flower's ``SecAggPlusWorkflow`` server holds before unmasking, made with flwr's
    functions: int64 masked vectors, Shamir shares (``create_shares``: pycryptodome over
    GF(2^128)) of each survivor's 32-byte seed and each dropout's serialized private key, and
    the neighbours' public keys."""

    vectors: list[list[np.ndarray]]
    seed_shares: dict[int, list[bytes]]
    key_shares: dict[int, list[bytes]]
    neighbours: dict[int, list[int]]
    publics: dict[int, bytes]
    mod_range: int = 1 << 32

    def unmask(self) -> list[np.ndarray]:
        """The server's side of Flower's stages 2 and 3 (``collect_masked_vectors_stage`` and
        ``unmask_stage``) without the messaging: sum, then remove every mask."""
        from flwr.common.secure_aggregation.crypto.shamir import combine_shares
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
            generate_shared_key,
        )
        from flwr.common.secure_aggregation.ndarrays_arithmetic import (
            get_parameters_shape,
            parameters_addition,
            parameters_mod,
            parameters_subtraction,
        )
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
        from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

        total = self.vectors[0]
        for vector in self.vectors[1:]:
            total = parameters_addition(total, vector)
        total = parameters_mod(total, self.mod_range)
        shape = get_parameters_shape(total)
        for shares in self.seed_shares.values():
            mask = pseudo_rand_gen(combine_shares(shares), self.mod_range, shape)
            total = parameters_subtraction(total, mask)
        for owner, shares in self.key_shares.items():
            private = bytes_to_private_key(combine_shares(shares))
            for other in self.neighbours[owner]:
                shared = generate_shared_key(private, bytes_to_public_key(self.publics[other]))
                mask = pseudo_rand_gen(shared, self.mod_range, shape)
                total = (parameters_addition if owner > other else parameters_subtraction)(
                    total, mask
                )
        return parameters_mod(total, self.mod_range)


def flower_round(fix: Fixture, survivors: frozenset[int]) -> FlowerRound:
    """Flower's server state for the same graph, threshold, survivors and dimension."""
    import os

    from flwr.common.secure_aggregation.crypto.shamir import create_shares
    from flwr.supercore.primitives.asymmetric import (
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    setup = fix.round.setup
    graph, threshold = setup.graph, setup.threshold
    rng = np.random.default_rng(0)
    vectors = [[rng.integers(0, 1 << 32, fix.dim, dtype=np.int64)] for _ in survivors]
    pairs = {c: generate_key_pairs() for c in graph.clients}
    publics = {c: public_key_to_bytes(public) for c, (_, public) in pairs.items()}
    dropped = sorted(set(graph.clients) - survivors)
    return FlowerRound(
        vectors=vectors,
        seed_shares={
            c: create_shares(os.urandom(32), threshold, len(graph.neighbours(c)))[:threshold]
            for c in sorted(survivors)
        },
        key_shares={
            c: create_shares(private_key_to_bytes(pairs[c][0]), threshold,
                             len(graph.neighbours(c)))[:threshold]
            for c in dropped
        },
        neighbours={c: sorted(graph.neighbours(c) & survivors) for c in dropped},
        publics=publics,
    )


def round_setup(fix: Fixture, survivors: frozenset[int]) -> dict[str, Any]:
    """Parameters of one round for ``extra_info``."""
    setup = fix.round.setup
    return {
        "degree": setup.graph.degree,
        "threshold": setup.threshold,
        "survivors": len(survivors),
        "dropped": len(fix.round.clients) - len(survivors),
        "ring_bits": RING.bits,
    }


def timed(fn: Callable[[], object], *, budget: float) -> float:
    """Best wall time of ``fn`` within about ``budget`` seconds (one run when smoke)."""
    return best_seconds(fn, budget=0.0 if SMOKE else budget, most=0 if SMOKE else 10)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN for a zero denominator."""
    return numerator / denominator if denominator else math.nan
