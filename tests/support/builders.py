"""Builders the suites share: manifests, secret names, validated CAs, a journal recorder, and
Chromium policy files."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.support.certs import Issued
from trustinstaller.documents import Entry
from trustinstaller.validate import TrustedCA, validate

NOW = dt.datetime.now(dt.UTC)


def manifest(tool: list[str] = (), session: list[str] = (), **extra: Any) -> bytes:  # type: ignore[assignment]
    """A manifest document naming these ARNs."""

    def entries(arns: list[str]) -> list[dict[str, Any]]:
        return [{"location": {"secretsManager": {"secretArn": a}}} for a in arns]

    return json.dumps(
        {"toolCertificates": entries(tool), "certificates": entries(session), **extra}
    ).encode()


def unique(prefix: str = "ca") -> str:
    """A secret name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def trusted(ca: Issued) -> TrustedCA:
    """The validated form of a test CA, as the installer hands it to a store."""
    return validate("test.pem", secret_string=ca.pem, secret_binary=None, now=NOW)


class Journal:
    """A recorder that keeps every entry in memory."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def __call__(self, *entries: Entry) -> None:
        self.entries.extend(entries)


def b64(ca: Issued) -> str:
    """The policy's form of a certificate: base64 DER."""
    return base64.b64encode(ca.cert.public_bytes(serialization.Encoding.DER)).decode()


def policy(**policies: object) -> bytes:
    """A policy file setting ``policies``."""
    return json.dumps(policies).encode()


def snapshot(top: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``top`` with its mode and bytes: what an exact rollback must restore."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for p in sorted(top.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(top))] = (st.st_mode, p.read_bytes() if p.is_file() else None)
    return out
