"""The checks of the actively secure protocol: signed key advertisements, the model-consistency
check and the consistency-check round (Bonawitz et al., CCS 2017, the malicious-server variant).

Without them a malicious server can tell different clients different stories: that a target
dropped (so they reveal its key-seed share) and that it survived (so they reveal its self-mask
share), or send different models to different clients. The checks make each story a signed
statement that other honest clients verify:

- **Signed advertisements.** Each client signs its AdvertiseKeys message (round, id, both X25519
  keys, and with the model-consistency check the hash of the model it received) with an Ed25519
  key; a neighbour that receives the forwarded advertisement verifies it, so the server can
  neither substitute keys (and read the shares in transit) nor rewrite the model hash.
- **Model consistency.** Each client compares the model hashes its neighbours signed with its
  own and aborts on any difference: a server that sent different models aborts the round. With
  SecAgg+ a client sees only its neighbours, but the graph is connected, so two different models
  always meet across some edge.
- **Consistency check.** After the masked inputs, the server tells each survivor the survivor
  set U3; the client signs the set it was told; the server forwards the signatures and every
  client verifies all of them over its own set (a signature over a different set does not
  verify) and needs :func:`signature_quorum` of them. Only then does it answer the unmasking
  request, and only a request that agrees with the set it signed. Every client verifies the
  signatures of all signers, in SecAgg+ too: checking only neighbours' would let a server split
  non-adjacent holders of one client's shares into two groups, each consistent within itself.

The signing keys are advertised in AdvertiseKeys. Bonawitz et al. assume a PKI that binds each
client to its key; a real PKI is out of scope here. :class:`Directory` stands in for it: the
round registers each client's key as the client itself produced it, before the server handles
the message, so the server can forward keys but not substitute them.

Example:
    >>> signature_quorum(10, corrupt=1)
    6
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedbench.defenses.secagg import keys

ID_BYTES = 4  # a client id on the wire (as in the protocol's messages)
SIGNATURE_BYTES = keys.SIGNATURE_BYTES
VERIFYING_KEY_BYTES = keys.PUBLIC_KEY_BYTES


@dataclass(frozen=True)
class Checks:
    """Which checks against a malicious server a round runs.

    Attributes:
        consistency: The consistency-check round (signed survivor sets), and signed
            advertisements.
        model_consistency: Clients bind the hash of the model they received into their signed
            advertisement and abort when a neighbour's differs.
        quorum: Signatures on one survivor set a client needs before it unmasks (consistency
            check); see :func:`signature_quorum`.
    """

    consistency: bool = False
    model_consistency: bool = False
    quorum: int = 0

    @property
    def signs(self) -> bool:
        """Whether clients sign their advertisements (either check needs it)."""
        return self.consistency or self.model_consistency


def signature_quorum(clients: int, *, corrupt: int = 0) -> int:
    """The fewest signatures on one survivor set that a client accepts: more than (n + c)/2.

    Honest clients sign one set each, so two groups told different sets have disjoint honest
    signers; colluding clients (c of them) may sign both. With more than (n + c)/2 signatures
    needed, 2·(quorum − c) > n − c: two groups can never both reach the quorum, whatever the
    server forwards to whom. Counted over the round's n clients (public), not over the set the
    server reports, which it could shrink.
    """
    if clients < 1 or corrupt < 0:
        raise ValueError(f"need clients >= 1 and corrupt >= 0, got {clients}, {corrupt}")
    return (clients + corrupt) // 2 + 1


def model_digest(model_hash: str) -> bytes:
    """The wire form of a model hash: the bytes of a hex digest (the Transcript's
    ``model_hash``), or the UTF-8 bytes of any other string."""
    try:
        return bytes.fromhex(model_hash)
    except ValueError:
        return model_hash.encode()


class Directory:
    """Client → Ed25519 verifying key: the stand-in for a PKI (see the module docstring)."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}

    def register(self, client: int, verifying_key: bytes) -> None:
        """Bind ``client`` to its key; a client is registered once per round."""
        if client in self._keys:
            raise ValueError(f"client {client} is already registered")
        self._keys[client] = verifying_key

    def key(self, client: int) -> bytes | None:
        """The key registered for ``client``, None if it never registered."""
        return self._keys.get(client)


# -- what is signed ---------------------------------------------------------------------------


def advertisement_message(
    round_index: int, sender: int, cipher_public: bytes, mask_public: bytes, model_hash: bytes
) -> bytes:
    """The bytes a client signs in AdvertiseKeys (domain-separated, length-prefixed)."""
    head = b"fedbench/secagg/advertise-keys" + struct.pack(">QQ", round_index, sender)
    body = b"".join(struct.pack(">H", len(part)) + part
                    for part in (cipher_public, mask_public, model_hash))
    return head + body


def survivors_message(round_index: int, survivors: Collection[int]) -> bytes:
    """The bytes a client signs in the consistency check: the round and the sorted U3."""
    ids = sorted(survivors)
    return (b"fedbench/secagg/consistency-check" + struct.pack(">QQ", round_index, len(ids))
            + struct.pack(f">{len(ids)}Q", *ids))


# -- the consistency-check messages -------------------------------------------------------------


@dataclass(frozen=True)
class SurvivorSet:
    """Consistency check, server → client: the survivor set U3 the client is told."""

    survivors: frozenset[int]

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return ID_BYTES * len(self.survivors)


@dataclass(frozen=True)
class SurvivorSignature:
    """Consistency check, client → server: the client's signature of the set it was told."""

    sender: int
    signature: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire (the set itself is the server's, so it is not sent back)."""
        return ID_BYTES + len(self.signature)


@dataclass(frozen=True)
class SignatureBundle:
    """Consistency check, server → client: the signatures the server forwards.

    Attributes:
        signers: The signers, sorted; row i of ``signatures`` is the i-th signer's.
        signatures: (signers, SIGNATURE_BYTES) uint8.
    """

    signers: np.ndarray
    signatures: np.ndarray

    @classmethod
    def of(cls, signatures: Mapping[int, SurvivorSignature]) -> SignatureBundle:
        """The bundle of ``signatures`` (signer → its message)."""
        signers = sorted(signatures)
        rows = [np.frombuffer(signatures[v].signature, dtype=np.uint8) for v in signers]
        stacked = np.stack(rows) if rows else np.zeros((0, SIGNATURE_BYTES), dtype=np.uint8)
        return cls(np.asarray(signers, dtype=np.int64), stacked)

    @property
    def nbytes(self) -> int:
        """Size on the wire."""
        return len(self.signers) * (ID_BYTES + SIGNATURE_BYTES)


def invalid_signers(directory: Directory, bundle: SignatureBundle, message: bytes) -> list[int]:
    """The signers in ``bundle`` whose signature does not verify over ``message`` under their
    registered key (or who have no registered key)."""
    bad = []
    for signer, signature in zip(bundle.signers.tolist(), bundle.signatures, strict=True):
        public = directory.key(signer)
        if public is None or not keys.signature_valid(public, message, signature.tobytes()):
            bad.append(signer)
    return bad
