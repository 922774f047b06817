"""Certificates in PEM bundles: the one place that finds them."""

from __future__ import annotations

import base64
import binascii

BEGIN = b"-----BEGIN CERTIFICATE-----"
END = b"-----END CERTIFICATE-----"


def ders(data: bytes) -> list[bytes]:
    """The DER encodings of the certificates in ``data``, in order; bad base64 is skipped.

    A block is a BEGIN line's marker, whitespace, then everything up to the first END marker
    after it (the regex ``BEGIN\\s+(.*?)END``, DOTALL). Found with ``bytes.find``: an install
    reads the OS bundle's ~150 certificates twice or more, and the regex took twice as long.
    """
    out: list[bytes] = []
    at = 0
    while (begin := data.find(BEGIN, at)) >= 0:
        body = begin + len(BEGIN)
        if not data[body : body + 1].isspace():
            at = begin + 1  # no whitespace after the marker: not a block; look on
            continue
        end = data.find(END, body)
        if end < 0:
            break
        at = end + len(END)
        try:
            out.append(base64.b64decode(b"".join(data[body:end].split()), validate=True))
        except binascii.Error:
            continue
    return out
