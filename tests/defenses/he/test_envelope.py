"""Tests for fedbench.defenses.he.envelope: the message header and its refusals."""

from __future__ import annotations

import pytest

from fedbench.defenses.he.envelope import (
    HEADER_BYTES,
    EnvelopeError,
    Header,
    Scheme,
    read_header,
)

KEY = bytes(range(16))


def test_header_round_trip() -> None:
    head = Header(Scheme.CKKS, KEY, dim=10**6, clients=100, chunks=245)
    blob = head.pack()
    assert len(blob) == HEADER_BYTES == 38
    assert read_header(blob + b"rest", Scheme.CKKS, KEY, where="client 1") == head


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"FBHE", "message of 4 bytes is shorter than its header"),
        (b"XXXX" + Header(Scheme.CKKS, KEY, 1, 1, 1).pack()[4:], "not a fedbench HE message"),
        (Header(Scheme.PAILLIER, KEY, 1, 1, 1).pack(), "message is PAILLIER, expected CKKS"),
        (Header(Scheme.CKKS, b"\xff" * 16, 1, 1, 1).pack(),
         f"ciphertext was made under another key .key id {'ff' * 16}, this CKKS context has "
         f"{KEY.hex()}"),
    ],
)
def test_bad_headers_name_the_sender_and_the_problem(blob: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=f"^client 4: {message}"):
        read_header(blob, Scheme.CKKS, KEY, where="client 4")


def test_non_bytes_payload_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="client 2: message is list, expected bytes"):
        read_header([1, 2], Scheme.PAILLIER, KEY, where="client 2")  # type: ignore[arg-type]
