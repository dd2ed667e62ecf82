"""The channels of the aggregation benchmark, each built into a :class:`Case` at one size.

Ours: ``plaintext`` (``PlaintextChannel``), ``secagg`` and ``secagg+`` (pairwise masks, with
dropouts), ``paillier-packed``, ``paillier-per-value`` and ``ckks``. Peers on the same data:
``phe-per-value`` (phe's own ``EncryptedNumber``: ``public_key.encrypt(int)`` per quantized value,
``+`` over ciphertexts read back from fixed-width bytes) and ``tenseal-loop`` (a bare TenSEAL
loop: ``ckks_vector`` per slot-sized chunk, ``ckks_vector_from`` + ``+=``, ``decrypt``).

The HE cases build their n messages from ``DISTINCT`` real encryptions, repeated: the server's
work per message (parse, deserialize, one modular multiplication or ciphertext addition per
ciphertext) does not depend on the contents, and encrypting 100 distinct 10^6-value updates with
Paillier would take over an hour. Messages are immutable bytes and every call deserializes them
afresh, so no state carries over between rounds. Plaintext and SecAgg messages are all distinct.

A new channel joins the suite with a builder and an entry in ``CHANNELS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts
from aggregation_support import (
    SMOKE,
    Case,
    best_seconds,
    client_update,
    plaintext_vectors,
    replayed_masked_input,
)
from phe import paillier as phe_paillier

from fedbench.defenses.he import packing
from fedbench.defenses.he.ckks import PRESETS, CKKSKeys
from fedbench.defenses.he.ckks_channel import CKKSChannel
from fedbench.defenses.he.paillier import PaillierKeys
from fedbench.defenses.he.paillier_channel import PaillierChannel
from fedbench.defenses.secagg.encoding import FloatQuantizer, required_bits
from fedbench.defenses.secagg.graph import Graph, choose_degree, full_threshold
from fedbench.defenses.secagg.prg import MaskGenerator
from fedbench.defenses.secagg.protocol import SecAggRound, Stage, UnmaskingResponse
from fedbench.fl.channel import EncodedUpdate, PlaintextChannel
from fedbench.fl.context import RoundContext
from fedbench.seeding import Streams

ENCODE, AGGREGATE = "client_encode", "server_aggregate"
SERVER_DECODE, CLIENT_DECODE = "server_decode", "client_decode"
TOLERATED = 0.1  # SecAgg+'s design fractions (dropout and corruption)
KEY_BITS = 2048
DISTINCT = 2  # real encryptions behind the n messages of an HE case
PHE_SAMPLE = 32 if SMOKE else 200  # values per client for phe's per-value cost (it is linear)
POOLED_MAX_DIM = 100_000  # packed Paillier sizes at which the pooled (online) encode is timed


class Keys:
    """Keys and phe's per-value costs, made once per session."""

    def __init__(self) -> None:
        self._paillier: PaillierKeys | None = None
        self._ckks: CKKSKeys | None = None
        self._phe: dict[tuple[int, str], float] = {}

    @property
    def paillier(self) -> PaillierKeys:
        if self._paillier is None:
            self._paillier = PaillierKeys.generate(KEY_BITS)
        return self._paillier

    @property
    def ckks(self) -> CKKSKeys:
        if self._ckks is None:
            self._ckks = CKKSKeys.generate(PRESETS["n8192"])
        return self._ckks

    def phe_seconds_per_value(self, clients: int, phase: str) -> float:
        """phe's seconds per value for ``phase`` (measured on ``PHE_SAMPLE`` values)."""
        key = (clients, phase)
        if key not in self._phe:
            case = phe_case(self, clients, PHE_SAMPLE, 0.0)
            seconds = best_seconds(case.phases[phase], budget=0.0, most=0)
            self._phe[key] = seconds / case.values[phase]
        return self._phe[key]


def _values(clients: int, dim: int, phases: tuple[str, ...]) -> dict[str, int]:
    """A client phase processes its dim values, the server's sum n·dim, a decode the sum's dim."""
    return {phase: clients * dim if phase == AGGREGATE else dim for phase in phases}


# -- plaintext ---------------------------------------------------------------------------------


def plaintext_case(keys: Keys, clients: int, dim: int, dropout: float) -> Case:
    channel = PlaintextChannel()
    vectors = plaintext_vectors(clients, dim)
    messages = {c: channel.encode(c, v) for c, v in enumerate(vectors)}
    return Case(
        phases={
            ENCODE: lambda: channel.encode(0, vectors[0]),
            AGGREGATE: lambda: channel.aggregate(messages),
        },
        values=_values(clients, dim, (ENCODE, AGGREGATE)),
        message_bytes=messages[0].nbytes,
        upload_bytes_per_client=float(messages[0].nbytes),
        download_bytes_per_client=0.0,
    )


# -- SecAgg and SecAgg+ ------------------------------------------------------------------------


@dataclass
class KeyRounds:
    """A round after its key rounds, and the survivors' unmasking answers (dimension-free)."""

    round: SecAggRound
    dropouts: dict[int, Stage]
    survivors: frozenset[int]
    responses: dict[int, UnmaskingResponse]


_KEY_ROUNDS: dict[tuple[str, int, float], KeyRounds] = {}


def key_rounds(mode: str, clients: int, dropout: float, bits: int = 32) -> KeyRounds:
    """The slow, dimension-free part of the set-up, cached for one configuration at a time."""
    key = (mode, clients, dropout, bits)
    if key not in _KEY_ROUNDS:
        _KEY_ROUNDS.clear()
        members = list(range(clients))
        if mode == "secagg":
            graph = Graph.full(members)
            threshold = full_threshold(clients, corruption=TOLERATED)
        else:
            plan = choose_degree(clients, dropout=TOLERATED, corruption=TOLERATED)
            graph = Graph.from_plan(members, plan, seed=bytes(range(32)))
            threshold = plan.threshold
        rng = np.random.default_rng(clients)
        gone = rng.choice(clients, size=round(dropout * clients), replace=False)
        dropouts = {int(c): Stage.MASKED_INPUT for c in gone}
        ring = FloatQuantizer(quant_bits=16, bits=bits).ring
        rnd = SecAggRound(members, ring=ring, graph=graph, threshold=threshold, dropouts=dropouts)
        survivors = frozenset(members) - set(dropouts)
        _KEY_ROUNDS[key] = KeyRounds(
            rnd, dropouts, survivors, rnd.unmasking_responses(survivors)
        )
    return _KEY_ROUNDS[key]


def secagg_case(mode: str, clients: int, dim: int, dropout: float, bits: int = 32) -> Case:
    """SecAgg(+) in the ring Z/2^bits (32: values travel as whole uint32 words; fewer: packed to
    ``bits`` bits a value on the wire, unpacked by the server before summing)."""
    setup = key_rounds(mode, clients, dropout, bits)
    rnd, survivors, responses = setup.round, setup.survivors, setup.responses
    quantizer = FloatQuantizer(clip_range=(-1.0, 1.0), quant_bits=16, bits=bits)
    rng = np.random.default_rng(dim)
    update = client_update(dim, dim)
    encoded = quantizer.encode(update, rng)
    sent = {
        c: replayed_masked_input(rnd.clients[c], encoded, rnd.masks) for c in sorted(survivors)
    }
    server = rnd.server
    total = server.sum_masked(sent)
    add, subtract = server.mask_seeds(survivors, responses)
    regenerated = total.copy()
    client = rnd.clients[min(survivors)]
    client_masks = 1 + len(client.dealers)
    masks = MaskGenerator(rnd.setup.ring)
    masked_bytes = sent[min(survivors)].nbytes
    # rnd.upload holds the key rounds and the unmasking answers (the masked inputs above were
    # made outside its accounting).
    key_bytes = float(np.mean([rnd.upload[c] for c in survivors]))
    return Case(
        phases={
            ENCODE: lambda: replayed_masked_input(client, encoded, masks),
            AGGREGATE: lambda: server.sum_masked(sent),
            SERVER_DECODE: lambda: server.unmask(total, survivors, responses, rnd.masks),
        },
        # The server sums the survivors' inputs only.
        values={ENCODE: dim, AGGREGATE: len(survivors) * dim, SERVER_DECODE: dim},
        message_bytes=masked_bytes,
        upload_bytes_per_client=key_bytes + masked_bytes,
        download_bytes_per_client=float(np.mean([rnd.download[c] for c in survivors])),
        aes_words={ENCODE: client_masks * dim, SERVER_DECODE: (len(add) + len(subtract)) * dim},
        masks_only={
            SERVER_DECODE: lambda: rnd.masks.apply(regenerated, add=add, subtract=subtract)
        },
        setup={
            "degree": rnd.setup.graph.degree,
            "threshold": rnd.setup.threshold,
            "ring_bits": bits,
            "dropped": len(setup.dropouts),
            "masks_per_client": client_masks,
            "masks_regenerated": len(add) + len(subtract),
            "key_bytes_per_client": key_bytes,
            "quantize_seconds": best_seconds(lambda: quantizer.encode(update, rng)),
            "reconstruct_seconds": best_seconds(
                lambda: server.mask_seeds(survivors, responses), budget=0.0, most=0
            ),
        },
    )


# -- Paillier and CKKS -------------------------------------------------------------------------


def _messages(channel: PaillierChannel | CKKSChannel, clients: int, dim: int) -> dict[
    int, EncodedUpdate
]:
    distinct = [channel.encode(c, client_update(dim, c)) for c in range(min(clients, DISTINCT))]
    return {c: distinct[c % len(distinct)] for c in range(clients)}


def pooled_encode_seconds(keys: Keys, clients: int, vector: np.ndarray) -> float:
    """Best online encode time when the obfuscators were precomputed (the randomness pool).

    The pool is refilled by ``begin_round`` before each timed call, outside the timing.
    """
    channel = PaillierChannel(keys=keys.paillier, randomness_pool=1)
    channel.configure(clients=clients, streams=Streams(0))
    channel.randomness_pool = channel.layout.plaintexts(vector.size)
    ctx = RoundContext(round=0, sampled=[0], num_clients=clients, expected_clients=clients,
                       dim=vector.size, streams=Streams(0))
    best = float("inf")
    for _ in range(3):
        channel.begin_round(ctx)
        tick = time.perf_counter()
        channel.encode(0, vector)
        best = min(best, time.perf_counter() - tick)
    return best


def _he_case(
    channel: PaillierChannel | CKKSChannel, clients: int, dim: int, setup: dict[str, Any],
    **extra: Any,
) -> Case:
    """Encode, server sum and decode of a configured HE channel on n messages of ``dim``."""
    messages = _messages(channel, clients, dim)
    total = channel.server_sum(messages)
    vector = client_update(dim, 0)
    return Case(
        phases={
            ENCODE: lambda: channel.encode(0, vector),
            AGGREGATE: lambda: channel.server_sum(messages),
            CLIENT_DECODE: lambda: channel.decode(total),
        },
        values=_values(clients, dim, (ENCODE, AGGREGATE, CLIENT_DECODE)),
        message_bytes=messages[0].nbytes,
        upload_bytes_per_client=float(messages[0].nbytes),
        download_bytes_per_client=float(len(total)),
        setup=setup,
        **extra,
    )


def paillier_case(keys: Keys, clients: int, dim: int, *, per_value: bool) -> Case:
    channel = PaillierChannel(keys=keys.paillier, per_value=per_value)
    channel.configure(clients=clients, streams=Streams(0))
    setup: dict[str, Any] = {
        "key_bits": KEY_BITS,
        "quant_bits": channel.bits,
        "slot_bits": channel.layout.slot_bits,
        "values_per_ciphertext": channel.layout.slots,
    }
    if not per_value and dim <= POOLED_MAX_DIM:
        setup["pooled_encode_seconds"] = pooled_encode_seconds(keys, clients,
                                                               client_update(dim, 0))
    return _he_case(channel, clients, dim, setup)


def ckks_case(keys: Keys, clients: int, dim: int, dropout: float) -> Case:
    ckks = keys.ckks
    channel = CKKSChannel(keys=ckks)
    channel.configure(clients=clients)
    setup = {
        "poly_modulus_degree": ckks.params.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(ckks.params.coeff_mod_bit_sizes),
        "values_per_ciphertext": ckks.params.slots - 1,
        "public_context_bytes": ckks.public_bytes,
    }
    # The bare loop on the same data, key and number of distinct messages.
    loop = TenSEALLoop(ckks, clients, dim)
    return _he_case(channel, clients, dim, setup, tenseal_loop=loop.phases())


# -- peers -------------------------------------------------------------------------------------


def phe_encrypt(public: phe_paillier.PaillierPublicKey, values: np.ndarray) -> bytes:
    """phe's per-value encryption of integers, serialized as fixed-width big-endian bytes."""
    width = (2 * public.n.bit_length() + 7) // 8
    return b"".join(
        public.encrypt(int(v)).ciphertext().to_bytes(width, "big") for v in values.tolist()
    )


def phe_sum(public: phe_paillier.PaillierPublicKey, blobs: list[bytes]) -> bytes:
    """phe's aggregation: deserialize into EncryptedNumbers, add with ``+``, serialize."""
    width = (2 * public.n.bit_length() + 7) // 8

    def load(blob: bytes) -> list[phe_paillier.EncryptedNumber]:
        return [
            phe_paillier.EncryptedNumber(public, int.from_bytes(blob[i : i + width], "big"), 0)
            for i in range(0, len(blob), width)
        ]

    total = load(blobs[0])
    for blob in blobs[1:]:
        total = [a + b for a, b in zip(total, load(blob), strict=True)]
    return b"".join(t.ciphertext(be_secure=False).to_bytes(width, "big") for t in total)


def phe_case(keys: Keys, clients: int, dim: int, dropout: float) -> Case:
    """phe per value (decryption is the same CRT decryption as ours, so it is not timed)."""
    public = keys.paillier.public
    rng = np.random.default_rng(0)
    quantized = [
        packing.quantize(client_update(dim, c), clip=1.0, bits=16, rng=rng)[0]
        for c in range(min(clients, DISTINCT))
    ]
    blobs = [phe_encrypt(public, q) for q in quantized]
    messages = [blobs[c % len(blobs)] for c in range(clients)]
    return Case(
        phases={
            ENCODE: lambda: phe_encrypt(public, quantized[0]),
            AGGREGATE: lambda: phe_sum(public, messages),
        },
        values=_values(clients, dim, (ENCODE, AGGREGATE)),
        message_bytes=len(blobs[0]),
        upload_bytes_per_client=float(len(blobs[0])),
        download_bytes_per_client=float(len(blobs[0])),  # the sum has as many ciphertexts
        setup={"key_bits": KEY_BITS},
    )


class TenSEALLoop:
    """A bare TenSEAL client/server/key holder on ``DISTINCT`` updates, repeated to n."""

    def __init__(self, keys: CKKSKeys, clients: int, dim: int) -> None:
        self.keys, self.slots = keys, keys.params.slots
        self.vector = client_update(dim, 0)
        distinct = [self.encrypt(client_update(dim, c)) for c in range(min(clients, DISTINCT))]
        self.messages = [distinct[c % len(distinct)] for c in range(clients)]
        self.total = self.sum()

    def encrypt(self, vector: np.ndarray) -> list[bytes]:
        """One ``ckks_vector`` per slot-sized chunk, serialized."""
        context = self.keys.secret_context
        return [ts.ckks_vector(context, vector[i : i + self.slots]).serialize()
                for i in range(0, vector.size, self.slots)]

    def sum(self) -> list[bytes]:
        """``ckks_vector_from`` and ``+=`` per chunk, serialized."""
        context = self.keys.public_context
        acc = [ts.ckks_vector_from(context, blob) for blob in self.messages[0]]
        for blobs in self.messages[1:]:
            for total, blob in zip(acc, blobs, strict=True):
                total += ts.ckks_vector_from(context, blob)
        return [vector.serialize() for vector in acc]

    def decrypt(self) -> np.ndarray:
        """Decrypt every chunk of the sum."""
        context = self.keys.secret_context
        return np.concatenate([ts.ckks_vector_from(context, b).decrypt() for b in self.total])

    def phases(self) -> dict[str, Callable[[], object]]:
        return {
            ENCODE: lambda: self.encrypt(self.vector),
            AGGREGATE: self.sum,
            CLIENT_DECODE: self.decrypt,
        }


def tenseal_case(keys: Keys, clients: int, dim: int, dropout: float) -> Case:
    loop = TenSEALLoop(keys.ckks, clients, dim)
    message = sum(len(blob) for blob in loop.messages[0])
    return Case(
        phases=loop.phases(),
        values=_values(clients, dim, (ENCODE, AGGREGATE, CLIENT_DECODE)),
        message_bytes=message,
        upload_bytes_per_client=float(message),
        download_bytes_per_client=float(sum(len(blob) for blob in loop.total)),
        setup={"values_per_ciphertext": loop.slots},
    )


# -- the suite's channels ----------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One row family of the grid.

    Attributes:
        build: (keys, n, dim, dropout) → the case.
        dims: Dimensions (values per client).
        phases: Phases timed.
        dropouts: Dropout fractions (SecAgg only).
        role: ``channel`` (ours) or ``peer``.
    """

    build: Callable[[Keys, int, int, float], Case]
    dims: list[int]
    phases: tuple[str, ...]
    dropouts: tuple[float, ...] = (0.0,)
    role: str = "channel"


def _dims(*dims: int) -> list[int]:
    return list(dims[:1]) if SMOKE else list(dims)


HE_DIMS = _dims(1_000, 10_000, 100_000, 1_000_000)
PER_VALUE_DIMS = _dims(100, 1_000)
HE_PHASES = (ENCODE, AGGREGATE, CLIENT_DECODE)

CHANNELS: dict[str, Channel] = {
    "plaintext": Channel(plaintext_case, HE_DIMS, (ENCODE, AGGREGATE)),
    "secagg": Channel(
        lambda k, n, dim, drop: secagg_case("secagg", n, dim, drop),
        _dims(10_000, 100_000, 1_000_000), (ENCODE, AGGREGATE, SERVER_DECODE), (0.0, 0.1),
    ),
    "secagg+": Channel(
        lambda k, n, dim, drop: secagg_case("secagg+", n, dim, drop),
        _dims(10_000, 100_000, 1_000_000), (ENCODE, AGGREGATE, SERVER_DECODE), (0.0, 0.1),
    ),
    # The smallest ring whose sum of n 16-bit inputs cannot wrap (20 bits at n = 10, 23 at
    # n = 100): uploads are packed to b/8 bytes a value, at the price of packing and unpacking.
    "secagg-packed": Channel(
        lambda k, n, dim, drop: secagg_case(
            "secagg", n, dim, drop, bits=required_bits(n, (1 << 16) - 1)
        ),
        _dims(10_000, 100_000, 1_000_000), (ENCODE, AGGREGATE),
    ),
    "paillier-packed": Channel(
        lambda k, n, dim, drop: paillier_case(k, n, dim, per_value=False), HE_DIMS, HE_PHASES
    ),
    "paillier-per-value": Channel(
        lambda k, n, dim, drop: paillier_case(k, n, dim, per_value=True), PER_VALUE_DIMS,
        HE_PHASES,
    ),
    "phe-per-value": Channel(phe_case, PER_VALUE_DIMS, (ENCODE, AGGREGATE), role="peer"),
    "ckks": Channel(ckks_case, HE_DIMS, HE_PHASES),
    "tenseal-loop": Channel(tenseal_case, HE_DIMS, HE_PHASES, role="peer"),
}

_CURRENT: dict[tuple[str, int, int, float], Case] = {}


def case_for(keys: Keys, channel: str, clients: int, dim: int, dropout: float) -> Case:
    """The case of one configuration; only the latest is kept (n messages are large)."""
    key = (channel, clients, dim, dropout)
    if key not in _CURRENT:
        _CURRENT.clear()
        _CURRENT[key] = CHANNELS[channel].build(keys, clients, dim, dropout)
    return _CURRENT[key]
