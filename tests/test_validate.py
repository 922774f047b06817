"""validate.validate over tables of certificates made in the test, with ``now`` injected."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ObjectIdentifier

from tests.support.certs import NOW, Issued, KeyType, key, make_ca
from trustinstaller import validate
from trustinstaller.errors import RefusedError

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:corp-root-AbCdEf"
NOT_BEFORE = NOW - dt.timedelta(days=30)
NOT_AFTER = NOW + dt.timedelta(days=365)
ONE_SECOND = dt.timedelta(seconds=1)


@functools.cache
def ca(
    cn: str = "test root",
    key_type: KeyType = "ec256",
    *,
    basic_constraints: bool | None = True,
    not_before: dt.datetime = NOT_BEFORE,
    not_after: dt.datetime = NOT_AFTER,
    issuer: str | None = None,
) -> Issued:
    """A certificate valid around NOW; ``issuer`` names another CA (made by ``ca``) to sign it."""
    # Slow keys (RSA, DSA) are shared between certificates; EC and Ed25519 ones are fresh.
    fresh = key_type.startswith(("ec", "ed"))
    return make_ca(
        cn,
        key_type=key_type,
        fresh_key=fresh,
        not_before=not_before,
        not_after=not_after,
        basic_constraints=basic_constraints,
        issuer=ca(issuer) if issuer else None,
    )


def run(secret: str, *, now: dt.datetime = NOW) -> validate.TrustedCA:
    """Validate a string secret as the installer does."""
    return validate.validate(ARN, secret_string=secret, secret_binary=None, now=now)


def to_pem(der: bytes, label: str = "CERTIFICATE", width: int = 64) -> str:
    """DER wrapped as a PEM block with ``width``-column lines."""
    b64 = base64.b64encode(der).decode()
    body = "\n".join(b64[i : i + width] for i in range(0, len(b64), width))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def patched(der: bytes, old: bytes, new: bytes) -> bytes:
    """``der`` with the first ``old`` replaced by ``new`` (same length: lengths stay valid)."""
    assert len(old) == len(new)
    assert old in der
    return der.replace(old, new, 1)


def body_windows(text: str, width: int = 16) -> set[str]:
    """Every ``width``-character run of every base64-looking line of ``text``."""
    out: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("-----") or len(line) < width:
            continue
        out.update(line[i : i + width] for i in range(len(line) - width + 1))
    return out


def assert_quotes_nothing(message: str, *secrets: str) -> None:
    """No 16-character run of any secret's base64 lines appears in ``message``."""
    leaked = [w for s in secrets for w in body_windows(s) if w in message]
    assert not leaked, f"message quotes secret content: {leaked[:3]}"


# --- accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_type",
    [
        pytest.param("rsa2048", id="rsa-2048"),
        pytest.param("rsa3072", id="rsa-3072"),
        pytest.param("ec256", id="ec-p256"),
        pytest.param("ec384", id="ec-p384"),
        pytest.param("ed25519", id="ed25519"),
    ],
)
def test_valid_roots_are_accepted_without_warnings(key_type: KeyType) -> None:
    """A self-signed CA with a strong key, valid now, is accepted as it is, with no warning."""
    issued = ca(f"root {key_type}", key_type)
    result = run(issued.pem)
    assert result.der == issued.der
    assert result.fingerprint_sha256 == hashlib.sha256(issued.der).hexdigest()
    assert result.subject == f"CN=root {key_type}"
    assert (result.not_before, result.not_after) == (NOT_BEFORE, NOT_AFTER)
    assert result.warnings == ()
    assert result.pem == issued.pem


@pytest.mark.parametrize(
    ("transform"),
    [
        pytest.param(lambda p: p.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda p: "\n\n  \t" + p + "\r\n  \n\t ", id="whitespace-around"),
        pytest.param(lambda p: p.rstrip("\n"), id="no-final-newline"),
        pytest.param(lambda p: p.replace("\n", " \n"), id="trailing-spaces-on-lines"),
        pytest.param(lambda p: to_pem(ca().der, width=76), id="rewrapped-at-76-columns"),
        pytest.param(lambda p: to_pem(ca().der, width=10_000), id="one-long-line"),
    ],
)
def test_harmless_layouts_are_accepted(transform: Callable[[str], str]) -> None:
    """CRLF, whitespace around the block and other line layouts give the same certificate."""
    result = run(transform(ca().pem))
    assert result.der == ca().der
    assert result.pem == ca().pem  # stored canonically, whatever was pasted


@pytest.mark.parametrize(
    ("now", "fragment"),
    [
        pytest.param(NOT_BEFORE, None, id="exactly-at-notBefore"),
        pytest.param(NOT_AFTER, None, id="exactly-at-notAfter"),
        pytest.param(
            NOT_BEFORE - ONE_SECOND,
            "not valid yet: notBefore is 2026-10-29T12:00:00Z, now is 2026-10-29T11:59:59Z",
            id="one-second-before-notBefore",
        ),
        pytest.param(
            NOT_AFTER + ONE_SECOND,
            "expired: notAfter was 2027-11-28T12:00:00Z, now is 2027-11-28T12:00:01Z",
            id="one-second-after-notAfter",
        ),
        pytest.param(NOT_AFTER + dt.timedelta(days=3650), "expired", id="long-expired"),
        pytest.param(
            (NOT_BEFORE - ONE_SECOND).astimezone(dt.timezone(dt.timedelta(hours=5))),
            "not valid yet",
            id="now-in-another-timezone",
        ),
    ],
)
def test_validity_period_boundaries(now: dt.datetime, fragment: str | None) -> None:
    """notBefore <= now <= notAfter is accepted, boundaries included; a second outside is not."""
    if fragment is None:
        assert run(ca().pem, now=now).warnings == ()
        return
    with pytest.raises(RefusedError, match=fragment):
        run(ca().pem, now=now)


@pytest.mark.parametrize(
    ("issued", "warnings"),
    [
        pytest.param(
            lambda: ca("leafish", basic_constraints=False),
            ["not a CA (basicConstraints CA:FALSE); installed with a warning"],
            id="ca-false",
        ),
        pytest.param(
            lambda: ca("no bc", basic_constraints=None),
            [
                "not a CA (no basicConstraints extension); installed with a warning",
                f"{validate.STRICT_CLIENTS} will refuse it: no basicConstraints extension "
                "('invalid CA certificate'); installed with a warning",
            ],
            id="no-basic-constraints",
        ),
        pytest.param(
            lambda: ca("intermediate", issuer="test root"),
            [
                "not self-signed (issuer differs from subject or its signature does not verify); "
                "installed with a warning"
            ],
            id="issued-by-another-ca",
        ),
        pytest.param(
            # Same name as its issuer, but the issuer's key signed it: the signature check tells.
            lambda: ca("test root", "ec384", issuer="test root"),
            [
                "not self-signed (issuer differs from subject or its signature does not verify); "
                "installed with a warning"
            ],
            id="issuer-name-equal-but-other-key",
        ),
        pytest.param(
            lambda: ca("leaf of another", basic_constraints=False, issuer="test root"),
            [
                "not a CA (basicConstraints CA:FALSE); installed with a warning",
                "not self-signed (issuer differs from subject or its signature does not verify); "
                "installed with a warning",
            ],
            id="both-warnings",
        ),
    ],
)
def test_odd_but_acceptable_certificates_carry_warnings(
    issued: Callable[[], Issued], warnings: list[str]
) -> None:
    """A non-CA or a certificate that is not self-signed is accepted, with each warning listed."""
    assert list(run(issued().pem).warnings) == warnings


def test_trusted_ca_repr_hides_the_certificate() -> None:
    """repr() of a TrustedCA shows the fingerprint but not the DER bytes."""
    result = run(ca().pem)
    assert result.fingerprint_sha256 in repr(result)
    assert "der=" not in repr(result)


# --- refused ---------------------------------------------------------------------------


def private_keys() -> dict[str, str]:
    """The same EC and RSA keys in every PEM form a secret might carry them in."""
    ec_key, rsa_key = key("ec256"), key("rsa2048")
    f = serialization.PrivateFormat
    e = serialization.Encoding.PEM

    def dump(k: object, fmt: serialization.PrivateFormat, enc: object = None) -> str:
        algo = enc or serialization.NoEncryption()
        return k.private_bytes(e, fmt, algo).decode()  # type: ignore[attr-defined]

    return {
        "PRIVATE KEY": dump(ec_key, f.PKCS8),
        "RSA PRIVATE KEY": dump(rsa_key, f.TraditionalOpenSSL),
        "EC PRIVATE KEY": dump(ec_key, f.TraditionalOpenSSL),
        "ENCRYPTED PRIVATE KEY": dump(
            ec_key, f.PKCS8, serialization.BestAvailableEncryption(b"pw")
        ),
        "OPENSSH PRIVATE KEY": dump(ec_key, f.OpenSSH),
    }


KEY_LABELS = list(private_keys())


@pytest.mark.parametrize("label", KEY_LABELS)
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda cert, k: k, id="alone"),
        pytest.param(lambda cert, k: cert + k, id="after-the-cert"),
        pytest.param(lambda cert, k: k + cert, id="before-the-cert"),
        pytest.param(lambda cert, k: k.replace("\n", "\r\n") + "\r\n" + cert, id="crlf"),
        pytest.param(lambda cert, k: cert + k.split("-----END")[0], id="key-without-end-line"),
    ],
)
def test_private_key_is_refused_without_quoting_it(
    label: str, layout: Callable[[str, str], str]
) -> None:
    """Any PRIVATE KEY block, alone or beside the certificate, is refused and never quoted."""
    key_pem = private_keys()[label]
    assert f"-----BEGIN {label}-----" in key_pem
    with pytest.raises(RefusedError) as info:
        run(layout(ca().pem, key_pem))
    message = str(info.value)
    assert "contains a private key" in message
    assert "rotate that key" in message
    assert_quotes_nothing(message, key_pem)
    assert_quotes_nothing(repr(info.value), key_pem)


def der_as_text() -> str:
    """DER bytes that came back as a string secret (one char per byte)."""
    return ca().der.decode("latin-1")


def bare_base64() -> str:
    """The certificate's base64, with no BEGIN/END lines."""
    return to_pem(ca().der).split("\n", 1)[1].rsplit("-----END", 1)[0]


def cert_block(body: str) -> str:
    """A CERTIFICATE block around ``body``."""
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def negative_serial() -> str:
    """A certificate whose serial number is negative (RFC 5280 says positive)."""
    issued = make_ca("neg", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    n = issued.cert.serial_number
    # DER's INTEGER content: two's complement, so a leading 0 byte when the top bit is set.
    serial = n.to_bytes(n.bit_length() // 8 + 1, "big")
    enc = bytes([2, len(serial)]) + serial
    flipped = bytes([2, len(serial), serial[0] | 0x80]) + serial[1:]
    return to_pem(patched(issued.der, enc, flipped))


def with_version(v: int) -> str:
    """A certificate whose version field says ``v`` (X.509 knows 0, 1, 2)."""
    return to_pem(patched(ca().der, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01" + bytes([v])))


# id-ecPublicKey (1.2.840.10045.2.1) and prime256v1 (1.2.840.10045.3.1.7), DER-encoded.
EC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")
P256_OID = bytes.fromhex("06082a8648ce3d030107")


def bad_utf8_issuer() -> str:
    """A certificate whose issuer CN is not valid UTF-8 (cryptography reads names lazily)."""
    issued = make_ca("badname-x", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    return to_pem(patched(issued.der, b"badname-x", b"badname-\xff"))


def oid_der(dotted: str) -> bytes:
    """The DER encoding of an OBJECT IDENTIFIER (arcs under 128 after the first two)."""
    first, second, *rest = (int(a) for a in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body.extend(reversed(chunk))
    return bytes([6, len(body)]) + bytes(body)


def repeated_extension() -> str:
    """A certificate carrying the same extension twice (the builder refuses to make one)."""
    one, two = "1.3.6.1.4.1.55555.1", "1.3.6.1.4.1.55555.2"
    k = key("ec256")
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "dup ext")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())  # type: ignore[attr-defined]
        .serial_number(1000)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(one), b"\x05\x00"), False)
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(two), b"\x05\x00"), False)
        .sign(k, hashes.SHA256())  # type: ignore[arg-type]
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return to_pem(patched(der, oid_der(two), oid_der(one)))


REFUSED: list[object] = [
    # Not a string secret, or too big.
    pytest.param(lambda: "", "is not PEM: expected one '-----BEGIN CERTIFICATE-----' block",
                 id="empty"),
    pytest.param(lambda: "x" * 65_537, "is 65537 bytes, over the 65536-byte secret limit",
                 id="65537-bytes"),
    pytest.param(lambda: "\u20ac" * 21_846, "is 65538 bytes, over the 65536-byte secret limit",
                 id="size-counted-in-utf8-bytes-not-characters"),
    pytest.param(lambda: ca().pem + " " * (65_537 - len(ca().pem)), "is 65537 bytes",
                 id="valid-cert-padded-to-65537"),
    # Not PEM.
    pytest.param(der_as_text, "contains non-ASCII characters", id="der-as-string"),
    pytest.param(bare_base64, "is not PEM", id="bare-base64"),
    pytest.param(lambda: base64.b64encode(ca().pem.encode()).decode(), "is not PEM",
                 id="base64-of-pem"),
    # Not exactly one CERTIFICATE block.
    pytest.param(lambda: ca().pem + ca("second").pem, "holds 2 certificates; store exactly one",
                 id="two-certificates"),
    pytest.param(lambda: ca().pem + ca().pem, "holds 2 certificates", id="same-cert-twice"),
    pytest.param(lambda: ca("a").pem + ca("b").pem + ca("c").pem, "holds 3 certificates",
                 id="three-certificates"),
    pytest.param(lambda: to_pem(ca().der, "TRUSTED CERTIFICATE"),
                 "holds a PEM block of type 'TRUSTED CERTIFICATE'; expected only CERTIFICATE",
                 id="openssl-trusted-certificate"),
    pytest.param(lambda: ca().pem + to_pem(b"crl", "X509 CRL"),
                 "holds a PEM block of type 'X509 CRL'", id="cert-and-crl"),
    pytest.param(lambda: ca().pem + "-----BEGIN MIIBkTCB+wIJAKHHIG...-----\n",
                 "holds a PEM block of type (an unrecognised label)",
                 id="odd-label-is-not-quoted"),
    # Text outside the block, or a broken frame.
    pytest.param(lambda: "Here is our CA:\n" + ca().pem, "text outside the block",
                 id="text-before"),
    pytest.param(lambda: ca().pem + "-- \nsent from my phone\n", "text outside the block",
                 id="text-after"),
    pytest.param(lambda: "Bag Attributes\n    friendlyName: ca\n" + ca().pem,
                 "text outside the block", id="openssl-bag-attributes"),
    pytest.param(lambda: ca().pem.split("-----END")[0], "a missing END line",
                 id="no-end-line"),
    pytest.param(lambda: ca().pem.replace("END CERTIFICATE", "END X509 CERTIFICATE"),
                 "not exactly one well-formed PEM CERTIFICATE block", id="mismatched-end"),
    pytest.param(lambda: ca().pem.replace("-----\n", "-----", 1), "not exactly one well-formed",
                 id="body-on-the-begin-line"),
    pytest.param(lambda: ca().pem.replace("\n", "\r"), "not exactly one well-formed",
                 id="cr-only-line-endings"),
    # Garbage inside the block.
    pytest.param(lambda: cert_block(""), "the CERTIFICATE block is not base64", id="empty-body"),
    pytest.param(lambda: cert_block("not base64 at all!"), "the CERTIFICATE block is not base64",
                 id="not-base64"),
    pytest.param(lambda: cert_block("Proc-Type: 4,ENCRYPTED\n\n" + bare_base64()),
                 "the CERTIFICATE block is not base64", id="pem-headers"),
    pytest.param(lambda: cert_block("QUJD=RA=="), "the CERTIFICATE block is not base64",
                 id="padding-in-the-middle-of-a-line"),
    pytest.param(lambda: cert_block("QUJDRA=\nQUJD"), "the CERTIFICATE block is not valid base64",
                 id="padding-in-the-middle-of-the-body"),
    pytest.param(lambda: cert_block("QUJDR"), "the CERTIFICATE block is not valid base64",
                 id="bad-length"),
    pytest.param(lambda: to_pem(b"hello, world"),
                 "the CERTIFICATE block is not a valid X.509 certificate", id="not-der"),
    pytest.param(lambda: to_pem(ca().der[:-10]), "is not a valid X.509 certificate",
                 id="truncated-der"),
    pytest.param(lambda: to_pem(ca().der + b"\0\0"), "is not a valid X.509 certificate",
                 id="trailing-bytes-after-der"),
    pytest.param(lambda: to_pem(ca().key_pem.encode()), "is not a valid X.509 certificate",
                 id="random-der-shaped-text"),
    # Non-ASCII.
    pytest.param(lambda: ca().pem + "\u00a0", "contains non-ASCII characters",
                 id="no-break-space-after"),
    pytest.param(lambda: "\ufeff" + ca().pem, "contains non-ASCII characters", id="bom-before"),
    pytest.param(lambda: ca().pem.replace("A", "\u0410", 1), "contains non-ASCII characters",
                 id="cyrillic-a-in-the-body"),
    pytest.param(lambda: ca().pem.replace("\n", "\u2028"), "contains non-ASCII characters",
                 id="unicode-line-separators"),
    pytest.param(lambda: ca().pem + "\ud800", "contains non-ASCII characters",
                 id="lone-surrogate"),
    # Certificates cryptography can read only in part.
    pytest.param(negative_serial, "breaks RFC 5280", id="negative-serial"),
    pytest.param(lambda: with_version(7), "is not a valid X.509 certificate",
                 id="unknown-x509-version"),
    pytest.param(lambda: to_pem(patched(ca().der, EC_KEY_OID, EC_KEY_OID[:-1] + b"\x63")),
                 "its public key is malformed or of an unsupported type", id="unknown-key-type"),
    pytest.param(lambda: to_pem(patched(ca().der, P256_OID, P256_OID[:-1] + b"\x63")),
                 "its public key is malformed or of an unsupported type", id="unknown-curve"),
    pytest.param(bad_utf8_issuer, "has a malformed subject or issuer name",
                 id="issuer-not-utf8"),
    pytest.param(repeated_extension, "has a malformed or repeated extension",
                 id="repeated-extension"),
    # Weak or unwanted keys.
    pytest.param(lambda: ca("rsa1024", "rsa1024").pem,
                 "weak key: RSA 1024 bits, at least 2048 are required", id="rsa-1024"),
    pytest.param(lambda: ca("p224", "ec224").pem,
                 "weak key: EC 224 bits, at least 256 are required", id="ec-p224"),
    pytest.param(lambda: ca("dsa", "dsa2048").pem,
                 "DSA keys are not accepted", id="dsa-2048"),
    # Validity.
    pytest.param(lambda: ca("old", not_before=NOW - dt.timedelta(days=400),
                            not_after=NOW - dt.timedelta(days=1)).pem,
                 "expired: notAfter was 2026-11-27T12:00:00Z", id="expired"),
    pytest.param(lambda: ca("future", not_before=NOW + dt.timedelta(days=1),
                            not_after=NOW + dt.timedelta(days=400)).pem,
                 "not valid yet: notBefore is 2026-11-29T12:00:00Z", id="not-yet-valid"),
]  # fmt: skip


@pytest.mark.parametrize(("secret", "fragment"), REFUSED)
def test_refused_secrets(secret: Callable[[], str], fragment: str) -> None:
    """Anything but one good PEM certificate is refused, naming the ARN and the rule."""
    text = secret()
    with pytest.raises(RefusedError) as info:
        run(text)
    assert info.value.arn == ARN
    assert info.value.kind == "refused"
    assert str(info.value).startswith(f"secret {ARN}: ")
    assert fragment in str(info.value)
    assert_quotes_nothing(str(info.value), text)


def test_65536_bytes_is_not_refused_for_size() -> None:
    """A secret of exactly 65,536 bytes is within the limit: a padded certificate is accepted."""
    text = ca().pem + " " * (validate.MAX_SECRET_BYTES - len(ca().pem))
    assert len(text.encode()) == 65_536
    assert run(text).der == ca().der


@pytest.mark.parametrize(
    ("binary", "string", "fragment"),
    [
        pytest.param(b"\x30\x82binary", None, "must be a string secret", id="binary"),
        pytest.param(None, None, "has no SecretString value", id="neither"),
        pytest.param(b"", None, "must be a string secret", id="empty-binary"),
    ],
)
def test_binary_secrets_are_refused(binary: bytes | None, string: None, fragment: str) -> None:
    """A SecretBinary secret, even one holding a good certificate, is refused as not a string."""
    with pytest.raises(RefusedError, match=fragment):
        validate.validate(ARN, secret_string=string, secret_binary=binary, now=NOW)


@pytest.mark.parametrize(
    "binary",
    [
        pytest.param(lambda: ca().der, id="der"),
        pytest.param(lambda: ca().pem.encode(), id="pem-bytes"),
    ],
)
def test_good_certificate_as_binary_is_still_refused(binary: Callable[[], bytes]) -> None:
    """A good certificate stored as SecretBinary is refused with 'must be a string secret'."""
    with pytest.raises(RefusedError, match="must be a string secret"):
        validate.validate(ARN, secret_string=None, secret_binary=binary(), now=NOW)


def test_a_name_outside_rfc5280_length_limits_is_a_warning_not_an_escaping_warning() -> None:
    """A 10-character countryName installs with our warning; cryptography's own never escapes.

    pytest turns warnings into errors here, as Hypothesis found with a mutated certificate:
    a warning raised while the name is parsed must not leave validate() as an exception.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    with pytest.warns(UserWarning, match="length"):  # cryptography warns as it builds it too
        attr = x509.NameAttribute(NameOID.COUNTRY_NAME, "TEN CHARS.", _validate=False)
    name = x509.Name([attr])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    ca = validate.validate("t.pem", secret_string=pem, secret_binary=None, now=NOW)
    assert ca.subject == "C=TEN CHARS."
    assert "breaks RFC 5280 (Attribute's length must be >= 2 and <= 2" in ca.warnings[0]
