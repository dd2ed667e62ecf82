"""The ``paillier`` defense: Paillier-encrypted aggregation, packed or one value per ciphertext.

Clients clip and quantize their update (stochastic rounding), pack it into plaintexts
(:mod:`~fedbench.defenses.he.packing`), encrypt with the shared key and send bytes. The server
multiplies the ciphertexts and returns the encrypted sum; the clients decrypt and unpack it.
Per-value mode puts one quantized value in each ciphertext, as most FL tutorials do; it is the
baseline that packing is measured against and is practical only for small models.

Example:
    >>> import numpy as np
    >>> from fedbench.defenses.he.paillier import PaillierKeys
    >>> channel = PaillierChannel(keys=PaillierKeys.generate(1024, allow_insecure=True))
    >>> channel.configure(clients=2)
    >>> messages = {i: channel.encode(i, np.full(300, 0.25, np.float32)) for i in (0, 1)}
    >>> result = channel.aggregate(messages)
    >>> round(float(result.total[0]), 3), channel.layout.slots, result.upload_bytes[0]
    (0.5, 57, 1574)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np
from gmpy2 import mpz

from fedbench.defense import Defense
from fedbench.defenses.he import packing
from fedbench.defenses.he.encrypted import EncryptedChannel, max_clients
from fedbench.defenses.he.envelope import HEADER_BYTES, EnvelopeError, Header, Scheme, read_header
from fedbench.defenses.he.paillier import (
    MIN_SECURE_BITS,
    Encryptor,
    PaillierKeys,
    check_key_bits,
    decrypt,
    from_bytes,
    multiply,
    to_bytes,
)
from fedbench.errors import AggregationError, BadClientUpdate, ConfigError
from fedbench.fl.channel import EncodedUpdate
from fedbench.fl.context import RoundContext, RunInfo
from fedbench.metrics.base import Metric
from fedbench.params import NonNegativeInt, PositiveFloat
from fedbench.registry import register_defense
from fedbench.seeding import Streams


class PaillierChannel(EncryptedChannel):
    """Paillier aggregation channel.

    Args:
        keys: The clients' key pair; generated in :meth:`configure` when None.
        key_bits: Size of a generated key.
        allow_insecure: Allow generated keys below 2048 bits.
        bits: Signed quantization width.
        clip: Values are clipped to [−clip, clip] before quantization.
        per_value: One value per ciphertext instead of packing.
        randomness_pool: Encryption obfuscators to precompute before every round (0: compute
            them while encrypting).
    """

    name: ClassVar[str] = "paillier"

    def __init__(
        self,
        *,
        keys: PaillierKeys | None = None,
        key_bits: int = MIN_SECURE_BITS,
        allow_insecure: bool = False,
        bits: int = 16,
        clip: PositiveFloat = 1.0,
        per_value: bool = False,
        randomness_pool: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        if not clip > 0:
            raise ConfigError(f"paillier: clip must be positive, got {clip}")
        if randomness_pool < 0:
            raise ConfigError(f"paillier: randomness_pool must be ≥ 0, got {randomness_pool}")
        self.keys = keys
        self.key_bits = keys.n.bit_length() if keys is not None else key_bits
        self.allow_insecure = allow_insecure
        self.bits = bits
        self.clip = clip
        self.per_value = per_value
        self.randomness_pool = randomness_pool
        # Refuse a width that cannot fit the key before any key is generated.
        packing.slot_layout(bits=bits, clients=1, plaintext_bits=self.key_bits - 1)
        self._layout: packing.SlotLayout | None = None
        self._encryptor: Encryptor | None = None
        self._server_keys: PaillierKeys | None = None
        self._clipped = 0
        self._values = 0

    def check(self, run: RunInfo) -> list[str]:
        """Refuse a slot width that cannot hold the run's largest sum (before any key exists)."""
        try:
            packing.slot_layout(
                bits=self.bits, clients=max_clients(run), plaintext_bits=self.key_bits - 1,
                per_value=self.per_value,
            )
        except ConfigError as err:
            return [str(err)]
        return []

    def configure(self, *, clients: int, streams: Streams | None = None) -> None:
        if self.keys is None:
            self.keys = PaillierKeys.generate(self.key_bits, allow_insecure=self.allow_insecure)
        self._layout = packing.slot_layout(
            bits=self.bits, clients=clients, plaintext_bits=self.keys.plaintext_bits,
            per_value=self.per_value,
        )
        self._encryptor = Encryptor(self.keys)
        self._server_keys = self.keys.public_only()
        self._streams = streams

    @property
    def layout(self) -> packing.SlotLayout:
        """The slot layout (after :meth:`configure`)."""
        if self._layout is None:
            raise RuntimeError("paillier: call configure() (or setup) before use")
        return self._layout

    def _client_parts(self) -> tuple[PaillierKeys, Encryptor]:
        if self.keys is None or self._encryptor is None:
            raise RuntimeError("paillier: call configure() (or setup) before use")
        return self.keys, self._encryptor

    def _server_part(self) -> PaillierKeys:
        if self._server_keys is None:
            raise RuntimeError("paillier: call configure() (or setup) before use")
        return self._server_keys

    def begin_round(self, ctx: RoundContext) -> None:
        super().begin_round(ctx)
        _, encryptor = self._client_parts()
        if encryptor.pool_size < self.randomness_pool:
            encryptor.precompute(self.randomness_pool - encryptor.pool_size)

    def encrypt(self, client_id: int, update: np.ndarray) -> bytes:
        keys, encryptor = self._client_parts()
        layout = self.layout
        quantized, clipped = packing.quantize(
            update, clip=self.clip, bits=self.bits, rng=self.rng(client_id)
        )
        self._clipped += clipped
        self._values += update.size
        ciphertexts = encryptor.encrypt(packing.pack(quantized, layout))
        head = Header(Scheme.PAILLIER, keys.key_id, update.size, 1, len(ciphertexts))
        return head.pack() + to_bytes(keys, ciphertexts)

    def server_sum(self, messages: Mapping[int, EncodedUpdate]) -> bytes:
        keys = self._server_part()
        try:
            self.layout.check_clients(len(messages))
        except ConfigError as err:
            raise AggregationError(str(err)) from None
        acc: list[mpz] | None = None
        first: Header | None = None
        for cid, message in messages.items():
            where = f"client {cid}"
            try:
                head = read_header(message.payload, Scheme.PAILLIER, keys.key_id, where=where)
                if head.clients != 1:
                    raise EnvelopeError(f"{where}: message claims to sum {head.clients} clients")
                if first is not None and (head.dim, head.chunks) != (first.dim, first.chunks):
                    raise EnvelopeError(
                        f"{where}: {head.dim} values in {head.chunks} ciphertexts, others sent "
                        f"{first.dim} in {first.chunks}"
                    )
                body = memoryview(message.payload)[HEADER_BYTES:]
                ciphertexts = from_bytes(keys, body, head.chunks)
            except ValueError as err:
                raise BadClientUpdate(cid, str(err).removeprefix(f"{where}: ")) from None
            first = first or head
            acc = ciphertexts if acc is None else multiply(keys, acc, ciphertexts)
        assert first is not None and acc is not None
        head = Header(Scheme.PAILLIER, keys.key_id, first.dim, len(messages), first.chunks)
        return head.pack() + to_bytes(keys, acc)

    def decode(self, aggregate: bytes) -> np.ndarray:
        keys, _ = self._client_parts()
        try:
            head = read_header(aggregate, Scheme.PAILLIER, keys.key_id, where="aggregate")
            ciphertexts = from_bytes(keys, memoryview(aggregate)[HEADER_BYTES:], head.chunks)
            plaintexts = decrypt(keys, ciphertexts)
            sums = packing.unpack(plaintexts, self.layout, dim=head.dim, clients=head.clients)
        except (ValueError, ConfigError) as err:
            raise AggregationError(
                f"paillier: the encrypted sum does not decode: {err} (a client's ciphertext "
                "was tampered with or made under another key)"
            ) from None
        return packing.dequantize(sums, clip=self.clip, bits=self.bits)

    def error_bound(self, clients: int) -> float:
        """Stochastic rounding moves each value by less than one step, clip / qmax."""
        return clients * self.clip / packing.qmax(self.bits)

    def round_stats(self) -> dict[str, float]:
        stats = {"clipped_fraction": self._clipped / max(1, self._values)}
        self._clipped = self._values = 0
        return stats


@register_defense("paillier")
class PaillierAggregation(Defense):
    """Paillier-encrypted aggregation: packed (BatchCrypt-style) or one value per ciphertext.

    The clients share a key pair; the server holds the public key and only ever sees
    ciphertexts and their sum. Updates are clipped to [−clip, clip] and quantized to signed
    ``bits``-bit integers with stochastic rounding.

    Args:
        mode: "packed" (as many values per ciphertext as fit) or "per_value".
        key_bits: Paillier modulus size; below 2048 only with ``allow_insecure``.
        bits: Quantization width.
        clip: Clipping bound per coordinate (clipped values are counted in the metrics).
        randomness_pool: Obfuscators precomputed before each round (offline phase).
        allow_insecure: Allow keys below 2048 bits; the results are marked insecure.

    Example:
        >>> defense = PaillierAggregation(key_bits=1024, allow_insecure=True)
        >>> defense.insecure
        'Paillier key of 1024 bits (< 2048)'
    """

    def __init__(
        self,
        *,
        mode: Literal["packed", "per_value"] = "packed",
        key_bits: int = MIN_SECURE_BITS,
        bits: int = 16,
        clip: PositiveFloat = 1.0,
        randomness_pool: NonNegativeInt = 0,
        allow_insecure: bool = False,
    ) -> None:
        self.insecure = check_key_bits(key_bits, allow_insecure=allow_insecure)
        self.channel: PaillierChannel = PaillierChannel(
            key_bits=key_bits, allow_insecure=allow_insecure, bits=bits, clip=clip,
            per_value=mode == "per_value", randomness_pool=randomness_pool,
        )

    def metrics(self) -> list[Metric]:
        history = self.channel.history
        if not history:
            return []
        errors = [s["max_abs_error"] for s in history if "max_abs_error" in s]
        clipped = float(np.mean([s["clipped_fraction"] for s in history]))
        return [
            Metric("he_max_abs_error", max(errors) if errors else None, False, kind="utility",
                   note="largest |decoded sum − plaintext sum| over rounds (quantization, "
                        "clipping)"),
            Metric("he_error_bound", max(s["error_bound"] for s in history), None,
                   note="a-priori quantization error bound of one round's sum"),
            Metric("clipped_fraction", clipped, False, kind="utility",
                   note="fraction of update coordinates clipped to ±clip"),
            Metric("values_per_ciphertext", self.channel.layout.slots, None),
        ]
