"""Paillier encryption for aggregation: phe keys, fast client-side encryption, server products.

Keys come from ``phe`` (the clients share one key pair; the server holds only the public key).
The hot paths use gmpy2 integers throughout:

- **Encryption** is c = (1 + m·n)·ρ mod n² with the obfuscator ρ = r^n mod n². The clients hold
  the secret factors, so ρ is computed by the Chinese remainder theorem: modulo p² the n-th
  powers form the unique subgroup of order p − 1 of the cyclic group (Z/p²)*, and x ↦ x^p maps
  a uniform x onto that subgroup uniformly, exactly as r ↦ r^n does. So ρ_p = x^p mod p² and
  ρ_q = y^q mod q² (exponents of half the size, moduli of half the size) combined by CRT have
  the distribution of r^n mod n² — about 3.5× faster than phe's ``raw_encrypt``. x and y come
  from the operating system's CSPRNG; an optional pool of obfuscators is precomputed ahead of
  time (the "offline" phase) and each is used once.
- **Aggregation** (server) multiplies ciphertexts modulo n²: E(a)·E(b) = E(a + b).
- **Decryption** is phe's CRT ``raw_decrypt``.
- Ciphertexts travel as fixed-width big-endian integers of ``ciphertext_bytes`` bytes.

Example:
    >>> keys = PaillierKeys.generate(512, allow_insecure=True)
    >>> enc = Encryptor(keys)
    >>> a, b = enc.encrypt([gmpy2.mpz(20), gmpy2.mpz(22)])
    >>> decrypt(keys, multiply(keys, [a], [b]))[0]
    mpz(42)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import gmpy2
from gmpy2 import mpz
from phe import paillier

from fedbench.errors import ConfigError

MIN_SECURE_BITS = 2048  # NIST SP 800-57: 2048-bit factoring moduli give ~112-bit security
_EXTRA_RANDOM_BITS = 64  # sampling modulo p² from 64 extra bits: statistical distance < 2^-64


@dataclass(frozen=True)
class PaillierKeys:
    """A Paillier key pair as the clients hold it, or the public half as the server does.

    Attributes:
        public: phe's public key.
        private: phe's private key, or None on the server.
        insecure: Why the key is insecure (too short), if it was explicitly allowed.
    """

    public: paillier.PaillierPublicKey
    private: paillier.PaillierPrivateKey | None = field(default=None, repr=False)
    insecure: str | None = None

    @classmethod
    def generate(cls, bits: int = MIN_SECURE_BITS, *, allow_insecure: bool = False) -> PaillierKeys:
        """A fresh key pair with an n of ``bits`` bits (phe draws primes from the OS CSPRNG).

        Raises:
            ConfigError: If ``bits`` < 2048 and ``allow_insecure`` is not set.
        """
        insecure = check_key_bits(bits, allow_insecure=allow_insecure)
        public, private = paillier.generate_paillier_keypair(n_length=bits)
        return cls(public, private, insecure)

    def public_only(self) -> PaillierKeys:
        """The server's copy: the same public key, no secret factors."""
        return PaillierKeys(self.public, None, self.insecure)

    @cached_property
    def n(self) -> mpz:
        """The public modulus n."""
        return mpz(self.public.n)

    @cached_property
    def nsquare(self) -> mpz:
        """n², the ciphertext modulus."""
        return self.n * self.n

    @property
    def plaintext_bits(self) -> int:
        """Every integer below 2^plaintext_bits is a plaintext (it is < n)."""
        return int(self.n.bit_length()) - 1

    @property
    def ciphertext_bytes(self) -> int:
        """Bytes of one serialized ciphertext."""
        return (int(self.nsquare.bit_length()) + 7) // 8

    @cached_property
    def key_id(self) -> bytes:
        """A 16-byte fingerprint of the public key."""
        n_bytes = self.n.to_bytes((int(self.n.bit_length()) + 7) // 8, "big")
        return hashlib.blake2b(b"paillier" + n_bytes, digest_size=16).digest()


def check_key_bits(bits: int, *, allow_insecure: bool) -> str | None:
    """Why a ``bits``-bit key is insecure (None if it is not); refused unless allowed.

    Raises:
        ConfigError: For a malformed size, or an insecure one without ``allow_insecure``.
    """
    if not isinstance(bits, int) or bits < 256 or bits % 2:
        raise ConfigError(f"paillier: key_bits must be an even integer ≥ 256, got {bits}")
    if bits >= MIN_SECURE_BITS:
        return None
    if not allow_insecure:
        raise ConfigError(
            f"paillier: key_bits = {bits} is insecure (< {MIN_SECURE_BITS}); set "
            "allow_insecure: true to run it anyway (tables mark the row insecure)"
        )
    return f"Paillier key of {bits} bits (< {MIN_SECURE_BITS})"


class Encryptor:
    """Client-side encryption with the secret factors (CRT), optionally from a randomness pool.

    Args:
        keys: A key pair including the private key.
    """

    def __init__(self, keys: PaillierKeys) -> None:
        if keys.private is None:
            raise ValueError("paillier: fast encryption needs the secret factors (client keys)")
        self.keys = keys
        self._n = keys.n
        self._nsquare = keys.nsquare
        self._p = mpz(keys.private.p)
        self._q = mpz(keys.private.q)
        self._psquare = self._p * self._p
        self._qsquare = self._q * self._q
        self._q2_inverse = gmpy2.invert(self._qsquare, self._psquare)  # CRT coefficient
        self._pool: list[mpz] = []

    @property
    def pool_size(self) -> int:
        """Precomputed obfuscators not yet used."""
        return len(self._pool)

    def obfuscators(self, count: int) -> list[mpz]:
        """``count`` fresh values distributed as r^n mod n² for uniform r (see module doc)."""
        p, q, p2, q2 = self._p, self._q, self._psquare, self._qsquare
        p_bytes = (int(p2.bit_length()) + _EXTRA_RANDOM_BITS + 7) // 8
        q_bytes = (int(q2.bit_length()) + _EXTRA_RANDOM_BITS + 7) // 8
        out: list[mpz] = []
        while len(out) < count:
            need = count - len(out)
            noise = os.urandom(need * (p_bytes + q_bytes))
            view = memoryview(noise)
            for i in range(need):
                base = i * (p_bytes + q_bytes)
                x = mpz.from_bytes(view[base : base + p_bytes], "big") % p2
                y = mpz.from_bytes(view[base + p_bytes : base + p_bytes + q_bytes], "big") % q2
                if not (x % p and y % q):  # not a unit: probability ~2^-1023, draw again
                    continue
                rho_p = gmpy2.powmod(x, p, p2)
                rho_q = gmpy2.powmod(y, q, q2)
                out.append(rho_q + q2 * ((rho_p - rho_q) * self._q2_inverse % p2))
        return out

    def precompute(self, count: int) -> None:
        """Add ``count`` obfuscators to the pool (offline work; each is used exactly once)."""
        self._pool.extend(self.obfuscators(count))

    def encrypt(self, plaintexts: Sequence[mpz]) -> list[mpz]:
        """Ciphertexts of plaintexts in [0, n), using pooled obfuscators first."""
        n, nsquare = self._n, self._nsquare
        taken = min(len(self._pool), len(plaintexts))
        rhos = self._pool[len(self._pool) - taken :]
        del self._pool[len(self._pool) - taken :]  # never reused
        rhos.extend(self.obfuscators(len(plaintexts) - taken))
        out = []
        for m, rho in zip(plaintexts, rhos, strict=True):
            if not 0 <= m < n:
                raise ValueError("paillier: plaintext out of range [0, n)")
            out.append((m * n + 1) * rho % nsquare)
        return out


def multiply(keys: PaillierKeys, acc: Sequence[mpz], ciphertexts: Sequence[mpz]) -> list[mpz]:
    """The server's addition: the element-wise product of two ciphertext lists modulo n².

    The server folds the clients in one at a time, so it holds one client's ciphertexts and
    the running product, never all of them.
    """
    if len(acc) != len(ciphertexts):
        raise ValueError(f"paillier: {len(ciphertexts)} ciphertexts, the sum has {len(acc)}")
    nsquare = keys.nsquare
    return [a * c % nsquare for a, c in zip(acc, ciphertexts, strict=True)]


def decrypt(keys: PaillierKeys, ciphertexts: Sequence[mpz]) -> list[mpz]:
    """Plaintexts of ``ciphertexts`` (phe's CRT decryption; needs the private key)."""
    if keys.private is None:
        raise ValueError("paillier: decryption needs the private key")
    raw_decrypt = keys.private.raw_decrypt
    return [mpz(raw_decrypt(int(c))) for c in ciphertexts]


def to_bytes(keys: PaillierKeys, ciphertexts: Sequence[mpz]) -> bytes:
    """Fixed-width big-endian serialization."""
    width = keys.ciphertext_bytes
    return b"".join(c.to_bytes(width, "big") for c in ciphertexts)


def from_bytes(keys: PaillierKeys, data: bytes | memoryview, count: int) -> list[mpz]:
    """Parse ``count`` ciphertexts; each must be a residue in (0, n²).

    Raises:
        ValueError: Naming the first bad ciphertext, or if the length is wrong.
    """
    width = keys.ciphertext_bytes
    if len(data) != count * width:
        raise ValueError(
            f"paillier: {len(data)} bytes of ciphertext, expected {count} × {width} = "
            f"{count * width}"
        )
    view = memoryview(data)
    nsquare = keys.nsquare
    out = [mpz.from_bytes(view[i * width : (i + 1) * width], "big") for i in range(count)]
    for index, c in enumerate(out):
        if not 0 < c < nsquare:
            raise ValueError(f"paillier: ciphertext {index} is not a residue modulo n²")
    return out
