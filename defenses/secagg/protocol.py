"""Secure aggregation with dropouts (Bonawitz et al., CCS 2017; SecAgg+, Bell et al., CCS 2020).

The protocol sums vectors of Z/2^b (see :mod:`.ring`) and knows nothing of floats: encoders
(:mod:`.encoding`, or distributed DP's) turn updates into ring vectors and back. It runs in
process, but clients and server are separate objects that only exchange the messages of the
real protocol, whose sizes are counted:

0. **AdvertiseKeys** – client u → server: two X25519 public keys (c_u for encrypting shares,
   s_u for masks). The server forwards each client its neighbours' keys (U1 = who sent keys),
   and reveals the graph seed it committed to; u recomputes its neighbourhood and checks. The
   server's own X25519 key of the round comes with it (for authenticating masked inputs).
1. **ShareKeys** – u splits its key seed (which determines s_u's private key) and its self-mask
   seed b_u into t-out-of-|N(u) ∩ U1| Shamir shares (:mod:`.shamir`, both seeds and all holders
   in one matrix product; holder v's x-coordinate is its position in the round + 1) and sends
   each neighbour its pair of shares, AES-GCM-encrypted under a key agreed with that neighbour's
   c key (the server routes them, all at once, but cannot read them), plus commitments to both
   seeds. U2 = who sent shares.
2. **MaskedInput** – u sends y_u = x_u + PRG(b_u) + Σ_{v∈N(u)∩U2, u<v} PRG(s_uv)
   − Σ_{v∈N(u)∩U2, u>v} PRG(s_uv) mod 2^b, s_uv agreed from the s keys, packed to b bits a
   value and tagged with GMAC under a key u agreed with the server's round key. U3 = who sent a
   y_u whose tag verifies; a message altered on its way is left out and its sender named
   (``rejected``), so it is unmasked like a dropout instead of wrecking the sum.
3. **Unmasking** – the server tells each u ∈ U3 which of its neighbours survived (U3) and which
   dropped (U2 \\ U3). u answers once: the b-share of each survivor, the key-share of each
   dropout, never both for the same client. From t answers per client the server reconstructs
   b_v for every v ∈ U3 and the key seed of every dropout (all secrets at once, checked against
   the dealers' commitments; a failed check is retried with the spare shares, which names the
   holder that altered its share), removes the self-masks and the dropouts' pairwise masks, and
   obtains Σ_{u∈U3} x_u mod 2^b.

A client drops by sending nothing from some stage on (:class:`Stage`). When any secret that the
server needs has fewer than t answering holders the round aborts with
:class:`~fedbench.errors.AggregationError` and nothing is returned. Clients refuse requests that
would reveal both secrets of one client.

**A malicious server.** Where the protocol leaves the server a choice (which survivor set each
client is told, which signatures it forwards) the server asks its :class:`ServerPolicy`; the
base class is the honest server, :mod:`.adversary` holds deviating ones, and colluding clients
(``colluders``) hand the server every share they hold. Without the checks of the actively
secure variant a server that tells some of a target's neighbours that it dropped and the others
that it survived collects both of its secrets and unmasks its input. The checks
(:mod:`.checks`, off by default) stop that:

- signed advertisements (with ``model_consistency``: binding the hash of the model each client
  received, compared between neighbours in round 1);
- **ConsistencyCheck** (between rounds 2 and 3, with ``consistency``) – the server sends each
  u ∈ U3 the survivor set it claims; u signs it (Ed25519); the server forwards the signatures;
  u verifies them over its own set, needs a quorum of them, and from then on answers only an
  unmasking request that agrees with the set it signed. A client that sees disagreement
  refuses to unmask, and the round aborts with :class:`ConsistencyError` naming it.

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

import dataclasses
import hmac
import struct
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import numpy as np

from fedbench.defenses.secagg import keys, shamir
from fedbench.defenses.secagg.checks import (
    SIGNATURE_BYTES,
    Checks,
    Directory,
    SignatureBundle,
    SurvivorSet,
    SurvivorSignature,
    advertisement_message,
    invalid_signers,
    model_digest,
    survivors_message,
)
from fedbench.defenses.secagg.graph import Graph
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.ring import Ring
from fedbench.defenses.secagg.shamir import ReconstructionError, commit
from fedbench.errors import AggregationError, BadClientUpdate

ID_BYTES = 4  # a client id on the wire
SHARE_BYTES = shamir.share_bytes(keys.SEED_BYTES)  # one share of one 16-byte seed
# One neighbour's pair of shares (key seed, self-mask seed), sealed with AES-GCM.
CIPHERTEXT_BYTES = 2 * SHARE_BYTES + keys.TAG_BYTES
MAX_CLIENTS = shamir.MAX_HOLDERS  # a holder's x-coordinate is its position in the round + 1


class Stage(str, Enum):
    """The protocol's message rounds; a client that drops at a stage sends nothing from it on."""

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    # Runs only with the consistency check; without it, dropping here is dropping at unmasking.
    CONSISTENCY_CHECK = "consistency_check"
    UNMASKING = "unmasking"

    @property
    def order(self) -> int:
        """Position of the stage in a round (0 to 4)."""
        return list(Stage).index(self)


class ProtocolViolation(AggregationError):
    """A party received a message that the honest protocol never sends; the round aborts."""


class ConsistencyError(ProtocolViolation):
    """A client saw the server tell different clients different things (survivor sets, models,
    keys) and refuses to go on; the round aborts."""


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyAdvertisement:
    """Round 0, client → server: the client's two public keys; with the checks also its
    Ed25519 verifying key, the hash of the model it received and its signature of all that
    (empty fields without them, so they cost nothing)."""

    sender: int
    cipher_public: bytes
    mask_public: bytes
    verifying_key: bytes = b""
    model_hash: bytes = b""
    signature: bytes = b""

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return ID_BYTES + len(self.cipher_public) + len(self.mask_public) + self.check_nbytes

    @property
    def check_nbytes(self) -> int:
        """The bytes that only the checks add."""
        return len(self.verifying_key) + len(self.model_hash) + len(self.signature)

    def signed_message(self, round_index: int) -> bytes:
        """What the sender signs."""
        return advertisement_message(
            round_index, self.sender, self.cipher_public, self.mask_public, self.model_hash
        )


@dataclass(frozen=True)
class SharedKeys:
    """Round 1, client → server: one sealed pair of shares per neighbour, and seed commitments.

    Attributes:
        recipients: The neighbours, sorted; row i of ``ciphertexts`` is addressed to the i-th.
        ciphertexts: (neighbours, CIPHERTEXT_BYTES) uint8.
    """

    sender: int
    recipients: np.ndarray
    ciphertexts: np.ndarray
    key_commitment: bytes
    self_mask_commitment: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        routed = len(self.recipients) * (ID_BYTES + CIPHERTEXT_BYTES)
        return ID_BYTES + routed + len(self.key_commitment) + len(self.self_mask_commitment)


@dataclass(frozen=True)
class ShareInbox:
    """Round 1 → 2, server → client: the sealed shares other dealers addressed to the client."""

    senders: np.ndarray
    ciphertexts: np.ndarray

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return len(self.senders) * (ID_BYTES + CIPHERTEXT_BYTES)


@dataclass(frozen=True)
class MaskedInput:
    """Round 2, client → server: the masked vector y_u, bit-packed, and its GMAC tag.

    Attributes:
        payload: The wire form of y_u (:meth:`.ring.Ring.pack`: b bits a value).
        dim: The number of values packed.
        tag: GMAC of ``payload`` under the client's input key with the server.
    """

    sender: int
    payload: np.ndarray
    dim: int
    tag: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return ID_BYTES + int(self.payload.nbytes) + len(self.tag)


@dataclass(frozen=True)
class UnmaskingResponse:
    """Round 3, client → server: b-shares of surviving neighbours, key-shares of dropped ones.

    Attributes:
        self_mask_owners: The survivors whose self-mask seed shares follow, one row each.
        self_mask_shares: (survivors, SHARE_BYTES) uint8.
        key_owners: The dropped neighbours whose key-seed shares follow.
        key_shares: (dropped, SHARE_BYTES) uint8.
    """

    sender: int
    self_mask_owners: np.ndarray
    self_mask_shares: np.ndarray
    key_owners: np.ndarray
    key_shares: np.ndarray

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        count = len(self.self_mask_owners) + len(self.key_owners)
        return ID_BYTES + count * (ID_BYTES + SHARE_BYTES)


@dataclass(frozen=True)
class RoundSetup:
    """The public parameters of one round.

    Attributes:
        round_index: Bound into every derived key, so keys of different rounds never collide.
        ring: Z/2^b.
        graph: Who masks with whom.
        threshold: t, the number of a client's neighbours needed to reconstruct its secrets.
        checks: The checks against a malicious server that the round runs.
    """

    round_index: int
    ring: Ring
    graph: Graph
    threshold: int
    checks: Checks = field(default_factory=Checks)

    @property
    def where(self) -> str:
        """The prefix of every message about this round."""
        return f"round {self.round_index}"

    @cached_property
    def _members(self) -> np.ndarray:
        return np.asarray(self.graph.clients, dtype=np.int64)

    @cached_property
    def _position_table(self) -> tuple[int, np.ndarray] | None:
        """(smallest id, id − smallest id → position or −1) when the ids are compact (at most
        four table entries per member, plus 1,024), else None."""
        members = self._members
        if not members.size:
            return None
        low = int(members[0])
        span = int(members[-1]) - low + 1
        if span > 4 * members.size + 1024:
            return None
        table = np.full(span, -1, dtype=np.int64)
        table[members - low] = np.arange(members.size)
        return low, table

    def positions(self, clients: np.ndarray | Collection[int]) -> np.ndarray:
        """Each client's position in the round (its index among the sorted members), −1 for
        an id that is not a member. Compact ids are looked up in a table (one gather; a
        binary search per id costs twice that for the O(n²) shares of the complete graph)."""
        ids = np.asarray(clients, dtype=np.int64).reshape(-1)
        found = self._position_table
        if found is not None and ids.size:
            low, table = found
            if int(ids.min()) >= low and int(ids.max()) - low < table.size:
                return table[ids - low]
        members = self._members
        if not members.size:
            return np.full(ids.shape, -1, dtype=np.int64)
        position = np.searchsorted(members, ids).clip(max=members.size - 1)
        return np.where(members[position] == ids, position, -1)

    def x(self, clients: np.ndarray | Collection[int]) -> np.ndarray:
        """The public Shamir x-coordinate of each client: its position in the round + 1 (0
        for an id that is not a member, which no share may have)."""
        return self.positions(clients) + 1


def _label(setup: RoundSetup, kind: str, owner: int) -> bytes:
    return f"round {setup.round_index}: {kind} of client {owner}".encode()


def share_associated_data(setup: RoundSetup, sender: int, recipient: int) -> bytes:
    return struct.pack(">QQQ", setup.round_index, sender, recipient)


def _ids(values: Iterable[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64)


def _wire(payload: np.ndarray) -> memoryview:
    """The bytes of a (contiguous) wire array, as the MAC reads them."""
    return memoryview(np.ascontiguousarray(payload)).cast("B")  # type: ignore[arg-type]


# -- parties --------------------------------------------------------------------------------


class Client:
    """One client's side of the protocol. Its secrets never leave it except as shares.

    Args:
        client_id: The client.
        setup: The round's public parameters.
        graph_commitment: The server's commitment to the graph seed, received before the round.
        server_public: The server's X25519 key of the round, which authenticates masked inputs.
        directory: Where the verifying keys of the other clients are looked up (the PKI
            stand-in); needed when the round runs checks.
        model_hash: The hash of the model this client received (model-consistency check).
    """

    def __init__(
        self,
        client_id: int,
        setup: RoundSetup,
        graph_commitment: bytes,
        server_public: bytes,
        *,
        directory: Directory | None = None,
        model_hash: bytes = b"",
    ) -> None:
        self.id = client_id
        self.setup = setup
        self._where = f"{setup.where}: client {client_id}"
        self._graph_commitment = graph_commitment
        self._directory = directory or Directory()
        self._signing = keys.signing_key() if setup.checks.signs else None
        self._model_hash = model_hash if setup.checks.model_consistency else b""
        self._told: frozenset[int] | None = None  # the survivor set it signed
        self._consistent = False
        self._cipher_key = keys.private_key_from_seed(keys.random_seed())
        self._key_seed = keys.random_seed()
        self._mask_key = keys.private_key_from_seed(self._key_seed)
        self._self_mask_seed = keys.random_seed()
        self._input_key = keys.input_key(
            keys.shared_secret(self._cipher_key, server_public),
            round_index=setup.round_index, sender=client_id,
        )
        self._roster: dict[int, KeyAdvertisement] = {}
        self._pair_seeds: dict[int, bytes] = {}
        self._open_keys: dict[int, bytes] = {}  # the key of each neighbour's sealed shares
        self._inbox = ShareInbox(_ids(()), np.zeros((0, CIPHERTEXT_BYTES), dtype=np.uint8))
        self._answered = False
        self._masked = False

    def advertise_keys(self) -> KeyAdvertisement:
        """Round 0 (signed when the round runs checks)."""
        advert = KeyAdvertisement(
            self.id, keys.public_bytes(self._cipher_key), keys.public_bytes(self._mask_key)
        )
        if self._signing is None:
            return advert
        advert = dataclasses.replace(
            advert, verifying_key=keys.verifying_bytes(self._signing), model_hash=self._model_hash
        )
        signature = keys.sign(self._signing, advert.signed_message(self.setup.round_index))
        return dataclasses.replace(advert, signature=signature)

    def _check_signed_roster(self, roster: Mapping[int, KeyAdvertisement]) -> None:
        """Every forwarded advertisement must carry its sender's signature under the key the
        directory holds for it: the server can route keys, not replace them."""
        forged = sorted(
            v for v, advert in roster.items()
            if (public := self._directory.key(v)) is None
            or not keys.signature_valid(
                public, advert.signed_message(self.setup.round_index), advert.signature
            )
        )
        if forged:
            raise ConsistencyError(
                f"{self._where}: the forwarded key advertisements of clients {forged} do not "
                "carry their senders' signatures (keys or model hashes substituted); it aborts"
            )

    def _check_models(self, roster: Mapping[int, KeyAdvertisement]) -> None:
        """Model consistency: every neighbour must have signed the hash of the same model."""
        differ = {v: a.model_hash.hex() for v, a in sorted(roster.items())
                  if a.model_hash != self._model_hash}
        if differ:
            raise ConsistencyError(
                f"{self._where} received the model {self._model_hash.hex()} but its neighbours "
                f"{sorted(differ)} received different models ({differ}): the server sent "
                "different models to different clients; it aborts"
            )

    def _check_roster(self, graph: Graph, roster: Mapping[int, KeyAdvertisement]) -> None:
        setup = self.setup
        if graph.commitment != self._graph_commitment or graph != setup.graph:
            raise ProtocolViolation(
                f"round {setup.round_index}: client {self.id}: the revealed graph does not match "
                "the server's commitment"
            )
        strangers = sorted(set(roster) - graph.neighbours(self.id))
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
        if setup.checks.signs:
            self._check_signed_roster(roster)
        if setup.checks.model_consistency:
            self._check_models(roster)

    def share_keys(self, graph: Graph, roster: Mapping[int, KeyAdvertisement]) -> SharedKeys:
        """Round 1: check the revealed graph and the forwarded keys, then deal the shares of
        both seeds to every neighbour at once and seal each neighbour's pair."""
        self._check_roster(graph, roster)
        setup = self.setup
        self._roster = dict(roster)
        recipients = _ids(sorted(roster))
        shares = shamir.deal(
            [self._key_seed, self._self_mask_seed], threshold=setup.threshold,
            holders=setup.x(recipients),
        ).reshape(len(recipients), 2 * SHARE_BYTES)
        sealed = np.empty((len(recipients), CIPHERTEXT_BYTES), dtype=np.uint8)
        for row, v in enumerate(recipients.tolist()):
            secret = keys.shared_secret(self._cipher_key, roster[v].cipher_public)
            box, self._open_keys[v] = keys.share_keys(
                secret, round_index=setup.round_index, a=self.id, b=v
            )
            sealed[row] = np.frombuffer(
                keys.seal(box, shares[row].tobytes(), share_associated_data(setup, self.id, v)),
                dtype=np.uint8,
            )
            agreed = keys.shared_secret(self._mask_key, roster[v].mask_public)
            self._pair_seeds[v] = keys.mask_seed(
                agreed, round_index=setup.round_index, a=self.id, b=v
            )
        return SharedKeys(
            self.id,
            recipients,
            sealed,
            key_commitment=commit(self._key_seed, _label(setup, "key seed", self.id)),
            self_mask_commitment=commit(
                self._self_mask_seed, _label(setup, "self-mask seed", self.id)
            ),
        )

    def receive_shares(self, inbox: ShareInbox) -> None:
        """End of round 1: keep the sealed shares of the neighbours that dealt them."""
        strangers = sorted(set(inbox.senders.tolist()) - set(self._roster))
        if strangers:
            raise ProtocolViolation(
                f"round {self.setup.round_index}: client {self.id} received shares from "
                f"clients {strangers} whose keys it never got"
            )
        self._inbox = inbox

    @property
    def dealers(self) -> list[int]:
        """The neighbours whose shares this client holds (they mask with it)."""
        senders: list[int] = self._inbox.senders.tolist()
        return senders

    def masked_input(self, values: np.ndarray, masks: MaskGenerator) -> MaskedInput:
        """Round 2: y_u = x_u + PRG(b_u) ± PRG(s_uv) over the neighbours that dealt shares,
        packed to b bits a value and tagged for the server; once a round.

        Raises:
            ProtocolViolation: A second input this round. Under the same masks the difference
                of the two would be in the clear, and the input key would tag two messages.
        """
        if self._masked:
            raise ProtocolViolation(
                f"{self._where}: a client masks one input a round; a second one under the same "
                "masks would reveal the difference of the two to the server"
            )
        ring = self.setup.ring
        ring.check(values, self.id, values.shape[0] if values.ndim == 1 else -1)
        masked = np.array(values, dtype=ring.dtype, copy=True)
        dealers = self.dealers
        add = [self._self_mask_seed] + [self._pair_seeds[v] for v in dealers if self.id < v]
        subtract = [self._pair_seeds[v] for v in dealers if self.id > v]
        masks.apply(masked, add=add, subtract=subtract)
        payload = ring.pack(masked)
        self._masked = True
        return MaskedInput(self.id, payload, masked.size, keys.tag(self._input_key, _wire(payload)))

    # -- consistency check --------------------------------------------------------------------

    def sign_survivors(self, told: SurvivorSet) -> SurvivorSignature:
        """Consistency check, client side: sign the survivor set the server claims (once)."""
        if self._signing is None or not self.setup.checks.consistency:
            raise ProtocolViolation(f"{self._where}: the round runs no consistency check")
        if self._told is not None:
            raise ProtocolViolation(f"{self._where} was already told a survivor set")
        if self.id not in told.survivors:
            raise ConsistencyError(
                f"{self._where} sent its masked input but the server's survivor set leaves it "
                "out; it refuses to sign"
            )
        self._told = told.survivors
        message = survivors_message(self.setup.round_index, told.survivors)
        return SurvivorSignature(self.id, keys.sign(self._signing, message))

    def sign_any(self, survivors: frozenset[int]) -> SurvivorSignature:
        """A colluding client's extra signature, over whatever set the server asks (an honest
        client signs once, the set it was told); see :mod:`.adversary`."""
        if self._signing is None:
            raise ProtocolViolation(f"{self._where}: the round runs no consistency check")
        message = survivors_message(self.setup.round_index, survivors)
        return SurvivorSignature(self.id, keys.sign(self._signing, message))

    def check_signatures(self, bundle: SignatureBundle) -> None:
        """Consistency check: every forwarded signature must verify over the set this client
        signed, come from a member of it, and a quorum of them must arrive.

        Raises:
            ConsistencyError: The client saw disagreement; it will not unmask.
        """
        if self._told is None:
            raise ProtocolViolation(f"{self._where} received signatures before signing a set")
        told, quorum = self._told, self.setup.checks.quorum
        signers = bundle.signers.tolist()
        message = survivors_message(self.setup.round_index, told)
        bad = invalid_signers(self._directory, bundle, message)
        if bad:
            raise ConsistencyError(
                f"{self._where}: the signatures of clients {bad} do not verify over the survivor "
                f"set of {len(told)} clients it was told: the server told clients different "
                "survivor sets; it refuses to unmask"
            )
        outside = sorted(set(signers) - told)
        if outside or len(set(signers)) != len(signers):
            raise ConsistencyError(
                f"{self._where}: forwarded signatures from clients {outside or signers} that "
                "are not each a survivor once; it refuses to unmask"
            )
        if len(signers) < quorum:
            raise ConsistencyError(
                f"{self._where}: only {len(signers)} signatures on the survivor set it was "
                f"told, fewer than the quorum {quorum}: the server may be showing other clients "
                "another set; it refuses to unmask"
            )
        self._consistent = True

    def _check_against_signed(self, alive: set[int]) -> None:
        """With the consistency check, only a request that matches the signed set is answered."""
        if not self._consistent or self._told is None:
            raise ConsistencyError(
                f"{self._where} has not passed the consistency check; it refuses to unmask"
            )
        expected = set(self.dealers) & self._told
        if alive != expected:
            raise ConsistencyError(
                f"{self._where}: the unmasking request calls clients {sorted(alive ^ expected)} "
                "otherwise than the survivor set it signed; it refuses to unmask"
            )

    # -- unmasking ----------------------------------------------------------------------------

    def _check_request(self, alive: set[int], gone: set[int]) -> None:
        setup = self.setup
        where = f"round {setup.round_index}: client {self.id}"
        if self._answered:
            raise ProtocolViolation(f"{where} already answered an unmasking request")
        self._answered = True
        both = sorted(alive & gone)
        if both:
            raise ProtocolViolation(
                f"{where} was asked for both secrets of clients {both}; refusing"
            )
        if alive | gone != set(self.dealers):
            raise ProtocolViolation(
                f"{where}: the unmasking request lists {sorted(alive | gone)}, but the clients "
                f"that dealt it shares are {sorted(self.dealers)}"
            )
        if setup.checks.consistency:
            self._check_against_signed(alive)
        if len(alive) < setup.threshold:
            raise AggregationError(
                f"{where} refuses to unmask: only {len(alive)} of its neighbours sent masked "
                f"inputs, fewer than the threshold {setup.threshold}"
            )

    def _open(self, v: int, ciphertext: np.ndarray) -> np.ndarray:
        setup = self.setup
        try:
            plaintext = keys.open_sealed(
                self._open_keys[v], ciphertext.tobytes(), share_associated_data(setup, v, self.id)
            )
        except ValueError as err:
            raise AggregationError(
                f"round {setup.round_index}: client {self.id}: the shares from client {v}: {err}"
            ) from None
        return np.frombuffer(plaintext, dtype=np.uint8)

    def unmask(self, survivors: Collection[int], dropped: Collection[int]) -> UnmaskingResponse:
        """Round 3, answered once: b-shares of ``survivors``, key-shares of ``dropped``."""
        alive, gone = set(survivors), set(dropped)
        self._check_request(alive, gone)
        self_owners, self_rows, key_owners, key_rows = [], [], [], []
        for v, ciphertext in zip(self.dealers, self._inbox.ciphertexts, strict=True):
            pair = self._open(v, ciphertext)
            if v in alive:
                self_owners.append(v)
                self_rows.append(pair[SHARE_BYTES:])
            else:
                key_owners.append(v)
                key_rows.append(pair[:SHARE_BYTES])

        def rows(values: list[np.ndarray]) -> np.ndarray:
            return np.stack(values) if values else np.zeros((0, SHARE_BYTES), dtype=np.uint8)

        return UnmaskingResponse(
            self.id, _ids(self_owners), rows(self_rows), _ids(key_owners), rows(key_rows)
        )

    def reveal_shares(self) -> UnmaskingResponse:
        """What a client colluding with the server hands it: both shares of every dealer
        (never sent by an honest client; see :mod:`.adversary`)."""
        pairs = [self._open(v, c) for v, c in zip(self.dealers, self._inbox.ciphertexts,
                                                  strict=True)]
        owners = _ids(self.dealers)
        empty = np.zeros((0, SHARE_BYTES), dtype=np.uint8)
        key_rows = np.stack([p[:SHARE_BYTES] for p in pairs]) if pairs else empty
        self_rows = np.stack([p[SHARE_BYTES:] for p in pairs]) if pairs else empty
        return UnmaskingResponse(self.id, owners, self_rows, owners, key_rows)


@dataclass(frozen=True)
class _Holdings:
    """The shares of one kind of secret that arrived, sorted by owner, then x-coordinate."""

    owners: np.ndarray
    holders: np.ndarray
    xs: np.ndarray
    shares: np.ndarray

    def spans(self, owners: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(first row, number of rows) of each of ``owners`` (the rows are sorted by owner)."""
        wanted = _ids(owners)
        starts = np.searchsorted(self.owners, wanted, side="left")
        return starts, np.searchsorted(self.owners, wanted, side="right") - starts


class ServerPolicy:
    """The server's choices where the protocol leaves it one. This base class is the honest
    server; a malicious one (:mod:`.adversary`) overrides what it tells whom.

    Every method is given the :class:`Server` (whose state it may read: the keys, the dealt
    commitments, the masked inputs, ``colluders``).
    """

    def survivor_set(
        self, server: Server, client: int, survivors: frozenset[int]
    ) -> frozenset[int]:
        """The survivor set U3 that ``client`` is told (in the consistency check, and, unless
        :meth:`unmasking_survivors` says otherwise, in its unmasking request)."""
        return survivors

    def unmasking_survivors(
        self, server: Server, client: int, survivors: frozenset[int]
    ) -> frozenset[int]:
        """The survivors that ``client``'s unmasking request names (the rest of its dealing
        neighbours are named as dropped)."""
        return self.survivor_set(server, client, survivors)

    def forward_keys(
        self, server: Server, client: int, roster: Mapping[int, KeyAdvertisement]
    ) -> Mapping[int, KeyAdvertisement]:
        """The neighbours' key advertisements forwarded to ``client`` (round 0 → 1)."""
        return roster

    def forward_shares(self, server: Server, client: int, inbox: ShareInbox) -> ShareInbox:
        """The sealed shares forwarded to ``client`` (round 1 → 2)."""
        return inbox

    def forward_signatures(
        self,
        server: Server,
        client: int,
        signatures: Mapping[int, SurvivorSignature],
        told: Mapping[int, frozenset[int]],
    ) -> Mapping[int, SurvivorSignature]:
        """The consistency-check signatures forwarded to ``client`` (``told``: what each
        signer was told)."""
        return signatures

    def after_unmasking(
        self, server: Server, responses: Mapping[int, UnmaskingResponse], masks: MaskGenerator
    ) -> None:
        """Whatever the server does with what it holds after the unmasking round
        (``responses`` include the colluders' every share)."""


class Server:
    """The server's side: routes messages, sums masked inputs, reconstructs and unmasks.

    Args:
        setup: The round's public parameters.
        policy: What it tells whom where the protocol leaves a choice (honest by default).
        colluders: Clients that hand the server every share they hold.

    Attributes:
        public: The server's X25519 key of the round (clients agree their input keys with it).
        rejected: Clients whose masked input failed authentication, with the reason.
        altered: Holder → the owners whose share it altered (found with spare shares; the
            secrets were reconstructed from the others).
    """

    def __init__(
        self,
        setup: RoundSetup,
        *,
        policy: ServerPolicy | None = None,
        colluders: Collection[int] = (),
    ) -> None:
        self.setup = setup
        self.policy = policy or ServerPolicy()
        self.colluders = frozenset(colluders)
        self.accomplices: dict[int, Client] = {}  # the colluders themselves, set by the round
        self.inputs: dict[int, MaskedInput] = {}  # the authentic masked inputs
        self._key = keys.private_key_from_seed(keys.random_seed())
        self.public = keys.public_bytes(self._key)
        self.keys: dict[int, KeyAdvertisement] = {}
        self.dealt: dict[int, SharedKeys] = {}
        self._input_keys: dict[int, bytes] = {}
        self._mask_publics: dict[int, keys.X25519PublicKey] = {}
        self.senders: frozenset[int] = frozenset()
        self.rejected: dict[int, str] = {}
        self.altered: dict[int, list[int]] = {}
        self.revealed_self_masks: frozenset[int] = frozenset()
        self.revealed_keys: frozenset[int] = frozenset()

    @property
    def _where(self) -> str:
        return f"round {self.setup.round_index}"

    def route_keys(
        self, adverts: Mapping[int, KeyAdvertisement]
    ) -> dict[int, Mapping[int, KeyAdvertisement]]:
        """Round 0 → 1: each client gets the keys of its neighbours that advertised (U1); the
        server agrees each client's input-authentication key with its c key."""
        graph = self.setup.graph
        self.keys = dict(sorted(adverts.items()))
        self._mask_publics = {}
        self._input_keys = {
            u: keys.input_key(
                keys.shared_secret(self._key, advert.cipher_public),
                round_index=self.setup.round_index, sender=u,
            )
            for u, advert in self.keys.items()
        }
        rosters: dict[int, Mapping[int, KeyAdvertisement]] = {}
        table = self.keys
        for u in adverts:
            if graph.is_full and u in table:
                # Every other advertiser is a neighbour: a copy of the (sorted) table less u.
                roster = dict(table)
                del roster[u]
            else:
                roster = {v: table[v] for v in graph.sorted_neighbours(u) if v in table}
            # Each roster is built fresh for its client, so what the policy returns is not copied.
            rosters[u] = self.policy.forward_keys(self, u, roster)
        return rosters

    def mask_public(self, client: int) -> keys.X25519PublicKey:
        """``client``'s advertised mask key, parsed once per round (the server agrees with it
        once per dropped neighbour)."""
        parsed = self._mask_publics.get(client)
        if parsed is None:
            parsed = self._mask_publics[client] = keys.parse_public(self.keys[client].mask_public)
        return parsed

    def route_shares(self, dealt: Mapping[int, SharedKeys]) -> dict[int, ShareInbox]:
        """Round 1 → 2: each dealer (U2) gets the ciphertexts addressed to it by other dealers,
        routed for all dealers at once (a sort of the (recipient, sender) pairs)."""
        for u, message in dealt.items():
            count = len(message.recipients)
            if message.sender != u or message.ciphertexts.shape != (count, CIPHERTEXT_BYTES):
                raise ProtocolViolation(f"{self._where}: malformed ShareKeys message of client {u}")
        dealers = _ids(sorted(dealt))
        dealer_positions = self.setup.positions(dealers)
        if (dealer_positions < 0).any():
            stranger = int(dealers[np.argmin(dealer_positions)])
            raise ProtocolViolation(
                f"{self._where}: ShareKeys message of client {stranger}, which is not in the round"
            )
        self.dealt = dict(dealt)
        messages = [dealt[u] for u in dealers.tolist()]
        senders = np.repeat(dealers, [len(m.recipients) for m in messages])
        recipients = np.concatenate([_ids(()), *(m.recipients for m in messages)])
        rows = np.concatenate(
            [np.zeros((0, CIPHERTEXT_BYTES), dtype=np.uint8), *(m.ciphertexts for m in messages)]
        )
        # Keep the rows addressed to dealers; then a stable sort by recipient (positions fit 16
        # bits: a radix sort) orders them by (recipient, sender), the senders being ascending.
        dealing = np.zeros(len(self.setup.graph.clients) + 1, dtype=bool)  # [-1]: a stranger
        dealing[dealer_positions] = True
        position = self.setup.positions(recipients)
        keep = np.flatnonzero(dealing[position])
        order = keep[np.argsort(position[keep].astype(np.uint16), kind="stable")]
        # np.take copies whole rows (~3x faster here than fancy indexing of a 2-D array).
        senders, recipients, rows = senders[order], recipients[order], rows.take(order, axis=0)
        bounds = np.searchsorted(recipients, dealers, side="left").tolist()
        ends = np.searchsorted(recipients, dealers, side="right").tolist()
        return {
            v: self.policy.forward_shares(self, v, ShareInbox(senders[a:b], rows[a:b]))
            for v, a, b in zip(dealers.tolist(), bounds, ends, strict=True)
        }

    def _check_sender(self, u: int, message: MaskedInput) -> None:
        if message.sender != u or u not in self.dealt:
            raise ProtocolViolation(
                f"{self._where}: masked input from client {u}, which did not deal shares"
            )

    def _verifies(self, u: int, message: MaskedInput) -> bool:
        """Whether ``message``'s tag verifies under ``u``'s input key; a failure is recorded in
        ``rejected``."""
        if keys.verify(self._input_keys[u], _wire(message.payload), message.tag):
            return True
        self.rejected[u] = "masked input failed authentication (altered on its way)"
        return False

    def authentic(self, inputs: Mapping[int, MaskedInput]) -> list[MaskedInput]:
        """The masked inputs whose tags verify; the others are recorded in ``rejected``."""
        accepted: list[MaskedInput] = []
        for u, message in sorted(inputs.items()):
            self._check_sender(u, message)
            if self._verifies(u, message):
                accepted.append(message)
        return accepted

    def _check_shape(self, message: MaskedInput, dim: int) -> None:
        ring = self.setup.ring
        wire = ring.dtype if ring.wraps_natively else np.dtype(np.uint8)
        payload = message.payload
        if (message.dim != dim or payload.dtype != wire or payload.ndim != 1
                or payload.nbytes != ring.packed_nbytes(dim)):
            raise BadClientUpdate(
                message.sender,
                f"masked input of {message.dim} values in {payload.nbytes} bytes of "
                f"{payload.dtype}, expected {dim} values in {ring.packed_nbytes(dim)} bytes "
                f"of {wire}",
            )

    def sum_masked(self, inputs: Mapping[int, MaskedInput]) -> np.ndarray:
        """Round 2, the hot path: Σ y_u over the authentic masked inputs (storage-type wrap).

        A message whose tag fails is left out (its sender is then unmasked as a dropout) and
        named in ``rejected``. Each message is verified and then, if authentic and well formed,
        added at once, while the MAC pass has just brought it into the cache (one read of it
        from memory instead of two); no message is added before its tag verifies. A malformed
        authentic message raises before the server keeps anything (the partial sum is local).
        """
        if not inputs:
            raise AggregationError(f"{self._where}: no masked input arrived")
        self.rejected = {}
        ring = self.setup.ring
        total: np.ndarray | None = None
        accepted: list[MaskedInput] = []
        for u, message in sorted(inputs.items()):
            self._check_sender(u, message)
            if not self._verifies(u, message):
                continue
            dim = accepted[0].dim if accepted else message.dim
            self._check_shape(message, dim)
            values = ring.unpack(message.payload, dim)
            if total is None:
                total = np.array(values, copy=True)
            else:
                np.add(total, values, out=total)
            accepted.append(message)
        if total is None:
            raise AggregationError(
                f"{self._where}: no masked input passed authentication (rejected: clients "
                f"{sorted(self.rejected)})"
            )
        self.senders = frozenset(m.sender for m in accepted)
        self.inputs = {m.sender: m for m in accepted}
        return total

    def survivor_sets(self, survivors: Collection[int]) -> dict[int, SurvivorSet]:
        """Consistency check: the survivor set each survivor is told."""
        alive = frozenset(survivors)
        return {u: SurvivorSet(self.policy.survivor_set(self, u, alive)) for u in sorted(alive)}

    def route_signatures(
        self, signatures: Mapping[int, SurvivorSignature], told: Mapping[int, frozenset[int]]
    ) -> dict[int, SignatureBundle]:
        """Consistency check: the signatures forwarded to each signer."""
        for u, message in signatures.items():
            if message.sender != u or len(message.signature) != SIGNATURE_BYTES:
                raise ProtocolViolation(f"{self._where}: malformed signature of client {u}")
        return {
            u: SignatureBundle.of(self.policy.forward_signatures(self, u, signatures, told))
            for u in sorted(signatures)
        }

    def unmasking_requests(
        self, survivors: Collection[int]
    ) -> dict[int, tuple[frozenset[int], frozenset[int]]]:
        """Round 3 requests: for each survivor, its dealing neighbours that survived / dropped
        (as far as the policy tells it)."""
        alive = frozenset(survivors)
        dealers = frozenset(self.dealt)
        everyone = len(dealers) == len(self.setup.graph.clients)
        dropped = dealers - alive
        requests = {}
        for u in sorted(alive):
            mine = self.setup.graph.neighbours(u)
            if not everyone:
                mine = mine & dealers
            told = self.policy.unmasking_survivors(self, u, alive)
            # mine ⊆ dealers, so mine − told = mine ∩ (dealers − told): a set as small as the
            # dropouts instead of one as large as the neighbourhood, computed once for the
            # honest server's common survivor set.
            gone = mine & (dropped if told is alive else dealers - told)
            requests[u] = (mine - gone if gone else mine, gone)
        return requests

    def reconstruct_secret(
        self, kind: str, owner: int, responses: Mapping[int, UnmaskingResponse]
    ) -> bytes:
        """One secret (``kind``: "self-mask seed" or "key seed") of ``owner`` from every share
        of it in ``responses``, checked against its commitment.

        Raises:
            AggregationError: Fewer than t shares of it, or shares that do not reconstruct it.
        """
        return self._reconstruct(kind, [owner], self._holdings(responses, kind, [owner]))[owner]

    def pairwise_seeds(self, owner: int, key_seed: bytes) -> dict[int, bytes]:
        """The seeds of the masks ``owner`` shares with each dealing neighbour, from its key
        seed (and their public mask keys)."""
        private = keys.private_key_from_seed(key_seed)
        partners = sorted(self.setup.graph.neighbours(owner) & set(self.dealt))
        return {
            v: keys.mask_seed(
                keys.shared_secret(private, self.mask_public(v)),
                round_index=self.setup.round_index, a=owner, b=v,
            )
            for v in partners
        }

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

    def _holdings(
        self, responses: Mapping[int, UnmaskingResponse], kind: str, owners: list[int]
    ) -> _Holdings:
        """The shares of ``owners``' secrets of one kind that reconstruction reads: each
        owner's first t + 1 holders by x (t for the secret, one spare to name a bad holder).

        The holders of the first t + 2 responses (by x) are an initial segment, so when they
        hold t + 1 shares of every owner those are each owner's first t + 1 and the other
        responses are not read. In the complete graph they always do (every responder holds a
        share of every other dealer), which halves the O(n²) shares handled at n = 500;
        elsewhere, or when a holder lacks a share, every response is read.
        """
        enough = self.setup.threshold + 1
        if self.setup.graph.is_full and len(responses) > enough + 1:
            first = dict(sorted(responses.items())[: enough + 1])
            held = self._gather(first, kind)
            if (held.spans(owners)[1] >= enough).all():
                return held
        return self._gather(responses, kind)

    def _gather(self, responses: Mapping[int, UnmaskingResponse], kind: str) -> _Holdings:
        """Every share of one kind (``self-mask seed`` or ``key seed``) in the responses."""
        senders, owners, rows = [], [_ids(())], [np.zeros((0, SHARE_BYTES), np.uint8)]
        # Holders in x order, then a stable sort by owner: rows end up by (owner, x).
        for holder, response in sorted(responses.items()):
            mine, shares = (
                (response.self_mask_owners, response.self_mask_shares)
                if kind == "self-mask seed" else (response.key_owners, response.key_shares)
            )
            if response.sender != holder or shares.shape != (len(mine), SHARE_BYTES):
                raise ProtocolViolation(
                    f"{self._where}: the unmasking response of client {holder} is malformed"
                )
            senders.append(holder)
            owners.append(mine)
            rows.append(shares)
        counts = [len(mine) for mine in owners[1:]]
        owned = np.concatenate(owners).astype(np.int64, copy=False)
        held = np.repeat(_ids(senders), counts)
        held_xs = np.repeat(self.setup.x(senders), counts)
        position = self.setup.positions(owned)
        strangers = np.flatnonzero(position < 0)
        if strangers.size:
            raise ProtocolViolation(
                f"{self._where}: client {int(held[strangers[0]])} sent a share of the {kind} "
                f"of client {int(owned[strangers[0]])}, which is not in the round"
            )
        # Positions fit 16 bits (MAX_CLIENTS), for which numpy's stable sort is a radix sort;
        # sorted by position, the owners are sorted by id (the members are).
        order = np.argsort(position.astype(np.uint16), kind="stable")
        owned, held, xs = owned[order], held[order], held_xs[order]
        repeated = np.flatnonzero((owned[1:] == owned[:-1]) & (held[1:] == held[:-1]))
        if repeated.size:
            raise ProtocolViolation(
                f"{self._where}: client {int(held[repeated[0]])} sent two shares of the "
                f"{kind} of client {int(owned[repeated[0]])}"
            )
        return _Holdings(owned, held, xs, np.concatenate(rows).take(order, axis=0))

    def _commitment(self, kind: str, owner: int) -> bytes:
        dealt = self.dealt[owner]
        return dealt.self_mask_commitment if kind == "self-mask seed" else dealt.key_commitment

    def _reconstruct(self, kind: str, owners: list[int], held: _Holdings) -> dict[int, bytes]:
        """The ``kind`` secrets of ``owners``: all at once from each owner's first t holders
        (:func:`.shamir.reconstruct`), then each failed commitment retried with the spare
        share."""
        threshold = self.setup.threshold
        starts, counts = held.spans(owners)
        short = np.flatnonzero(counts < threshold)
        if short.size:
            raise AggregationError(
                f"{self._where}: only {int(counts[short[0]])} neighbours of client "
                f"{owners[short[0]]} answered the unmasking request, fewer than the threshold "
                f"{threshold}; the round aborts and nothing is returned"
            )
        if not owners:
            return {}
        rows = starts[:, None] + np.arange(threshold)
        # np.take copies whole rows (~3x faster than fancy indexing of a 2-D array).
        secrets = shamir.reconstruct(held.xs.take(rows), held.shares.take(rows, axis=0))
        out: dict[int, bytes] = {}
        for owner, secret, start, count in zip(owners, secrets, starts.tolist(),
                                               counts.tolist(), strict=True):
            if secret is None or not self._matches(kind, owner, secret):
                secret = self._recover(kind, owner, held, slice(start, start + count))
            out[owner] = secret
        return out

    def _matches(self, kind: str, owner: int, secret: bytes) -> bool:
        label = _label(self.setup, kind, owner)
        return hmac.compare_digest(commit(secret, label), self._commitment(kind, owner))

    def _recover(self, kind: str, owner: int, held: _Holdings, span: slice) -> bytes:
        """The secret from all its shares, naming the holder whose share was altered."""
        threshold = self.setup.threshold
        found = shamir.recover(
            held.xs[span], held.shares[span], threshold=threshold,
            matches=lambda secret: self._matches(kind, owner, secret),
        )
        ids = held.holders[span].tolist()
        if found.secret is None:
            why = (
                "there is no spare share to tell which holder altered its share"
                if len(ids) == threshold
                else f"more than one of the first {threshold + 1} holders altered its share"
            )
            raise ReconstructionError(
                f"{self._where}: the {kind} of client {owner} (dealer): the shares held by "
                f"clients {ids[: threshold + 1]} do not reconstruct the secret it committed to; "
                f"{why}; the round aborts"
            )
        for position in found.altered:
            self.altered.setdefault(ids[position], []).append(owner)
        return found.secret

    def reconstruct_seeds(
        self, survivors: Collection[int], responses: Mapping[int, UnmaskingResponse]
    ) -> tuple[dict[int, bytes], dict[int, bytes]]:
        """Shamir reconstruction of the round: (self-mask seed of each survivor, key seed of
        each dealer that dropped with a surviving neighbour), each checked against its
        commitment; holders proven to have altered a share are recorded in ``altered``."""
        graph = self.setup.graph
        alive = frozenset(survivors)
        dropped = sorted(v for v in self.dealt if v not in alive and graph.neighbours(v) & alive)
        self.altered = {}
        owners = sorted(alive)
        self_seeds = self._reconstruct(
            "self-mask seed", owners, self._holdings(responses, "self-mask seed", owners)
        )
        # Without a dropout no key seed is needed, and the key shares are not read at all.
        key_seeds = (
            self._reconstruct("key seed", dropped, self._holdings(responses, "key seed", dropped))
            if dropped else {}
        )
        return self_seeds, key_seeds

    def mask_seeds(
        self, survivors: Collection[int], responses: Mapping[int, UnmaskingResponse]
    ) -> tuple[list[bytes], list[bytes]]:
        """The seeds of the masks left in the sum of ``survivors``' inputs: (to add back, to
        subtract), from the survivors' unmasking ``responses``.

        Self-mask seeds are reconstructed for survivors only and key seeds for dropouts only,
        so the server never holds both secrets of one client.

        Raises:
            AggregationError: A needed secret has fewer than t shares in ``responses``.
            ReconstructionError: Shares do not reconstruct the committed secret and the spare
                shares cannot tell which holder altered its share.
        """
        setup = self.setup
        graph = setup.graph
        alive = frozenset(survivors)
        self_seeds, key_seeds = self.reconstruct_seeds(alive, responses)
        dropped = sorted(key_seeds)
        subtract = [self_seeds[u] for u in sorted(alive)]
        add: list[bytes] = []
        for v in dropped:
            private = keys.private_key_from_seed(key_seeds[v])
            for u in sorted(graph.neighbours(v) & alive):
                pair = keys.mask_seed(
                    keys.shared_secret(private, self.mask_public(u)),
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
        rejected: Clients whose masked input failed authentication (left out of the sum and
            unmasked as dropouts), with the reason.
        altered_shares: Holder → the clients whose share it altered; their secrets were
            reconstructed from the other holders' shares.
        check_bytes: Bytes (uploads and downloads of all clients) that each check added:
            "consistency_check" (signed advertisements and the check round) and
            "model_consistency" (the model hashes, and the advertisement signatures when the
            consistency check is off).
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: dict[int, Stage] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    download_bytes: dict[int, int] = field(default_factory=dict)
    revealed_self_masks: frozenset[int] = frozenset()
    revealed_keys: frozenset[int] = frozenset()
    rejected: dict[int, str] = field(default_factory=dict)
    altered_shares: dict[int, tuple[int, ...]] = field(default_factory=dict)
    check_bytes: dict[str, int] = field(default_factory=dict)


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
        checks: The checks against a malicious server (:class:`~.checks.Checks`; none by
            default).
        model_hashes: The hash of the model each client received (the Transcript's
            ``model_hashes``); required with the model-consistency check.
        server_policy: What the server tells whom (:class:`ServerPolicy`: honest by default).
        colluders: Clients that hand the server every share they hold.

    Raises:
        AggregationError: The round cannot even set up (a client has fewer than t neighbours
            with keys); :class:`ConsistencyError` when a check sees disagreement.

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
        checks: Checks | None = None,
        model_hashes: Mapping[int, str] | None = None,
        server_policy: ServerPolicy | None = None,
        colluders: Collection[int] = (),
    ) -> None:
        members = tuple(sorted(set(clients)))
        if members != graph.clients:
            raise ValueError("the graph's vertices must be exactly the round's clients")
        if len(members) > MAX_CLIENTS:
            raise AggregationError(
                f"round {round_index}: {len(members)} clients exceed the {MAX_CLIENTS} that the "
                "share field GF(65537) has x-coordinates for"
            )
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
        checks = checks or Checks()
        digests = _model_digests(checks, model_hashes, members)
        strangers = sorted(set(colluders) - set(members))
        if strangers:
            raise ValueError(f"colluders name clients {strangers} that are not in the round")
        self.setup = RoundSetup(round_index, ring, graph, threshold, checks)
        self.masks = masks or MaskGenerator(ring)
        self.server = Server(self.setup, policy=server_policy, colluders=colluders)
        self.directory = Directory()
        self.clients = {
            c: Client(c, self.setup, graph.commitment, self.server.public,
                      directory=self.directory, model_hash=digests.get(c, b""))
            for c in members
        }
        self.server.accomplices = {c: self.clients[c] for c in sorted(self.server.colluders)}
        self.upload: Counter[int] = Counter()
        self.download: Counter[int] = Counter()
        self.check_bytes: Counter[str] = Counter()
        self.refused: dict[int, str] = {}  # clients that saw disagreement, with what they saw
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
            self._count_advert_checks(advert)
            if advert.verifying_key:
                # The PKI stand-in: registered as the client sent it, before the server sees it.
                self.directory.register(c, advert.verifying_key)
        rosters = self.server.route_keys(adverts)
        # The graph seed and the server's round key come with the roster.
        seed_bytes = len(self.setup.graph.seed) + len(self.server.public)
        dealt: dict[int, SharedKeys] = {}
        for c in adverts:
            self.download[c] += seed_bytes + sum(a.nbytes for a in rosters[c].values())
            for advert in rosters[c].values():
                self._count_advert_checks(advert)
            if self.sends(c, Stage.SHARE_KEYS):
                dealt[c] = self.clients[c].share_keys(self.setup.graph, rosters[c])
                self.upload[c] += dealt[c].nbytes
        inboxes = self.server.route_shares(dealt)
        for c, inbox in inboxes.items():
            self.clients[c].receive_shares(inbox)
            self.download[c] += inbox.nbytes
        self._dealers = frozenset(dealt)

    def _count_advert_checks(self, advert: KeyAdvertisement) -> None:
        """Attribute an advertisement's check bytes (sent or forwarded) to the checks."""
        if not advert.check_nbytes:
            return
        hash_bytes = len(advert.model_hash)
        signing = advert.check_nbytes - hash_bytes
        self.check_bytes["model_consistency"] += hash_bytes
        owner = "consistency_check" if self.setup.checks.consistency else "model_consistency"
        self.check_bytes[owner] += signing

    def masked_input(self, client_id: int, values: np.ndarray) -> MaskedInput | None:
        """Client side of round 2; None when the client no longer takes part."""
        if client_id not in self._dealers or not self.sends(client_id, Stage.MASKED_INPUT):
            return None
        message = self.clients[client_id].masked_input(values, self.masks)
        self.upload[client_id] += message.nbytes
        return message

    def consistency_check(self, survivors: Collection[int]) -> None:
        """The consistency-check round: survivor sets out, signatures in and forwarded, each
        signer verifies. Clients that see disagreement are recorded in ``refused`` (they will
        not unmask); the others go on."""
        told = self.server.survivor_sets(survivors)
        signatures: dict[int, SurvivorSignature] = {}
        for u, survivor_set in told.items():
            self._count_check(u, down=survivor_set.nbytes)
            if not self.sends(u, Stage.CONSISTENCY_CHECK):
                continue
            try:
                signatures[u] = self.clients[u].sign_survivors(survivor_set)
            except ConsistencyError as err:
                self.refused[u] = str(err)
                continue
            self._count_check(u, up=signatures[u].nbytes)
        sets = {u: m.survivors for u, m in told.items()}
        for u, bundle in self.server.route_signatures(signatures, sets).items():
            self._count_check(u, down=bundle.nbytes)
            try:
                self.clients[u].check_signatures(bundle)
            except ConsistencyError as err:
                self.refused[u] = str(err)

    def _count_check(self, client: int, *, up: int = 0, down: int = 0) -> None:
        self.upload[client] += up
        self.download[client] += down
        self.check_bytes["consistency_check"] += up + down

    def unmasking_responses(self, survivors: Collection[int]) -> dict[int, UnmaskingResponse]:
        """Round 3 on the clients' side: each survivor still online, and not refusing after the
        consistency check, answers once (a request that contradicts what it signed is refused
        and recorded in ``refused``)."""
        responses = {}
        for u, (alive, gone) in self.server.unmasking_requests(survivors).items():
            self.download[u] += ID_BYTES * (len(alive) + len(gone))
            if not self.sends(u, Stage.UNMASKING) or u in self.refused:
                continue
            try:
                responses[u] = self.clients[u].unmask(alive, gone)
            except ConsistencyError as err:
                self.refused[u] = str(err)
                continue
            self.upload[u] += responses[u].nbytes
        return responses

    def server_view(
        self, responses: Mapping[int, UnmaskingResponse]
    ) -> dict[int, UnmaskingResponse]:
        """The shares the server holds after unmasking: the answers, and from each colluder
        that holds shares every share it holds (instead of its honest answer)."""
        view = dict(responses)
        for c in sorted(self.server.colluders & self._dealers):
            view[c] = self.clients[c].reveal_shares()
        return view

    def _refusal(self) -> ConsistencyError:
        first = min(self.refused)
        return ConsistencyError(
            f"{self.setup.where}: the consistency check failed: clients {sorted(self.refused)} "
            f"saw disagreement and refused to unmask; nothing is returned (first: "
            f"{self.refused[first]})"
        )

    def aggregate(self, inputs: Mapping[int, MaskedInput]) -> SumResult:
        """Rounds 2–3 on the server: sum, unmask, and return Σ x_u over the senders.

        Raises:
            AggregationError: No input arrived, or a needed secret has fewer than t answering
                holders, or shares fail their commitment with no spare share to tell which was
                altered. Nothing is returned.
        """
        total = self.server.sum_masked(inputs)
        survivors = self.server.senders
        if self.setup.checks.consistency:
            self.consistency_check(survivors)
        responses = self.unmasking_responses(survivors)
        # A deviating server acts on what it got, whether or not honest clients refused.
        self.server.policy.after_unmasking(self.server, self.server_view(responses), self.masks)
        if self.refused:
            raise self._refusal()
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
            rejected=dict(self.server.rejected),
            altered_shares={h: tuple(o) for h, o in sorted(self.server.altered.items())},
            check_bytes=dict(self.check_bytes),
        )


def _model_digests(
    checks: Checks, model_hashes: Mapping[int, str] | None, members: tuple[int, ...]
) -> dict[int, bytes]:
    """Each client's model hash on the wire, when the model-consistency check runs."""
    if not checks.model_consistency:
        return {}
    missing = sorted(set(members) - set(model_hashes or {}))
    if missing:
        raise ValueError(
            f"the model-consistency check needs the model hash of every client; clients "
            f"{missing} have none"
        )
    assert model_hashes is not None
    return {c: model_digest(model_hashes[c]) for c in members}


def secure_sum(
    inputs: Mapping[int, np.ndarray],
    *,
    ring: Ring,
    graph: Graph,
    threshold: int,
    round_index: int = 0,
    dropouts: Mapping[int, Stage] | None = None,
    masks: MaskGenerator | None = None,
    checks: Checks | None = None,
    model_hashes: Mapping[int, str] | None = None,
    server_policy: ServerPolicy | None = None,
    colluders: Collection[int] = (),
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
        checks: The checks against a malicious server.
        model_hashes: Each client's model hash (model-consistency check).
        server_policy: What the server tells whom.
        colluders: Clients that hand the server every share they hold.

    Raises:
        AggregationError: Too many dropouts (or tampering): the round aborts;
            :class:`ConsistencyError` when a check sees disagreement.
    """
    rnd = SecAggRound(
        inputs, ring=ring, graph=graph, threshold=threshold, round_index=round_index,
        dropouts=dropouts, masks=masks, checks=checks, model_hashes=model_hashes,
        server_policy=server_policy, colluders=colluders,
    )
    sent = {}
    for c, values in inputs.items():
        message = rnd.masked_input(c, values)
        if message is not None:
            sent[c] = message
    return rnd.aggregate(sent)
