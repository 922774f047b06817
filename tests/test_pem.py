"""pem.ders finds what the regex ``BEGIN\\s+(.*?)END`` (DOTALL) finds, in a table and at random."""

from __future__ import annotations

import base64
import binascii
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.certs import make_ca
from trustinstaller import pem

# The definition ders was written from, kept here as the reference it is checked against.
REFERENCE = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.DOTALL)


def reference(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    for m in REFERENCE.finditer(data):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except binascii.Error:
            continue
    return out


B, E = pem.BEGIN, pem.END
CA = make_ca("pem table CA")
BODY = base64.encodebytes(CA.der)

CASES = {
    "one block": (B + b"\n" + BODY + E + b"\n", [CA.der]),
    "two blocks and text around": (b"junk\n" + B + b"\n" + BODY + E + b"\nmid\n" + B + b"\r\n"
                                   + BODY.replace(b"\n", b"\r\n") + E, [CA.der, CA.der]),
    "no whitespace after BEGIN": (B + BODY + E, []),
    "no whitespace, then a good block": (B + b"x" + B + b"\n" + BODY + E, [CA.der]),
    "BEGIN without END": (B + b"\n" + BODY, []),
    "bad base64 skipped, the next kept": (B + b"\n!!!\n" + E + B + b"\n" + BODY + E, [CA.der]),
    "a BEGIN inside a block spoils that block only": (B + b"\n" + B + b"\n" + BODY + E + B
                                                      + b"\n" + BODY + E, [CA.der]),
    "empty body": (B + b"\n" + E, [b""]),
    "END before BEGIN": (E + B + b"\t" + BODY + E, [CA.der]),
    "nothing": (b"", []),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_ders_table(name: str) -> None:
    data, want = CASES[name]
    assert pem.ders(data) == want
    assert reference(data) == want


PIECES = st.sampled_from(
    [B, E, b"\n", b" ", b"\t", b"\r\n", b"\x0b", b"\x0c", b"-", b"=", b"QUJD", b"!", BODY, b"x"]
)


@given(st.lists(PIECES, max_size=24))
@settings(max_examples=400, deadline=None)
def test_ders_finds_what_the_regex_finds(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert pem.ders(data) == reference(data)


def test_ders_of_a_real_bundle_is_the_regex_s() -> None:
    data = b"".join(
        B + b"\n" + base64.encodebytes(make_ca(f"bundle CA {i}").der) + E + b"\n" for i in range(5)
    )
    assert pem.ders(data) == reference(data)
    assert len(pem.ders(data)) == 5
