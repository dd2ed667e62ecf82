"""Secure aggregation with dropouts (Bonawitz et al., CCS 2017; SecAgg+, Bell et al., CCS 2020).

The protocol sums vectors of Z/2^b (see :mod:`.ring`) and knows nothing of floats: encoders
(:mod:`.encoding`, or distributed DP's) turn updates into ring vectors and back. It runs in
process, but clients and server are separate objects that only exchange the messages of the
real protocol, whose sizes are counted:

0. **AdvertiseKeys** – client u → server: two X25519 public keys (c_u for encrypting shares,
   s_u for masks). The server forwards each client its neighbours' keys (U1 = who sent keys),
   and reveals the graph seed it committed to; u recomputes its neighbourhood and checks.
1. **ShareKeys** – u splits its key seed (which determines s_u's private key) and its self-mask
   seed b_u into t-out-of-|N(u) ∩ U1| Shamir shares and sends each neighbour its pair of shares,
   AES-GCM-encrypted under a key agreed with that neighbour's c key (the server routes them but
   cannot read them), plus commitments to both seeds. U2 = who sent shares.
2. **MaskedInput** – u sends y_u = x_u + PRG(b_u) + Σ_{v∈N(u)∩U2, u<v} PRG(s_uv)
   − Σ_{v∈N(u)∩U2, u>v} PRG(s_uv) mod 2^b, s_uv agreed from the s keys. U3 = who sent y_u.
3. **Unmasking** – the server tells each u ∈ U3 which of its neighbours survived (U3) and which
   dropped (U2 \\ U3). u answers once: the b-share of each survivor, the key-share of each
   dropout, never both for the same client. From any t answers per client the server
   reconstructs b_v for every v ∈ U3 and the key seed of every dropout, removes the self-masks
   and the dropouts' pairwise masks, and obtains Σ_{u∈U3} x_u mod 2^b.

A client drops by sending nothing from some stage on (:class:`Stage`). When any secret that the
server needs has fewer than t answering holders the round aborts with
:class:`~fedbench.errors.AggregationError` and nothing is returned. The threat model is an
honest-but-curious server: the server here follows the protocol (the consistency-check round of
the actively secure variant is not run), while clients refuse requests that would reveal both
secrets of one client.

Example:
    >>> import numpy as np
    >>> from fedbench.defenses.secagg.graph import Graph
    >>> ring = Ring(32)
    >>> inputs = {c: np.full(3, c, dtype=ring.dtype) for c in range(5)}
    >>> result = secure_sum(inputs, ring=ring, graph=Graph.full(range(5)), threshold=3,
    ...                     dropouts={4: Stage.MASKED_INPUT})
    >>> result.total.tolist(), result.contributors
    ([6, 6, 6], (0, 1, 2, 3))
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from fedbench.defenses.secagg import keys
from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.ring import Ring
from fedbench.defenses.secagg.shamir import ReconstructionError, Share, combine, commit, split
from fedbench.errors import AggregationError, BadClientUpdate

ID_BYTES = 4  # a client id on the wire
_INDEX = struct.Struct(">I")


class Stage(str, Enum):
    """The protocol's message rounds; a client that drops at a stage sends nothing from it on."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASKING = "unmasking"

    @property
    def order(self) -> int:
        """Position of the stage in a round (0 to 3)."""
        return list(Stage).index(self)


class ProtocolViolation(AggregationError):
    """A party received a message that the honest protocol never sends; the round aborts."""


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAdvertisement:
    """Round 0, client → server: the client's two public keys."""

    sender: int
    cipher_public: bytes
    mask_public: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return ID_BYTES + len(self.cipher_public) + len(self.mask_public)


@dataclass(frozen=True)
class SharedKeys:
    """Round 1, client → server: encrypted shares for each neighbour, and seed commitments."""

    sender: int
    ciphertexts: Mapping[int, bytes]
    key_commitment: bytes
    self_mask_commitment: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        routed = sum(ID_BYTES + len(c) for c in self.ciphertexts.values())
        return ID_BYTES + routed + len(self.key_commitment) + len(self.self_mask_commitment)


@dataclass(frozen=True)
class MaskedInput:
    """Round 2, client → server: the masked vector y_u."""

    sender: int
    vector: np.ndarray

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return ID_BYTES + int(self.vector.nbytes)


@dataclass(frozen=True)
class UnmaskingResponse:
    """Round 3, client → server: b-shares of surviving neighbours, key-shares of dropped ones."""

    sender: int
    self_mask_shares: Mapping[int, Share]
    key_shares: Mapping[int, Share]

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        shares = [*self.self_mask_shares.values(), *self.key_shares.values()]
        return ID_BYTES + sum(ID_BYTES + s.nbytes for s in shares)


@dataclass(frozen=True)
class RoundSetup:
    """The public parameters of one round.

    Attributes:
        round_index: Bound into every derived key, so keys of different rounds never collide.
        ring: Z/2^b.
        graph: Who masks with whom.
        threshold: t, the number of a client's neighbours needed to reconstruct its secrets.
    """

    round_index: int
    ring: Ring
    graph: Graph
    threshold: int


def _label(setup: RoundSetup, kind: str, owner: int) -> bytes:
    return f"round {setup.round_index}: {kind} of client {owner}".encode()


def _share_associated_data(setup: RoundSetup, sender: int, recipient: int) -> bytes:
    return struct.pack(">QQQ", setup.round_index, sender, recipient)


# -- parties --------------------------------------------------------------------------------


class Client:
    """One client's side of the protocol. Its secrets never leave it except as shares.

    Args:
        client_id: The client.
        setup: The round's public parameters.
        graph_commitment: The server's commitment to the graph seed, received before the round.
    """

    def __init__(self, client_id: int, setup: RoundSetup, graph_commitment: bytes) -> None:
        self.id = client_id
        self.setup = setup
        self._graph_commitment = graph_commitment
        self._cipher_key = keys.private_key_from_seed(keys.random_seed())
        self._key_seed = keys.random_seed()
        self._mask_key = keys.private_key_from_seed(self._key_seed)
        self._self_mask_seed = keys.random_seed()
        self._roster: dict[int, KeyAdvertisement] = {}
        self._pair_seeds: dict[int, bytes] = {}
        self._inbox: dict[int, bytes] = {}
        self._answered = False

    def advertise_keys(self) -> KeyAdvertisement:
        """Round 0."""
        return KeyAdvertisement(
            self.id, keys.public_bytes(self._cipher_key), keys.public_bytes(self._mask_key)
        )

    def share_keys(self, graph: Graph, roster: Mapping[int, KeyAdvertisement]) -> SharedKeys:
        """Round 1: check the revealed graph and the forwarded keys, then deal the shares."""
        setup = self.setup
        if graph.commitment != self._graph_commitment or graph != setup.graph:
            raise ProtocolViolation(
                f"round {setup.round_index}: client {self.id}: the revealed graph does not match "
                "the server's commitment"
            )
        neighbours = graph.neighbours(self.id)
        strangers = sorted(set(roster) - neighbours)
        if strangers:
            raise ProtocolViolation(
                f"round {setup.round_index}: client {self.id} received keys of non-neighbours "
                f"{strangers}"
            )
        if any(advert.sender != v for v, advert in roster.items()):
            raise ProtocolViolation(
                f"round {setup.round_index}: client {self.id}: forwarded keys carry wrong senders"
            )
        if len(roster) < setup.threshold:
            raise AggregationError(
                f"round {setup.round_index}: client {self.id} has {len(roster)} neighbours with "
                f"keys, fewer than the threshold {setup.threshold}; its secrets could not be "
                "recovered, so the round aborts"
            )
        self._roster = dict(roster)
        recipients = sorted(roster)
        key_shares = split(self._key_seed, threshold=setup.threshold, count=len(recipients))
        self_shares = split(self._self_mask_seed, threshold=setup.threshold, count=len(recipients))
        ciphertexts: dict[int, bytes] = {}
        for v, key_share, self_share in zip(recipients, key_shares, self_shares, strict=True):
            secret = keys.shared_secret(self._cipher_key, roster[v].cipher_public)
            box = keys.share_key(
                secret, round_index=setup.round_index, sender=self.id, recipient=v
            )
            # Both splits number their shares 1..count in recipient order: one index serves.
            plaintext = _INDEX.pack(key_share.index) + key_share.value + self_share.value
            ciphertexts[v] = keys.seal(
                box, plaintext, _share_associated_data(setup, self.id, v)
            )
            agreed = keys.shared_secret(self._mask_key, roster[v].mask_public)
            self._pair_seeds[v] = keys.mask_seed(
                agreed, round_index=setup.round_index, a=self.id, b=v
            )
        return SharedKeys(
            self.id,
            ciphertexts,
            key_commitment=commit(self._key_seed, _label(setup, "key seed", self.id)),
            self_mask_commitment=commit(
                self._self_mask_seed, _label(setup, "self-mask seed", self.id)
            ),
        )

    def receive_shares(self, inbox: Mapping[int, bytes]) -> None:
        """End of round 1: keep the encrypted shares of the neighbours that dealt them."""
        strangers = sorted(set(inbox) - set(self._roster))
        if strangers:
            raise ProtocolViolation(
                f"round {self.setup.round_index}: client {self.id} received shares from "
                f"clients {strangers} whose keys it never got"
            )
        self._inbox = dict(inbox)

    def masked_input(self, values: np.ndarray, masks: MaskGenerator) -> MaskedInput:
        """Round 2: y_u = x_u + PRG(b_u) ± PRG(s_uv) over the neighbours that dealt shares."""
        ring = self.setup.ring
        ring.check(values, self.id, values.shape[0] if values.ndim == 1 else -1)
        masked = np.array(values, dtype=ring.dtype, copy=True)
        add = [self._self_mask_seed] + [self._pair_seeds[v] for v in self._inbox if self.id < v]
        subtract = [self._pair_seeds[v] for v in self._inbox if self.id > v]
        masks.apply(masked, add=add, subtract=subtract)
        return MaskedInput(self.id, masked)

    def unmask(self, survivors: Collection[int], dropped: Collection[int]) -> UnmaskingResponse:
        """Round 3, answered once: b-shares of ``survivors``, key-shares of ``dropped``."""
        setup = self.setup
        where = f"round {setup.round_index}: client {self.id}"
        if self._answered:
            raise ProtocolViolation(f"{where} already answered an unmasking request")
        self._answered = True
        alive, gone = set(survivors), set(dropped)
        both = sorted(alive & gone)
        if both:
            raise ProtocolViolation(
                f"{where} was asked for both secrets of clients {both}; refusing"
            )
        if alive | gone != set(self._inbox):
            raise ProtocolViolation(
                f"{where}: the unmasking request lists {sorted(alive | gone)}, but the clients "
                f"that dealt it shares are {sorted(self._inbox)}"
            )
        if len(alive) < setup.threshold:
            raise AggregationError(
                f"{where} refuses to unmask: only {len(alive)} of its neighbours sent masked "
                f"inputs, fewer than the threshold {setup.threshold}"
            )
        self_mask_shares: dict[int, Share] = {}
        key_shares: dict[int, Share] = {}
        for v, ciphertext in self._inbox.items():
            secret = keys.shared_secret(self._cipher_key, self._roster[v].cipher_public)
            box = keys.share_key(
                secret, round_index=setup.round_index, sender=v, recipient=self.id
            )
            try:
                plaintext = keys.open_sealed(
                    box, ciphertext, _share_associated_data(setup, v, self.id)
                )
            except ValueError as err:
                raise AggregationError(f"{where}: the shares from client {v}: {err}") from None
            index = _INDEX.unpack_from(plaintext)[0]
            body = plaintext[_INDEX.size :]
            half = len(body) // 2
            if v in alive:
                self_mask_shares[v] = Share(index, body[half:])
            else:
                key_shares[v] = Share(index, body[:half])
        return UnmaskingResponse(self.id, self_mask_shares, key_shares)


class Server:
    """The server's side: routes messages, sums masked inputs, reconstructs and unmasks.

    Args:
        setup: The round's public parameters.
    """

    def __init__(self, setup: RoundSetup) -> None:
        self.setup = setup
        self.keys: dict[int, KeyAdvertisement] = {}
        self.dealt: dict[int, SharedKeys] = {}
        self.revealed_self_masks: frozenset[int] = frozenset()
        self.revealed_keys: frozenset[int] = frozenset()

    def route_keys(
        self, adverts: Mapping[int, KeyAdvertisement]
    ) -> dict[int, dict[int, KeyAdvertisement]]:
        """Round 0 → 1: each client gets the keys of its neighbours that advertised (U1)."""
        graph = self.setup.graph
        self.keys = dict(adverts)
        return {
            u: {v: adverts[v] for v in sorted(graph.neighbours(u)) if v in adverts}
            for u in adverts
        }

    def route_shares(self, dealt: Mapping[int, SharedKeys]) -> dict[int, dict[int, bytes]]:
        """Round 1 → 2: each dealer (U2) gets the ciphertexts addressed to it by other dealers."""
        self.dealt = dict(dealt)
        inbox: dict[int, dict[int, bytes]] = {u: {} for u in dealt}
        for u, message in dealt.items():
            for v, ciphertext in message.ciphertexts.items():
                if v in inbox:
                    inbox[v][u] = ciphertext
        return inbox

    def sum_masked(self, inputs: Mapping[int, MaskedInput]) -> np.ndarray:
        """Round 2, the hot path: Σ y_u over the received masked inputs (storage-type wrap).

        Every message is validated before the first addition, so a bad one leaves no half sum.
        """
        if not inputs:
            raise AggregationError(f"round {self.setup.round_index}: no masked input arrived")
        dealt, dtype = self.dealt, self.setup.ring.dtype
        vectors: list[np.ndarray] = []
        for u, message in inputs.items():
            vector = message.vector
            if message.sender != u or u not in dealt:
                raise ProtocolViolation(
                    f"round {self.setup.round_index}: masked input from client {u}, which did "
                    "not deal shares"
                )
            if vector.dtype != dtype or (vectors and vector.shape != vectors[0].shape):
                expected = vectors[0].shape if vectors else "(dim,)"
                raise BadClientUpdate(
                    u, f"masked input has shape {vector.shape} and dtype {vector.dtype}, "
                    f"expected {expected} and {dtype}"
                )
            vectors.append(vector)
        total = vectors[0].copy()
        for vector in vectors[1:]:
            np.add(total, vector, out=total)
        return total

    def unmasking_requests(
        self, survivors: Collection[int]
    ) -> dict[int, tuple[frozenset[int], frozenset[int]]]:
        """Round 3 requests: for each survivor, its dealing neighbours that survived / dropped."""
        alive = frozenset(survivors)
        requests = {}
        for u in sorted(alive):
            dealers = frozenset(self.setup.graph.neighbours(u) & set(self.dealt))
            requests[u] = (dealers & alive, dealers - alive)
        return requests

    def unmask(
        self,
        total: np.ndarray,
        survivors: Collection[int],
        responses: Mapping[int, UnmaskingResponse],
        masks: MaskGenerator,
    ) -> np.ndarray:
        """Round 3: reconstruct the needed seeds and remove every mask left in ``total``.

        ``total`` is not modified (the result is a new vector, reduced modulo 2^b).
        """
        add, subtract = self.mask_seeds(survivors, responses)
        result = total.copy()
        masks.apply(result, add=add, subtract=subtract)
        return result

    def mask_seeds(
        self, survivors: Collection[int], responses: Mapping[int, UnmaskingResponse]
    ) -> tuple[list[bytes], list[bytes]]:
        """The seeds of the masks left in the sum of ``survivors``' inputs: (to add back, to
        subtract), from the survivors' unmasking ``responses``.

        Self-mask seeds are reconstructed for survivors only and key seeds for dropouts only,
        so the server never holds both secrets of one client.

        Raises:
            AggregationError: A needed secret has fewer than t shares in ``responses``.
            ReconstructionError: Shares do not reconstruct the committed secret (tampering).
        """
        setup = self.setup
        graph = setup.graph
        alive = frozenset(survivors)
        dropped = {v for v in self.dealt if v not in alive and graph.neighbours(v) & alive}
        if alive & dropped:  # cannot happen by construction; the guard documents the rule
            raise ProtocolViolation("the server would reconstruct both secrets of a client")
        self_shares: dict[int, list[Share]] = {u: [] for u in alive}
        key_shares: dict[int, list[Share]] = {v: [] for v in dropped}
        for holder in sorted(responses):
            response = responses[holder]
            for owner, share in response.self_mask_shares.items():
                if owner in self_shares:
                    self_shares[owner].append(share)
            for owner, share in response.key_shares.items():
                if owner in key_shares:
                    key_shares[owner].append(share)

        def reconstruct(owner: int, kind: str, shares: list[Share], commitment: bytes) -> bytes:
            if len(shares) < setup.threshold:
                raise AggregationError(
                    f"round {setup.round_index}: only {len(shares)} neighbours of client {owner} "
                    f"answered the unmasking request, fewer than the threshold "
                    f"{setup.threshold}; the round aborts and nothing is returned"
                )
            try:
                return combine(
                    shares,
                    threshold=setup.threshold,
                    commitment=commitment,
                    label=_label(setup, kind, owner),
                )
            except ReconstructionError as err:
                raise ReconstructionError(f"{err}; the round aborts") from None

        subtract = [
            reconstruct(u, "self-mask seed", self_shares[u], self.dealt[u].self_mask_commitment)
            for u in sorted(alive)
        ]
        add: list[bytes] = []
        for v in sorted(dropped):
            seed = reconstruct(v, "key seed", key_shares[v], self.dealt[v].key_commitment)
            private = keys.private_key_from_seed(seed)
            for u in sorted(graph.neighbours(v) & alive):
                pair = keys.mask_seed(
                    keys.shared_secret(private, self.keys[u].mask_public),
                    round_index=setup.round_index, a=u, b=v,
                )
                # u added PRG(s_uv) if u < v and subtracted it otherwise; undo that.
                (subtract if u < v else add).append(pair)
        self.revealed_self_masks = alive
        self.revealed_keys = frozenset(dropped)
        return add, subtract


# -- one round, run in process ------------------------------------------------------------------


@dataclass(frozen=True)
class SumResult:
    """The outcome of a round that did not abort.

    Attributes:
        total: Σ x_u mod 2^b over ``contributors`` (the ring's storage type).
        contributors: U3: the clients whose inputs are in ``total``.
        dropped: Clients that stopped responding, with the stage at which they did (those that
            dropped at ``UNMASKING`` are also contributors).
        upload_bytes: Bytes each client sent, all messages included.
        download_bytes: Bytes each client received from the server.
        revealed_self_masks: Clients whose self-mask seed the server reconstructed.
        revealed_keys: Clients whose mask key seed the server reconstructed.
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: dict[int, Stage] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    revealed_self_masks: frozenset[int] = frozenset()
    revealed_keys: frozenset[int] = frozenset()


class SecAggRound:
    """One round of the protocol among ``clients``: the key rounds run on construction.

    Then call :meth:`masked_input` for each client (None means it sends nothing) and
    :meth:`aggregate` with the masked inputs that arrived.

    Args:
        clients: The clients of the round (the graph's vertices).
        ring: Z/2^b.
        graph: Who masks with whom (:class:`~.graph.Graph`).
        threshold: t, between 1 and the graph's degree.
        round_index: Bound into every derived key.
        dropouts: Clients that drop, with the stage from which they send nothing.
        masks: The mask generator to reuse (a new one otherwise).

    Raises:
        AggregationError: The round cannot even set up (a client has fewer than t neighbours
            with keys).

    Example:
        >>> import numpy as np
        >>> ring = Ring(16)
        >>> rnd = SecAggRound(range(4), ring=ring, graph=Graph.full(range(4)), threshold=2)
        >>> sent = {c: rnd.masked_input(c, np.ones(2, dtype=ring.dtype)) for c in range(4)}
        >>> rnd.aggregate(sent).total.tolist()
        [4, 4]
    """

    def __init__(
        self,
        clients: Iterable[int],
        *,
        ring: Ring,
        graph: Graph,
        threshold: int,
        round_index: int = 0,
        dropouts: Mapping[int, Stage] | None = None,
        masks: MaskGenerator | None = None,
    ) -> None:
        members = tuple(sorted(set(clients)))
        if members != graph.clients:
            raise ValueError("the graph's vertices must be exactly the round's clients")
        if len(members) < 2:
            raise AggregationError(
                f"round {round_index}: secure aggregation needs at least 2 clients, got "
                f"{len(members)}"
            )
        if not 1 <= threshold <= graph.degree:
            raise ValueError(
                f"threshold must be between 1 and the degree {graph.degree}, got {threshold}"
            )
        self.dropouts = {c: Stage(s) for c, s in (dropouts or {}).items()}
        unknown = sorted(set(self.dropouts) - set(members))
        if unknown:
            raise ValueError(f"dropouts name clients {unknown} that are not in the round")
        if masks is not None and masks.ring != ring:
            raise ValueError("the mask generator works in a different ring")
        self.setup = RoundSetup(round_index, ring, graph, threshold)
        self.masks = masks or MaskGenerator(ring)
        self.server = Server(self.setup)
        self.clients = {c: Client(c, self.setup, graph.commitment) for c in members}
        self.upload: Counter[int] = Counter()
        self.download: Counter[int] = Counter()
        self._dealers: frozenset[int] = frozenset()
        self._run_key_rounds()

    def sends(self, client_id: int, stage: Stage) -> bool:
        """Whether ``client_id`` still sends its message of ``stage``."""
        dropped_at = self.dropouts.get(client_id)
        return dropped_at is None or dropped_at.order > stage.order

    def _run_key_rounds(self) -> None:
        adverts = {
            c: client.advertise_keys()
            for c, client in self.clients.items()
            if self.sends(c, Stage.ADVERTISE_KEYS)
        }
        for c, advert in adverts.items():
            self.upload[c] += advert.nbytes
        rosters = self.server.route_keys(adverts)
        seed_bytes = len(self.setup.graph.seed)
        dealt: dict[int, SharedKeys] = {}
        for c in adverts:
            self.download[c] += seed_bytes + sum(a.nbytes for a in rosters[c].values())
            if self.sends(c, Stage.SHARE_KEYS):
                dealt[c] = self.clients[c].share_keys(self.setup.graph, rosters[c])
                self.upload[c] += dealt[c].nbytes
        inboxes = self.server.route_shares(dealt)
        for c, inbox in inboxes.items():
            self.clients[c].receive_shares(inbox)
            self.download[c] += sum(ID_BYTES + len(ct) for ct in inbox.values())
        self._dealers = frozenset(dealt)

    def masked_input(self, client_id: int, values: np.ndarray) -> MaskedInput | None:
        """Client side of round 2; None when the client no longer takes part."""
        if client_id not in self._dealers or not self.sends(client_id, Stage.MASKED_INPUT):
            return None
        message = self.clients[client_id].masked_input(values, self.masks)
        self.upload[client_id] += message.nbytes
        return message

    def unmasking_responses(self, survivors: Collection[int]) -> dict[int, UnmaskingResponse]:
        """Round 3 on the clients' side: each survivor still online answers once."""
        responses = {}
        for u, (alive, gone) in self.server.unmasking_requests(survivors).items():
            self.download[u] += ID_BYTES * (len(alive) + len(gone))
            if self.sends(u, Stage.UNMASKING):
                responses[u] = self.clients[u].unmask(alive, gone)
                self.upload[u] += responses[u].nbytes
        return responses

    def aggregate(self, inputs: Mapping[int, MaskedInput]) -> SumResult:
        """Rounds 2–3 on the server: sum, unmask, and return Σ x_u over the senders.

        Raises:
            AggregationError: No input arrived, or a needed secret has fewer than t answering
                holders, or a share fails its commitment. Nothing is returned.
        """
        total = self.server.sum_masked(inputs)
        survivors = frozenset(inputs)
        responses = self.unmasking_responses(survivors)
        unmasked = self.server.unmask(total, survivors, responses, self.masks)
        dropped = {
            c: self.dropouts.get(c, Stage.MASKED_INPUT)
            for c in self.clients
            if c not in survivors or c not in responses
        }
        return SumResult(
            total=unmasked,
            contributors=tuple(sorted(survivors)),
            dropped=dropped,
            upload_bytes={c: self.upload[c] for c in self.clients},
            download_bytes={c: self.download[c] for c in self.clients},
            revealed_self_masks=self.server.revealed_self_masks,
            revealed_keys=self.server.revealed_keys,
        )


def secure_sum(
    inputs: Mapping[int, np.ndarray],
    *,
    ring: Ring,
    graph: Graph,
    threshold: int,
    round_index: int = 0,
    dropouts: Mapping[int, Stage] | None = None,
    masks: MaskGenerator | None = None,
) -> SumResult:
    """Run one whole round over ``inputs`` (client → vector of ring elements).

    Args:
        inputs: Each client's encoded input (``ring.dtype``, same length).
        ring: Z/2^b.
        graph: Who masks with whom; its vertices must be the keys of ``inputs``.
        threshold: t.
        round_index: Bound into every derived key.
        dropouts: Clients that drop, with the stage from which they send nothing.
        masks: The mask generator to reuse.

    Raises:
        AggregationError: Too many dropouts (or tampering): the round aborts.
    """
    rnd = SecAggRound(
        inputs, ring=ring, graph=graph, threshold=threshold, round_index=round_index,
        dropouts=dropouts, masks=masks,
    )
    sent = {}
    for c, values in inputs.items():
        message = rnd.masked_input(c, values)
        if message is not None:
            sent[c] = message
    return rnd.aggregate(sent)
