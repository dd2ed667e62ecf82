"""CKKS (TenSEAL) for aggregation: secure parameter presets, chunked encryption, error bounds.

The clients share a TenSEAL context with the secret key; the server gets a public copy built
from bytes that hold only the public key — no secret, Galois or relinearisation keys, since
adding ciphertexts needs none. Vectors are split explicitly into ciphertexts of exactly the slot
count (so TenSEAL never splits them itself, which prints a warning on every encryption).

The last slot of every ciphertext is a *canary*: clients encrypt 0 there, and the padding after
the data in the last ciphertext is 0 as well. After decryption those slots must be within the
a-priori error bound of 0. TenSEAL loads most corrupted ciphertexts (and any ciphertext made
under another key with the same parameters) without complaint and decrypts them to noise of
magnitude ~10^7, which the canary exposes. This detects corruption, not a malicious client: a
valid encryption of other values passes, as it would in any HE aggregation.

Parameters: the coefficient modulus is one data prime plus SEAL's special prime (the last one,
dropped from ciphertexts). Plain aggregation needs no rescaling, so one data prime suffices and
ciphertexts are a third smaller than with the usual ``[60, 40, 40, 60]`` chain. The total is
capped by the HomomorphicEncryption.org table for 128-bit security, which SEAL enforces.

Example:
    >>> keys = CKKSKeys.generate(PRESETS["n4096"])
    >>> blobs = encrypt_chunks(keys, np.array([0.5, -1.25]))
    >>> total = add_chunks(keys, None, blobs)
    >>> total = add_chunks(keys, total, blobs)
    >>> values = decrypt_chunks(keys, [v.serialize() for v in total], dim=2, clients=2)
    >>> np.round(values, 6).tolist()
    [1.0, -2.5]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from fedbench.errors import ConfigError

# Largest total coefficient-modulus bits for 128-bit security per ring degree (SEAL's
# CoeffModulus::MaxBitCount, from the HomomorphicEncryption.org security standard).
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
NOISE_STD = 3.2  # SEAL's standard deviation of the error distribution


@dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters.

    Attributes:
        poly_modulus_degree: Ring degree N (N/2 slots per ciphertext).
        coeff_mod_bit_sizes: Bit sizes of the coefficient-modulus primes; the last is SEAL's
            special prime, the others stay in the ciphertexts.
        scale_bits: log2 of the encoding scale Δ.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        """Values per ciphertext, N/2 (one of them is the canary)."""
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> int:
        """Bits of the modulus that ciphertexts carry (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    def check(self) -> None:
        """Refuse parameters below 128-bit security or without room for the values.

        Raises:
            ConfigError: Naming the parameter and the limit.
        """
        n = self.poly_modulus_degree
        bits = self.coeff_mod_bit_sizes
        if n not in MAX_COEFF_BITS_128:
            raise ConfigError(
                f"ckks: poly_modulus_degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {n}"
            )
        if len(bits) < 2 or any(not 20 <= b <= 60 for b in bits):
            raise ConfigError(
                "ckks: coeff_mod_bit_sizes needs a data prime and a special prime, each of "
                f"20 to 60 bits, got {list(bits)}"
            )
        cap = MAX_COEFF_BITS_128[n]
        if sum(bits) > cap:
            raise ConfigError(
                f"ckks: coeff_mod_bit_sizes {list(bits)} sum to {sum(bits)} bits, above the "
                f"{cap} bits that keep N = {n} at 128-bit security (HomomorphicEncryption.org "
                "standard); SEAL cannot build weaker contexts, so there is no insecure override"
            )
        if not 20 <= self.scale_bits <= self.data_bits - 8:
            raise ConfigError(
                f"ckks: scale_bits = {self.scale_bits} must be in [20, {self.data_bits - 8}] "
                f"(the data primes have {self.data_bits} bits; values need the rest)"
            )

    def value_limit(self, clients: int) -> float:
        """Largest |value| a client may send so that the sum of ``clients`` cannot wrap.

        A slot value z becomes polynomial coefficients of magnitude at most Δ·|z|, which must
        stay below half the data modulus; one more bit is kept as margin for the noise.
        """
        return 2.0 ** (self.data_bits - self.scale_bits - 2) / clients

    def error_bound(self, clients: int) -> float:
        """A-priori bound on |decoded − true| per slot for a sum of ``clients`` fresh ciphertexts.

        Per ciphertext: the fresh-encryption bound B_clean = 8√2·σN + 6σ√N + 16σ√(hN) and the
        rescaling bound B_rs = √(N/3)·(3 + 8√h) of Cheon, Kim, Kim, Song (ASIACRYPT 2017,
        Lemmas 1 and 2; each holds except with negligible probability), with the worst-case
        secret Hamming weight h = N, plus N/2 for rounding the encoding, all divided by Δ.
        Errors of independent ciphertexts add.
        """
        n = self.poly_modulus_degree
        clean = 8 * math.sqrt(2) * NOISE_STD * n + 6 * NOISE_STD * math.sqrt(n)
        clean += 16 * NOISE_STD * n
        rescale = math.sqrt(n / 3) * (3 + 8 * math.sqrt(n))
        return clients * (clean + rescale + n / 2) / 2.0**self.scale_bits


PRESETS: dict[str, CKKSParams] = {
    "n4096": CKKSParams(4096, (60, 49), 40),
    "n8192": CKKSParams(8192, (60, 40), 40),
    "n16384": CKKSParams(16384, (60, 60), 40),
}


@dataclass(frozen=True)
class CKKSKeys:
    """The clients' secret context and the server's public one.

    Attributes:
        params: The encryption parameters.
        secret_context: The clients' context (public and secret key).
        public_context: The server's context, deserialized from the public key alone.
        key_id: A 16-byte fingerprint of the public context.
        public_bytes: Size of the public context the server downloads once.
    """

    params: CKKSParams
    secret_context: ts.Context = field(repr=False)
    public_context: ts.Context = field(repr=False)
    key_id: bytes
    public_bytes: int

    @classmethod
    def generate(cls, params: CKKSParams) -> CKKSKeys:
        """A fresh key pair for ``params`` (checked first)."""
        params.check()
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**params.scale_bits
        public = context.serialize(
            save_public_key=True, save_secret_key=False,
            save_galois_keys=False, save_relin_keys=False,
        )
        key_id = hashlib.blake2b(b"ckks" + public, digest_size=16).digest()
        return cls(params, context, ts.context_from(public), key_id, len(public))


def chunk_count(params: CKKSParams, dim: int) -> int:
    """Ciphertexts for a vector of ``dim`` values (slots − 1 values each, plus the canary)."""
    return max(1, -(-dim // (params.slots - 1)))


def encrypt_chunks(keys: CKKSKeys, values: np.ndarray) -> list[bytes]:
    """Serialized ciphertexts of ``values``: full rows of ``slots``, canary and padding 0."""
    slots = keys.params.slots
    chunks = chunk_count(keys.params, values.size)
    data = np.zeros(chunks * (slots - 1), dtype=np.float64)
    data[: values.size] = values
    rows = np.zeros((chunks, slots), dtype=np.float64)
    rows[:, : slots - 1] = data.reshape(chunks, slots - 1)
    context = keys.secret_context
    return [ts.ckks_vector(context, row).serialize() for row in rows]


def add_chunks(
    keys: CKKSKeys, acc: list[ts.CKKSVector] | None, blobs: Sequence[bytes]
) -> list[ts.CKKSVector]:
    """Server side: load one client's ciphertexts and add them into ``acc`` in place.

    Raises:
        ValueError: Naming the ciphertext that does not load or does not match.
    """
    context = keys.public_context
    if acc is not None and len(acc) != len(blobs):
        raise ValueError(f"ckks: {len(blobs)} ciphertexts, the sum has {len(acc)}")
    loaded = []
    for index, blob in enumerate(blobs):
        try:
            vector = ts.ckks_vector_from(context, blob)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"ckks: ciphertext {index} does not load ({err})") from None
        if acc is None:
            loaded.append(vector)
        else:
            acc[index] += vector  # add_inplace: no new ciphertext
    return loaded if acc is None else acc


def decrypt_chunks(keys: CKKSKeys, blobs: Sequence[bytes], *, dim: int, clients: int) -> np.ndarray:
    """Decrypt a sum of ``clients`` vectors and check its canary and padding slots.

    Raises:
        ValueError: If a ciphertext does not load, or a slot that must be 0 is not within the
            error bound of 0 (a ciphertext was tampered with or made under another key).
    """
    slots = keys.params.slots
    if len(blobs) != chunk_count(keys.params, dim):
        raise ValueError(f"ckks: {len(blobs)} ciphertexts for {dim} values")
    rows = np.empty((len(blobs), slots), dtype=np.float64)
    for index, blob in enumerate(blobs):
        try:
            rows[index] = ts.ckks_vector_from(keys.secret_context, blob).decrypt()
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"ckks: aggregate ciphertext {index} does not load ({err})") from None
    data = rows[:, : slots - 1].reshape(-1)
    zeros = np.concatenate([rows[:, slots - 1], data[dim:]])
    bound = keys.params.error_bound(clients)
    worst = float(np.abs(zeros).max())
    if worst > bound:
        where = int(np.abs(zeros).argmax())
        raise ValueError(
            f"ckks: a slot that encrypts 0 decrypts to {worst:.3g} (slot {where} of the "
            f"canary/padding slots), beyond the error bound {bound:.3g}: a ciphertext was "
            "tampered with or made under another key"
        )
    return data[:dim].copy()
