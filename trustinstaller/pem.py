"""Certificates in PEM bundles: the one place that finds them."""

from __future__ import annotations

import base64
import binascii
import re

CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.DOTALL
)


def ders(data: bytes) -> list[bytes]:
    """The DER encodings of the certificates in ``data``, in order; bad base64 is skipped."""
    out: list[bytes] = []
    for m in CERTIFICATE.finditer(data):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except binascii.Error:
            continue
    return out
