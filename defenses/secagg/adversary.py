"""Active adversaries against the protocol: a deviating server and colluding clients.

Both are real participants: a :class:`~.protocol.ServerPolicy` is what the round's server asks
whenever the protocol leaves it a choice, and colluders are clients of the round that hand the
server every share they hold (``SecAggRound(colluders=...)``).

- :class:`CoalitionServer` follows the protocol and, after unmasking, tries to unmask each
  target's *individual* input from what it holds: its self-mask seed b from t self-mask shares
  and its key seed from t key-seed shares. An honest client gives one of the two per neighbour,
  so only colluders' extra shares can complete the second: with fewer than t colluding
  neighbours the server learns nothing beyond the sum (:attr:`CoalitionServer.failures` says
  why), with t it learns the input exactly.
- :class:`SplitViewServer` is the protocol deviation of Bonawitz et al.'s malicious server: it
  tells some of the target's neighbours that the target dropped (they answer with its key-seed
  share) and the others that it survived (its self-mask share). Without the consistency check,
  t of each unmask it: x = y − PRG(b) ∓ the pairwise masks from the key seed. With the check,
  honest clients see the disagreement and refuse (:class:`~.protocol.ConsistencyError`).
- :func:`colluders_view` is what k colluding clients hold by themselves, and
  :meth:`CollusionView.honest_sum` what they learn from the sum: the honest clients' total.

Example:
    >>> import numpy as np
    >>> from fedbench.defenses.secagg.graph import Graph
    >>> from fedbench.defenses.secagg.protocol import secure_sum
    >>> from fedbench.defenses.secagg.ring import Ring
    >>> ring = Ring(16)
    >>> inputs = {c: np.full(2, c + 1, dtype=ring.dtype) for c in range(6)}
    >>> server = SplitViewServer(target=0)
    >>> _ = secure_sum(inputs, ring=ring, graph=Graph.full(range(6)), threshold=2,
    ...                server_policy=server)
    >>> server.recovered[0].tolist()
    [1, 1]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedbench.defenses.secagg import keys
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import (
    SHARE_BYTES,
    KeyAdvertisement,
    SecAggRound,
    Server,
    ServerPolicy,
    ShareInbox,
    SurvivorSignature,
    UnmaskingResponse,
    share_associated_data,
)
from fedbench.defenses.secagg.ring import Ring
from fedbench.errors import AggregationError

SELF_MASK = "self-mask seed"
KEY_SEED = "key seed"


def unmask_input(
    server: Server, owner: int, self_mask_seed: bytes, key_seed: bytes, masks: MaskGenerator
) -> np.ndarray:
    """x_owner from its masked input: y − PRG(b) − Σ_{v>owner} PRG(s) + Σ_{v<owner} PRG(s),
    the pairwise seeds recomputed from the owner's key seed (a new ring vector)."""
    message = server.inputs[owner]
    x = np.array(server.setup.ring.unpack(message.payload, message.dim), copy=True)
    pairs = server.pairwise_seeds(owner, key_seed)
    # The owner added PRG(s_uv) for partners above it and subtracted it below: undo both.
    masks.apply(
        x,
        add=[seed for v, seed in pairs.items() if v < owner],
        subtract=[self_mask_seed, *(seed for v, seed in pairs.items() if v > owner)],
    )
    return x


class CoalitionServer(ServerPolicy):
    """A server that follows the protocol, helped by colluding clients, and then tries to
    unmask each target's individual input.

    Args:
        targets: The clients to unmask; None: every survivor that does not collude.

    Attributes:
        recovered: Target → its input (ring vector), for each target that was unmasked.
        failures: Target → why it could not be unmasked (too few shares of a secret).
    """

    def __init__(self, targets: Collection[int] | None = None) -> None:
        self.targets = None if targets is None else frozenset(targets)
        self.recovered: dict[int, np.ndarray] = {}
        self.failures: dict[int, str] = {}

    def _targets(self, server: Server) -> list[int]:
        chosen = self.targets if self.targets is not None else server.senders - server.colluders
        return sorted(chosen)

    def after_unmasking(
        self, server: Server, responses: Mapping[int, UnmaskingResponse], masks: MaskGenerator
    ) -> None:
        for owner in self._targets(server):
            if owner not in server.inputs:
                self.failures[owner] = f"client {owner} sent no authentic masked input"
                continue
            secrets = {}
            for kind in (SELF_MASK, KEY_SEED):
                try:
                    secrets[kind] = server.reconstruct_secret(kind, owner, responses)
                except AggregationError as err:
                    self.failures[owner] = f"its {kind}: {err}"
                    break
            else:
                self.recovered[owner] = unmask_input(
                    server, owner, secrets[SELF_MASK], secrets[KEY_SEED], masks
                )


class SplitViewServer(CoalitionServer):
    """The SecAgg protocol deviation: tell ``key_holders`` of the target's neighbours that it
    dropped, and every other client that it survived.

    Args:
        target: The client whose input the server wants.
        key_holders: The neighbours told that the target dropped; None picks the fewest that
            complete t key-seed shares together with the colluders' (the first by id), so that
            as many as possible are left to give self-mask shares, and none when the rest
            cannot give t of those (the lie would only abort the round).
        forward: "matching" forwards to each client only the consistency-check signatures of
            clients told the same survivor set, and the colluders' signatures on that client's
            set (they sign both: the best a server can do to pass the check); "all" forwards
            every signature as it came.
    """

    def __init__(
        self,
        target: int,
        *,
        key_holders: Collection[int] | None = None,
        forward: str = "matching",
    ) -> None:
        super().__init__(targets=(target,))
        if forward not in ("matching", "all"):
            raise ValueError(f"forward must be 'matching' or 'all', got {forward!r}")
        self.target = target
        self.forward = forward
        self._key_holders = None if key_holders is None else frozenset(key_holders)

    def key_holders(self, server: Server, survivors: frozenset[int]) -> frozenset[int]:
        """The neighbours told that the target dropped."""
        if self._key_holders is not None:
            return self._key_holders
        threshold = server.setup.threshold
        neighbours = server.setup.graph.neighbours(self.target) & set(server.dealt)
        colluding = len(neighbours & server.colluders)
        needed = max(0, threshold - colluding)
        honest = sorted((neighbours & survivors) - server.colluders)
        if len(neighbours & survivors) - needed < threshold:
            # Too few holders for t of each: lying would only abort the round and expose the
            # server, so it stays honest (and fails to unmask the target).
            return frozenset()
        return frozenset(honest[:needed])

    def survivor_set(
        self, server: Server, client: int, survivors: frozenset[int]
    ) -> frozenset[int]:
        if self.target in survivors and client in self.key_holders(server, survivors):
            return survivors - {self.target}
        return survivors

    def forward_signatures(
        self,
        server: Server,
        client: int,
        signatures: Mapping[int, SurvivorSignature],
        told: Mapping[int, frozenset[int]],
    ) -> Mapping[int, SurvivorSignature]:
        if self.forward == "all":
            return signatures
        mine = told[client]
        chosen = {v: s for v, s in signatures.items() if told[v] == mine}
        # Colluders sign whatever set helps: each group gets their signatures on its own set.
        for c, accomplice in server.accomplices.items():
            if c in signatures and c not in chosen:
                chosen[c] = accomplice.sign_any(mine)
        return chosen


class KeySwapServer(CoalitionServer):
    """A man in the middle of the key agreement: the server forwards its own public key as
    every neighbour's encryption key to the target, and as the target's to each neighbour.

    The target then seals its shares of both secrets (its key seed and its self-mask seed)
    for keys the server holds: the server opens each of them, re-seals it for the real
    recipient (so nobody notices), and after the round reconstructs both secrets from t of
    them and unmasks the target's input, with no colluder at all. Only signed advertisements
    stop it (a PKI: each client checks every forwarded key against its sender's signature,
    on with the consistency or the model-consistency check): the substituted keys carry no
    valid signature, and the target refuses the round before dealing a share.

    Args:
        target: The client whose input the server wants.
    """

    def __init__(self, target: int) -> None:
        super().__init__(targets=(target,))
        self.target = target
        self._fakes: dict[int, X25519PrivateKey] = {}  # neighbour → the key posing between
        self.intercepted: dict[int, np.ndarray] = {}  # neighbour → the target's pair for it

    def _fake(self, neighbour: int) -> X25519PrivateKey:
        if neighbour not in self._fakes:
            self._fakes[neighbour] = keys.private_key_from_seed(keys.random_seed())
        return self._fakes[neighbour]

    def _posing(self, advert: KeyAdvertisement, neighbour: int) -> KeyAdvertisement:
        """``advert`` with its encryption key replaced by the one posing for ``neighbour``
        (signature unchanged: the server cannot forge it)."""
        return replace(advert, cipher_public=keys.public_bytes(self._fake(neighbour)))

    def forward_keys(
        self, server: Server, client: int, roster: Mapping[int, KeyAdvertisement]
    ) -> Mapping[int, KeyAdvertisement]:
        if client == self.target:
            return {v: self._posing(advert, v) for v, advert in roster.items()}
        if self.target in roster:
            return {**roster, self.target: self._posing(roster[self.target], client)}
        return roster

    def forward_shares(self, server: Server, client: int, inbox: ShareInbox) -> ShareInbox:
        rows = np.array(inbox.ciphertexts, copy=True)
        for row, sender in enumerate(inbox.senders.tolist()):
            if client == self.target:
                neighbour = sender  # a neighbour's shares, sealed for the posing key
            elif sender == self.target:
                neighbour = client  # the target's shares, sealed for the posing key
            else:
                continue
            pair = self._reseal(server, rows, row, sender=sender, recipient=client,
                                neighbour=neighbour)
            if sender == self.target:
                self.intercepted[client] = pair
        return ShareInbox(inbox.senders, rows)

    def _reseal(
        self, server: Server, rows: np.ndarray, row: int, *, sender: int, recipient: int,
        neighbour: int,
    ) -> np.ndarray:
        """Open one sealed pair of shares with the posing key and seal it again for its real
        recipient, in place; returns the pair."""
        setup = server.setup
        fake = self._fake(neighbour)
        associated = share_associated_data(setup, sender, recipient)

        def box(peer: int) -> bytes:
            secret = keys.shared_secret(fake, server.keys[peer].cipher_public)
            return keys.share_keys(secret, round_index=setup.round_index, a=sender,
                                   b=recipient)[0]

        plaintext = keys.open_sealed(box(sender), rows[row].tobytes(), associated)
        rows[row] = np.frombuffer(keys.seal(box(recipient), plaintext, associated),
                                  dtype=np.uint8)
        return np.frombuffer(plaintext, dtype=np.uint8)

    def after_unmasking(
        self, server: Server, responses: Mapping[int, UnmaskingResponse], masks: MaskGenerator
    ) -> None:
        owner = np.array([self.target], dtype=np.int64)
        held = {
            v: UnmaskingResponse(v, owner, pair[SHARE_BYTES:][None], owner,
                                 pair[:SHARE_BYTES][None])
            for v, pair in self.intercepted.items()
        }
        # What it intercepted replaces the honest responses: no colluder helps.
        super().after_unmasking(server, held, masks)


@dataclass(frozen=True)
class CollusionView:
    """What k colluding clients hold together.

    Attributes:
        members: The colluders.
        inputs: Their own encoded inputs.
        shares: Each colluder's shares of every dealing neighbour, both kinds (what they would
            hand the server).
    """

    members: frozenset[int]
    inputs: dict[int, np.ndarray]
    shares: dict[int, UnmaskingResponse]

    def honest_sum(self, total: np.ndarray, ring: Ring) -> np.ndarray:
        """Σ over the other contributors: the round's sum minus the colluders' own inputs
        (what they learn from the sum; the last honest client's input when n − 1 collude)."""
        rest = np.array(total, dtype=ring.dtype, copy=True)
        for values in self.inputs.values():
            np.subtract(rest, values.astype(ring.dtype, copy=False), out=rest)
        return ring.reduce(rest)

    def shares_of(self, owner: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(holders, shares) of ``owner``'s ``kind`` secret ("self-mask seed" or "key seed")
        among the colluders, sorted by holder."""
        holders, rows = [], []
        for holder, response in sorted(self.shares.items()):
            owners, shares = (
                (response.self_mask_owners, response.self_mask_shares)
                if kind == SELF_MASK else (response.key_owners, response.key_shares)
            )
            hit = np.flatnonzero(owners == owner)
            if hit.size:
                holders.append(holder)
                rows.append(shares[int(hit[0])])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.uint8)
        return np.asarray(holders, dtype=np.int64), np.stack(rows)


def colluders_view(
    rnd: SecAggRound, colluders: Collection[int], inputs: Mapping[int, np.ndarray]
) -> CollusionView:
    """What the clients ``colluders`` of ``rnd`` hold together, after the key rounds.

    Args:
        rnd: The round (its key rounds have run).
        colluders: The colluding clients.
        inputs: Every client's encoded input; only the colluders' are kept.
    """
    members = frozenset(colluders)
    strangers = sorted(members - set(rnd.clients))
    if strangers:
        raise ValueError(f"colluders {strangers} are not clients of the round")
    return CollusionView(
        members=members,
        inputs={c: np.asarray(inputs[c]) for c in sorted(members)},
        shares={c: rnd.clients[c].reveal_shares() for c in sorted(members)},
    )
