"""manifest.parse over tables of accepted and refused documents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trustinstaller import manifest
from trustinstaller.documents import Source
from trustinstaller.errors import ManifestError

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:corp-root-AbCdEf"
ARN2 = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:proxy-ca-XyZ123"
# Distinctive credential values: no message or repr may ever contain them.
KEY_ID = "ASIAQUITEDISTINCT01"
SECRET = "SeCrEt/Access+Key=distinctive-7f3a9c"
TOKEN = "SeSsIoN-token-distinctive-b81d2e//=="


def entry(arn: Any = ARN) -> dict[str, Any]:
    """One certificate entry in the CreateBrowser shape."""
    return {"location": {"secretsManager": {"secretArn": arn}}}


def doc(**top: Any) -> bytes:
    """A manifest document with these top-level keys."""
    return json.dumps(top).encode()


def arn_doc(arn: Any) -> bytes:
    """A manifest naming one ARN at session level."""
    return doc(certificates=[entry(arn)])


def creds(**kw: Any) -> dict[str, Any]:
    """Valid credentials, with some keys replaced (or removed when given None)."""
    base: dict[str, Any] = {"accessKeyId": KEY_ID, "secretAccessKey": SECRET, "sessionToken": TOKEN}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


# --- accepted ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"{}", [], id="empty-object"),
        pytest.param(doc(toolCertificates=[]), [], id="empty-tool-list"),
        pytest.param(doc(certificates=[entry()]), [("session", 0, ARN)], id="session-only"),
        pytest.param(doc(toolCertificates=[entry()]), [("tool", 0, ARN)], id="tool-only"),
        pytest.param(
            # Session-level first in the document: tool-level still comes first in the result.
            b'{"certificates": ['
            + json.dumps(entry(ARN2)).encode()
            + b'], "toolCertificates": ['
            + json.dumps(entry(ARN)).encode()
            + b"]}",
            [("tool", 0, ARN), ("session", 0, ARN2)],
            id="tool-level-first-whatever-the-key-order",
        ),
        pytest.param(
            doc(toolCertificates=[entry()] * 10, certificates=[entry(ARN2)] * 10),
            [("tool", i, ARN) for i in range(10)] + [("session", i, ARN2) for i in range(10)],
            id="ten-per-level-twenty-in-all",
        ),
        pytest.param(b"  \n\t{}\r\n ", [], id="whitespace-around-the-document"),
    ],
)
def test_accepted_manifests(data: bytes, expected: list[tuple[str, int, str]]) -> None:
    """An accepted manifest lists its certificates tool-level first, each with its own index."""
    parsed = manifest.parse(data)
    assert [(r.level, r.index, r.arn) for r in parsed.certificates] == expected
    assert parsed.credentials is None


def test_str_input_is_parsed_like_its_utf8_bytes() -> None:
    """parse accepts text as well as bytes, and gives the same result."""
    data = doc(toolCertificates=[entry()])
    assert manifest.parse(data.decode()) == manifest.parse(data)


def test_ref_path_and_status_form() -> None:
    """A reference names its place in the manifest and serialises without the partition."""
    ref = manifest.parse(doc(toolCertificates=[entry(ARN2), entry()])).certificates[1]
    assert ref.path == "toolCertificates[1]"
    assert ref.source() == Source("tool", 1, ARN)


@pytest.mark.parametrize(
    ("arn", "partition", "region", "account"),
    [
        pytest.param(ARN, "aws", "us-east-1", "123456789012", id="aws"),
        pytest.param(
            "arn:aws-cn:secretsmanager:cn-north-1:000000000000:secret:ca-AbCdEf",
            "aws-cn", "cn-north-1", "000000000000", id="aws-cn",
        ),
        pytest.param(
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:ca",
            "aws-us-gov", "us-gov-west-1", "111122223333", id="aws-us-gov",
        ),
        pytest.param(
            "arn:aws-iso:secretsmanager:us-iso-east-1:111122223333:secret:ca",
            "aws-iso", "us-iso-east-1", "111122223333", id="aws-iso",
        ),
        pytest.param(
            "arn:aws-iso-b:secretsmanager:us-isob-east-1:111122223333:secret:ca",
            "aws-iso-b", "us-isob-east-1", "111122223333", id="aws-iso-b",
        ),
        pytest.param(
            "arn:aws-iso-f:secretsmanager:us-isof-south-1:111122223333:secret:ca",
            "aws-iso-f", "us-isof-south-1", "111122223333", id="aws-iso-f",
        ),
        pytest.param(
            "arn:aws-iso-e:secretsmanager:eu-isoe-west-1:111122223333:secret:ca",
            "aws-iso-e", "eu-isoe-west-1", "111122223333", id="aws-iso-e",
        ),
        pytest.param(
            "arn:aws:secretsmanager:ap-southeast-2:123456789012:secret:team/pki/root_ca+1=x.y@z-Ab",
            "aws", "ap-southeast-2", "123456789012", id="every-allowed-name-character",
        ),
        pytest.param(
            "arn:aws:secretsmanager:eu-central-1:123456789012:secret:partial-arn-no-suffix",
            "aws", "eu-central-1", "123456789012", id="partial-arn-without-random-suffix",
        ),
    ],
)  # fmt: skip
def test_accepted_arns(arn: str, partition: str, region: str, account: str) -> None:
    """A Secrets Manager ARN in any partition is accepted, and its region comes from the ARN."""
    [ref] = manifest.parse(arn_doc(arn)).certificates
    assert (ref.arn, ref.partition, ref.region, ref.account) == (arn, partition, region, account)


@pytest.mark.parametrize(
    ("given", "token"),
    [
        pytest.param(creds(), TOKEN, id="with-session-token"),
        pytest.param(creds(sessionToken=None), None, id="session-token-optional"),
    ],
)
def test_accepted_credentials(given: dict[str, Any], token: str | None) -> None:
    """Credentials need an access key id and a secret; the session token is optional."""
    parsed = manifest.parse(doc(credentials=given))
    assert parsed.credentials == manifest.Credentials(KEY_ID, SECRET, token)


def test_reprs_never_show_credentials() -> None:
    """repr() and str() of a Manifest and its Credentials show none of the credential values."""
    parsed = manifest.parse(doc(toolCertificates=[entry()], credentials=creds()))
    assert parsed.credentials is not None
    for text in (repr(parsed), str(parsed), repr(parsed.credentials), str(parsed.credentials)):
        for value in (KEY_ID, SECRET, TOKEN):
            assert value not in text
    assert repr(parsed.credentials) == "Credentials(<redacted>)"


# --- refused ---------------------------------------------------------------------------

MIB = 1024 * 1024

REFUSED = [
    # Limits.
    pytest.param(doc(toolCertificates=[entry()] * 11), "toolCertificates",
                 "has 11 certificates; at most 10 are allowed", id="eleven-tool"),
    pytest.param(doc(certificates=[entry()] * 11), "certificates",
                 "has 11 certificates; at most 10 are allowed", id="eleven-session"),
    pytest.param(doc(certificates=[{}] * 100_000), "certificates",
                 "has 100000 certificates", id="huge-array-is-counted-not-walked"),
    # ARNs.
    pytest.param(arn_doc("arn:aws:s3:::my-bucket/ca.pem"), "certificates[0].location."
                 "secretsManager.secretArn", "is not a Secrets Manager secret ARN", id="s3-arn"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:12345678901:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="eleven-digit-account"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:1234567890123:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="thirteen-digit-account"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:123456789012:ca"),
                 None, "is not a Secrets Manager secret ARN", id="missing-secret-colon"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:123456789012:secret:"),
                 None, "is not a Secrets Manager secret ARN", id="empty-name"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:123456789012:secret:a b"),
                 None, "is not a Secrets Manager secret ARN", id="space-in-name"),
    pytest.param(arn_doc("arn:aws-xx:secretsmanager:us-east-1:123456789012:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="unknown-partition"),
    pytest.param(arn_doc("arn:aws:secretsmanager:US-EAST-1:123456789012:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="upper-case-region"),
    pytest.param(arn_doc("arn:aws:secretsmanager::123456789012:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="no-region"),
    pytest.param(arn_doc("arn:aws:kms:us-east-1:123456789012:key/abcd"),
                 None, "is not a Secrets Manager secret ARN", id="kms-arn"),
    pytest.param(arn_doc(ARN + "\n"), None, "is not a Secrets Manager secret ARN",
                 id="trailing-newline"),
    pytest.param(arn_doc(" " + ARN), None, "is not a Secrets Manager secret ARN",
                 id="leading-space"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:\u0661\u0662\u0663\u0664\u0665"
                         "\u0666\u0667\u0668\u0669\u0660\u0661\u0662:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="arabic-indic-digit-account"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-\uff11:123456789012:secret:ca"),
                 None, "is not a Secrets Manager secret ARN", id="fullwidth-digit-region"),
    pytest.param(arn_doc("arn:aws:secretsmanager:us-east-1:123456789012:secret:" + "x" * 600),
                 None, "'... (653 characters) is not a Secrets Manager",
                 id="long-arn-quoted-short"),
    # Location types.
    pytest.param(doc(certificates=[{"location": {"s3": {"bucket": "b", "key": "k"}}}]),
                 "certificates[0].location",
                 "location type 's3': only secretsManager locations are supported",
                 id="s3-location"),
    pytest.param(doc(toolCertificates=[{"location": {"secretsManager": {"secretArn": ARN},
                                                     "inline": "-----BEGIN"}}]),
                 "toolCertificates[0].location",
                 "location type 'inline': only secretsManager locations are supported",
                 id="second-location-beside-secrets-manager"),
    pytest.param(doc(certificates=[{"location": {}}]), "certificates[0].location",
                 "missing key 'secretsManager'", id="empty-location"),
    # Unknown keys, at every level.
    pytest.param(doc(toolCertificate=[]), "", "unknown key 'toolCertificate' (allowed: "
                 "certificates, credentials, toolCertificates)", id="unknown-top-key"),
    pytest.param(doc(certificates=[{**entry(), "name": "x"}]), "certificates[0]",
                 "unknown key 'name' (allowed: location)", id="unknown-entry-key"),
    pytest.param(doc(certificates=[{"location": {"secretsManager": {"secretArn": ARN,
                                                                    "versionStage": "X"}}}]),
                 "certificates[0].location.secretsManager",
                 "unknown key 'versionStage' (allowed: secretArn)",
                 id="unknown-secrets-manager-key"),
    pytest.param(doc(credentials={**creds(), "region": "us-east-1"}), "credentials",
                 "unknown key 'region' (allowed: accessKeyId, secretAccessKey, sessionToken)",
                 id="unknown-credentials-key"),
    # A key that differs from an allowed one only in case is refused, and the hint names it.
    pytest.param(doc(Certificates=[entry()]), "", "unknown key 'Certificates' (allowed: "
                 "certificates, credentials, toolCertificates); keys are case-sensitive: did "
                 "you mean 'certificates'?", id="key-in-other-case"),
    pytest.param(doc(certificates=[{"Location": entry()["location"]}]), "certificates[0]",
                 "did you mean 'location'?", id="entry-key-in-other-case"),
    pytest.param(doc(credentials={**creds(), "accesskeyid": "x"}), "credentials",
                 "did you mean 'accessKeyId'?", id="credentials-key-in-other-case"),
    pytest.param(doc(**{"k" * 1000: 1}), "", "... (1000 characters) (allowed:",
                 id="long-unknown-key-quoted-short"),
    # Missing keys.
    pytest.param(doc(certificates=[{}]), "certificates[0]", "missing key 'location'",
                 id="entry-without-location"),
    pytest.param(doc(certificates=[{"location": {"secretsManager": {}}}]),
                 "certificates[0].location.secretsManager", "missing key 'secretArn'",
                 id="secrets-manager-without-arn"),
    # Wrong types.
    pytest.param(b"[]", "", "the top level must be an object, not a list", id="top-list"),
    pytest.param(b'"{}"', "", "the top level must be an object, not a string", id="top-string"),
    pytest.param(b"null", "", "the top level must be an object, not null", id="top-null"),
    pytest.param(doc(toolCertificates={}), "toolCertificates",
                 "must be a list, not an object", id="tool-list-is-object"),
    pytest.param(doc(certificates=ARN), "certificates", "must be a list, not a string",
                 id="session-list-is-string"),
    pytest.param(doc(certificates=None), "certificates", "must be a list, not null",
                 id="session-list-is-null"),
    pytest.param(doc(certificates=[ARN]), "certificates[0]",
                 "must be an object, not a string", id="entry-is-string"),
    pytest.param(doc(certificates=[{"location": [ARN]}]), "certificates[0].location",
                 "must be an object, not a list", id="location-is-list"),
    pytest.param(doc(certificates=[{"location": {"secretsManager": ARN}}]),
                 "certificates[0].location.secretsManager", "must be an object, not a string",
                 id="secrets-manager-is-string"),
    pytest.param(arn_doc(123456789012), "certificates[0].location.secretsManager.secretArn",
                 "must be a string, not a number", id="arn-is-number"),
    pytest.param(arn_doc(True), None, "must be a string, not a boolean", id="arn-is-boolean"),
    pytest.param(arn_doc([ARN]), None, "must be a string, not a list", id="arn-is-list"),
    pytest.param(b'{"certificates": 1e400}', "certificates", "must be a list, not a number",
                 id="overflowing-float"),
    # Not JSON.
    pytest.param(b"", "", "is not valid JSON: Expecting value at line 1 column 1", id="empty"),
    pytest.param(b'{"certificates": [}', "", "is not valid JSON", id="truncated"),
    pytest.param(b'{"certificates": [],}', "", "is not valid JSON", id="trailing-comma"),
    pytest.param(b"{'certificates': []}", "", "is not valid JSON", id="single-quotes"),
    pytest.param(b"{} {}", "", "is not valid JSON: Extra data", id="two-documents"),
    pytest.param(b'{"certificates": []}\x00', "", "is not valid JSON", id="trailing-nul"),
    pytest.param(b"\xef\xbb\xbf{}", "", "is not valid JSON", id="utf8-bom"),
    pytest.param(b'{"a": 1, "a": 2}', "", "key 'a' appears twice in one object",
                 id="duplicate-key"),
    pytest.param(b'{"certificates": [{"location": {"secretsManager": {"secretArn": "x", '
                 b'"secretArn": "y"}}}]}', "", "key 'secretArn' appears twice",
                 id="duplicate-key-deep"),
    pytest.param(b'{"certificates": NaN}', "", "is not valid JSON: NaN is not a JSON value",
                 id="nan"),
    pytest.param(b'{"certificates": [Infinity]}', "", "Infinity is not a JSON value",
                 id="infinity"),
    pytest.param(b'{"certificates": -Infinity}', "", "-Infinity is not a JSON value",
                 id="minus-infinity"),
    pytest.param(b'{"certificates": ' + b"9" * 5000 + b"}", "", "is not acceptable JSON",
                 id="five-thousand-digit-integer"),
    pytest.param(b"\xff{}", "", "is not UTF-8 (byte 0)", id="not-utf8"),
    pytest.param('{"certificates": "caf\u00e9"}'.encode("latin-1"), "", "is not UTF-8 (byte 21)",
                 id="latin-1"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', "", "is not UTF-8", id="encoded-surrogate"),
    pytest.param("{\ud800}", "", "is not UTF-8", id="str-with-lone-surrogate"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "", "is nested too deeply",
                 id="100000-nested-lists"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "", "is nested too deeply",
                 id="100000-nested-objects"),
    # Size.
    pytest.param(b" " * (MIB - 1) + b"{}", "", "is 1048577 bytes, over the 1048576-byte limit",
                 id="one-byte-over-1-mib"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "path", "fragment"), REFUSED)
def test_refused_manifests(data: bytes | str, path: str | None, fragment: str) -> None:
    """A refused manifest raises ManifestError naming the place and the reason."""
    with pytest.raises(ManifestError) as info:
        manifest.parse(data)
    assert fragment in str(info.value)
    if path is not None:
        assert info.value.path == path
        assert str(info.value).startswith(f"manifest {path}: " if path else "manifest: ")


def test_exactly_1_mib_is_not_refused_for_size() -> None:
    """A document of exactly 1 MiB is within the limit."""
    data = b" " * (MIB - 2) + b"{}"
    assert len(data) == manifest.MAX_MANIFEST_BYTES
    assert manifest.parse(data).certificates == ()


def test_limits_allow_no_more_than_twenty_in_all() -> None:
    """The per-level limit makes twenty the most a manifest can name, the documented total."""
    assert manifest.MAX_PER_LEVEL * 2 == manifest.MAX_TOTAL == 20


# --- credentials -----------------------------------------------------------------------

CREDENTIAL_REFUSALS = [
    pytest.param(creds(accessKeyId=None), "credentials", "missing key 'accessKeyId'",
                 id="no-access-key-id"),
    pytest.param(creds(secretAccessKey=None), "credentials", "missing key 'secretAccessKey'",
                 id="no-secret"),
    pytest.param(creds(secretAccessKey=12345), "credentials.secretAccessKey",
                 "must be a string, not a number", id="secret-is-number"),
    pytest.param(creds(sessionToken=[TOKEN]), "credentials.sessionToken",
                 "must be a string, not a list", id="token-is-list"),
    pytest.param(creds(sessionToken=""), "credentials.sessionToken",
                 "must be non-empty printable text", id="empty-token"),
    pytest.param(creds(secretAccessKey=SECRET + " "), "credentials.secretAccessKey",
                 "without spaces at the ends", id="secret-with-trailing-space"),
    pytest.param(creds(secretAccessKey=SECRET + "\n"), "credentials.secretAccessKey",
                 "without spaces at the ends", id="secret-with-newline"),
    pytest.param(creds(sessionToken=TOKEN[:5] + "\x07" + TOKEN[5:]),
                 "credentials.sessionToken", "printable", id="token-with-control-character"),
    pytest.param(creds(accessKeyId=KEY_ID.lower()), "credentials.accessKeyId",
                 "is not an AWS access key id", id="lower-case-key-id"),
    pytest.param(creds(accessKeyId=KEY_ID[:10]), "credentials.accessKeyId",
                 "is not an AWS access key id", id="short-key-id"),
    pytest.param(SECRET, "credentials", "must be an object, not a string",
                 id="credentials-is-string"),
    pytest.param([KEY_ID, SECRET], "credentials", "must be an object, not a list",
                 id="credentials-is-list"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "path", "fragment"), CREDENTIAL_REFUSALS)
def test_refused_credentials_never_echo_values(given: Any, path: str, fragment: str) -> None:
    """Bad credentials are refused by key name, and no credential value is in the error."""
    with pytest.raises(ManifestError) as info:
        manifest.parse(doc(toolCertificates=[entry()], credentials=given))
    assert info.value.path == path
    assert fragment in str(info.value)
    shown = " ".join([str(info.value), repr(info.value), repr(info.value.args)])
    for value in (KEY_ID, KEY_ID.lower(), KEY_ID[:10], SECRET, TOKEN, TOKEN[:5]):
        assert value not in shown


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b'{"credentials": {"accessKeyId": "' + KEY_ID.encode() + b'", "secretAccessKey": "'
            + SECRET.encode() + b'", "secretAccessKey": "' + SECRET.encode() + b'"}}',
            id="duplicate-key",
        ),
        pytest.param(
            b'{"credentials": {"accessKeyId": "' + KEY_ID.encode() + b'", "secretAccessKey": "'
            + SECRET.encode() + b'\x01"}}',
            id="raw-control-character",
        ),
        pytest.param(
            b'{"credentials": {"accessKeyId": "' + KEY_ID.encode() + b'", "secretAccessKey": "'
            + SECRET.encode() + b'\\q"}}',
            id="bad-escape",
        ),
        pytest.param(
            b'{"credentials": {"accessKeyId": "' + KEY_ID.encode() + b'", "secretAccessKey": "'
            + SECRET.encode(),
            id="unterminated",
        ),
        pytest.param(
            b'{"credentials": {"accessKeyId": "' + KEY_ID.encode() + b'", "secretAccessKey": "'
            + SECRET.encode() + b'\xff"}}',
            id="not-utf8",
        ),
    ],
)  # fmt: skip
def test_unparseable_credentials_never_echo_values(data: bytes) -> None:
    """A JSON or encoding error inside the credentials never quotes them."""
    with pytest.raises(ManifestError) as info:
        manifest.parse(data)
    shown = " ".join([str(info.value), repr(info.value), repr(info.value.args)])
    for value in (KEY_ID, SECRET, SECRET[:8], SECRET[-8:]):
        assert value not in shown
