"""Keys of the protocol: X25519 agreement, HKDF-SHA256 derivation, AES-GCM for shares, GMAC
for masked inputs, and Ed25519 signatures for the actively secure checks.

Each client holds two X25519 key pairs per round, as in Bonawitz et al.: ``c`` to encrypt the
secret shares it sends to other clients through the server, and ``s`` whose agreement with a
neighbour's ``s`` key seeds their pairwise mask. The ``s`` private key is derived from a 128-bit
seed so that the seed (one 16-byte Shamir chunk, not two) is what is secret-shared; knowing the
seed is knowing the key.

Every derived key is bound by HKDF's ``info`` to its purpose, the round and the client ids, so
no key serves two purposes, rounds or directions.

Masked inputs are authenticated to the server with a key agreed between the client's ``c`` key
and the server's round key (:func:`input_key`): a message altered on its way is rejected and its
sender named, instead of being summed (a flipped byte moves the sum by up to 2^b). The tag is
GMAC (AES-GCM over an empty plaintext with the vector as associated data), the MAC of AES-GCM
deployments. It is also the cheapest MAC at hand per byte: measured over 4 MB with
``cryptography`` (OpenSSL 4, a CPU with VAES and VPCLMULQDQ) GMAC runs at ~28 GB/s, AES-128-CTR
at ~11.6, Poly1305 (a one-time MAC like GMAC under a one-time key) at ~14.5, HMAC-SHA256 at
~2.0 and keyed BLAKE2b at ~1.3; so the tag costs about 0.4 of a mask expansion of the same
vector. Its key tags one message (see input_key), so the fixed nonce is safe.

Signatures (Ed25519) are used only by the checks against a malicious server (:mod:`.checks`):
a client signs its key advertisement and the survivor set it was told, so the server can
neither substitute keys nor tell clients different stories without an honest client noticing.

Example:
    >>> a, b = private_key_from_seed(bytes(16)), private_key_from_seed(bytes(range(16)))
    >>> ab = shared_secret(a, public_bytes(b))
    >>> ab == shared_secret(b, public_bytes(a))
    True
    >>> mask_seed(ab, round_index=0, a=3, b=5) == mask_seed(ab, round_index=0, a=5, b=3)
    True
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_BYTES = 16
PUBLIC_KEY_BYTES = 32
TAG_BYTES = 16
SIGNATURE_BYTES = 64  # Ed25519
# Every AES-GCM key seals exactly one message (see share_key), so a constant nonce is safe.
_NONCE = bytes(12)


def random_seed() -> bytes:
    """A fresh 128-bit secret from the operating system's CSPRNG."""
    return os.urandom(SEED_BYTES)


def _hkdf(material: bytes, length: int, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)


def private_key_from_seed(seed: bytes) -> X25519PrivateKey:
    """The X25519 private key determined by a 128-bit seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a key seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return X25519PrivateKey.from_private_bytes(_hkdf(seed, 32, b"fedbench/secagg/x25519-key"))


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def shared_secret(key: X25519PrivateKey, peer_public: bytes | X25519PublicKey) -> bytes:
    """X25519 agreement with a peer's public key, raw or parsed by :func:`parse_public`
    (rejects low-order points)."""
    if isinstance(peer_public, bytes):
        peer_public = X25519PublicKey.from_public_bytes(peer_public)
    return key.exchange(peer_public)


def parse_public(raw: bytes) -> X25519PublicKey:
    """A raw public key parsed once, for a party that agrees with it many times."""
    return X25519PublicKey.from_public_bytes(raw)


def mask_seed(secret: bytes, *, round_index: int, a: int, b: int) -> bytes:
    """The 128-bit seed of the pairwise mask between clients ``a`` and ``b`` (order-free)."""
    low, high = sorted((a, b))
    info = b"fedbench/secagg/pairwise-mask" + struct.pack(">QQQ", round_index, low, high)
    return _hkdf(secret, SEED_BYTES, info)


def share_keys(secret: bytes, *, round_index: int, a: int, b: int) -> tuple[bytes, bytes]:
    """The AES-128-GCM keys of the two messages between ``a`` and ``b`` (each seals exactly
    one): (a's to b, b's to a), both from one HKDF output, split by direction."""
    low, high = sorted((a, b))
    info = b"fedbench/secagg/share-encryption" + struct.pack(">QQQ", round_index, low, high)
    both = _hkdf(secret, 32, info)
    upward, downward = both[:16], both[16:]  # low → high, high → low
    return (upward, downward) if a == low else (downward, upward)


def input_key(secret: bytes, *, round_index: int, sender: int) -> bytes:
    """The AES-128 key that authenticates ``sender``'s masked input of one round to the server."""
    info = b"fedbench/secagg/masked-input" + struct.pack(">QQ", round_index, sender)
    return _hkdf(secret, 16, info)


def tag(key: bytes, data: bytes | memoryview) -> bytes:
    """GMAC of ``data`` under ``key`` (each key tags exactly one message, see input_key)."""
    return AESGCM(key).encrypt(_NONCE, b"", data)


def verify(key: bytes, data: bytes | memoryview, received: bytes) -> bool:
    """Whether ``received`` is the GMAC of ``data`` under ``key``."""
    try:
        AESGCM(key).decrypt(_NONCE, received, data)
    except InvalidTag:
        return False
    return True


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Authenticated encryption (AES-GCM); the ciphertext is 16 bytes longer."""
    return AESGCM(key).encrypt(_NONCE, plaintext, associated)


def open_sealed(key: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate; raises ValueError when the ciphertext was altered."""
    try:
        return AESGCM(key).decrypt(_NONCE, ciphertext, associated)
    except InvalidTag:
        raise ValueError("ciphertext failed authentication (altered or misdirected)") from None


def signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key (from the OS CSPRNG, inside OpenSSL)."""
    return Ed25519PrivateKey.generate()


def verifying_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte Ed25519 public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message``."""
    return key.sign(message)


def signature_valid(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` under ``public``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
