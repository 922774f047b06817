"""Hypothesis properties: the parsers answer any input with a result or the project's own error."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.certs import NOW, make_ca
from trustinstaller import manifest, validate
from trustinstaller.errors import ManifestError, RefusedError

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:corp-root-AbCdEf"

# Sized so that the whole file runs in well under 20 s on two cores.
FAST = settings(max_examples=200, deadline=None)
FEWER = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MORE = settings(max_examples=400, deadline=None)


# --- manifest.parse ----------------------------------------------------------------------


def parse_or_refuse(data: bytes | str) -> None:
    """parse returns a Manifest or raises ManifestError; anything else propagates and fails."""
    result: manifest.Manifest | ManifestError
    try:
        result = manifest.parse(data)
    except ManifestError as exc:
        result = exc
    if isinstance(result, ManifestError):
        assert str(result).startswith("manifest")
    else:
        assert isinstance(result, manifest.Manifest)
        assert len(result.certificates) <= manifest.MAX_TOTAL


# Every code point, lone surrogates included (st.text leaves them out by default).
ANY_CHAR = st.characters(exclude_categories=())
KEYS = st.sampled_from(
    [
        "toolCertificates",
        "certificates",
        "credentials",
        "location",
        "secretsManager",
        "secretArn",
        "accessKeyId",
        "secretAccessKey",
        "sessionToken",
        "s3",
    ]
)
# Valid ARNs built from parts (st.from_regex is much slower), some of them then broken.
_ARN_PARTS = st.tuples(
    st.sampled_from(["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-xx"]),
    st.sampled_from(["us-east-1", "cn-north-1", "us-gov-west-1", "us-isob-east-1", "US-1", ""]),
    st.sampled_from(["123456789012", "12345678901", "\u0661" * 12]),
    st.text("abcXYZ019/_+=.@- :", min_size=0, max_size=12),
)
ARNS = st.one_of(
    st.just(ARN),
    _ARN_PARTS.map(lambda p: f"arn:{p[0]}:secretsmanager:{p[1]}:{p[2]}:secret:{p[3]}"),
    st.text(max_size=40),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    ARNS,
)
JSONISH = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=12),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=10)), children, max_size=5),
    ),
    max_leaves=12,
)
# Cheap junk to put where a part of a manifest should be.
JUNK = st.one_of(LEAVES, st.lists(LEAVES, max_size=3), st.dictionaries(KEYS, LEAVES, max_size=2))


@st.composite
def shaped_manifests(draw: st.DrawFn) -> Any:
    """Documents with the manifest's own shape, each part either right or replaced by junk."""

    def maybe(right: Any) -> Any:
        return draw(JUNK) if draw(st.integers(0, 5)) == 0 else right

    def entry() -> Any:
        arn = draw(ARNS)
        return maybe({"location": maybe({"secretsManager": maybe({"secretArn": arn})})})

    doc: dict[str, Any] = {}
    for key in ("toolCertificates", "certificates"):
        if draw(st.booleans()):
            doc[key] = maybe([entry() for _ in range(draw(st.integers(0, 11)))])
    if draw(st.booleans()):
        doc["credentials"] = maybe(
            {
                "accessKeyId": maybe("AKIAIOSFODNN7EXAMPLE"),
                "secretAccessKey": maybe("wJalrXUtnFEMI/K7MDENG"),
                "sessionToken": maybe("token"),
            }
        )
    if draw(st.booleans()):
        doc[draw(st.one_of(KEYS, st.text(max_size=10)))] = draw(JUNK)
    return doc


@FAST
@given(st.binary(max_size=2048))
def test_parse_any_bytes(data: bytes) -> None:
    """For any bytes, parse returns a Manifest or raises ManifestError, never anything else."""
    parse_or_refuse(data)


@FAST
@given(st.text(ANY_CHAR, max_size=512))
def test_parse_any_text(data: str) -> None:
    """For any text, lone surrogates included, parse returns a Manifest or raises ManifestError."""
    parse_or_refuse(data)


@FEWER
@given(JSONISH)
def test_parse_any_json_structure(doc: Any) -> None:
    """For any JSON value, parse returns a Manifest or raises ManifestError."""
    parse_or_refuse(json.dumps(doc).encode("utf-8", errors="surrogatepass"))


@FEWER
@given(shaped_manifests())
def test_parse_near_valid_manifests(doc: Any) -> None:
    """For manifests with some parts right and some junk, parse answers with one of the two."""
    parse_or_refuse(json.dumps(doc).encode("utf-8", errors="surrogatepass"))


@FEWER
@given(shaped_manifests(), st.data())
def test_parse_mutated_manifest_text(doc: Any, data: st.DataObject) -> None:
    """Cutting, inserting or overwriting bytes in a manifest never gives another exception."""
    raw = bytearray(json.dumps(doc).encode("utf-8", errors="surrogatepass"))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw)))
        op = data.draw(st.sampled_from(["cut", "insert", "overwrite"]))
        if op == "cut":
            del raw[where : where + data.draw(st.integers(1, 8))]
        elif op == "insert":
            raw[where:where] = data.draw(st.sampled_from([b"[", b"{", b"}", b",", b'"', b"\xff"]))
        elif raw:
            raw[min(where, len(raw) - 1)] = data.draw(st.integers(0, 255))
    parse_or_refuse(bytes(raw))


# --- validate.validate ---------------------------------------------------------------------

_BEFORE, _AFTER = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=30)
CERTS = [
    make_ca(f"prop {k}", key_type=k, fresh_key=False, not_before=_BEFORE, not_after=_AFTER)
    for k in ("ec256", "rsa2048", "ed25519")
]
KEY_PEM = CERTS[0].key_pem
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def validate_or_refuse(text: str) -> None:
    """validate returns a TrustedCA or raises RefusedError; anything else fails the test."""
    result: validate.TrustedCA | RefusedError
    try:
        result = validate.validate(ARN, secret_string=text, secret_binary=None, now=NOW)
    except RefusedError as exc:
        result = exc
    if isinstance(result, RefusedError):
        assert result.arn == ARN
        # Never key material, whatever the mutation did to the secret.
        assert not any(line in str(result) for line in KEY_PEM.splitlines()[1:-2])
    else:
        assert isinstance(result, validate.TrustedCA)
        assert result.fingerprint_sha256 == validate.fingerprint(result.der)


def to_pem(der: bytes) -> str:
    """DER as a 64-column PEM CERTIFICATE block."""
    b64 = base64.b64encode(der).decode()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


@FAST
@given(st.text(ANY_CHAR, max_size=2048))
def test_validate_any_text(text: str) -> None:
    """For any text, validate returns a TrustedCA or raises RefusedError only."""
    validate_or_refuse(text)


@FAST
@given(
    st.sampled_from(CERTS),
    st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "duplicate", "flip", "crlf", "key"]),
            st.integers(0, 10_000),
            st.sampled_from(B64_ALPHABET),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_validate_mutated_pem(cert: Any, edits: list[tuple[str, int, str, str]]) -> None:
    """Deleting, inserting or flipping lines and characters of a good PEM gives only the two."""
    lines = cert.pem.split("\n")
    for op, pos, char, junk in edits:
        i = pos % len(lines)
        if op == "delete":
            del lines[i]
        elif op == "insert":
            lines.insert(i, junk)
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "flip" and lines[i]:
            j = pos % len(lines[i])
            lines[i] = lines[i][:j] + char + lines[i][j + 1 :]
        elif op == "crlf":
            lines[i] += "\r"
        elif op == "key":
            lines[i:i] = KEY_PEM.split("\n")
        if not lines:
            lines = [""]
    validate_or_refuse("\n".join(lines))


@MORE
@given(
    st.sampled_from(CERTS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_validate_mutated_der(cert: Any, flips: list[tuple[int, int]]) -> None:
    """Overwriting bytes of a certificate's DER gives a TrustedCA or a refusal, never a crash."""
    der = bytearray(cert.der)
    for pos, value in flips:
        der[pos % len(der)] = value
    validate_or_refuse(to_pem(bytes(der)))
