"""Parse a certificate manifest: bytes in, a frozen ``Manifest`` out, or ``ManifestError``.

The certificate entries have exactly the shape that the CreateBrowser and
StartBrowserSession APIs take, so a user can paste the same list. Parsing is
strict: an unknown key, a wrong type or a duplicate key is refused and named,
because a typo must never silently drop a CA.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from trustinstaller.documents import JSONObject, Source
from trustinstaller.errors import ManifestError

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_PER_LEVEL = 10
MAX_TOTAL = 20

Level = Literal["tool", "session"]
_LEVEL_KEYS: tuple[tuple[str, Level], ...] = (
    ("toolCertificates", "tool"),
    ("certificates", "session"),
)
_TOP_KEYS = {"toolCertificates", "certificates", "credentials"}
_CREDENTIAL_KEYS = {"accessKeyId", "secretAccessKey", "sessionToken"}

# arn:<partition>:secretsmanager:<region>:<12-digit account>:secret:<name>
# Secret names allow ASCII letters, digits and /_+=.@- (Secrets Manager's own rule).
# re.ASCII: without it \d also matches other scripts' digits, such as U+0661..U+0669.
_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov|aws-iso(?:-[a-z]+)?)"
    r":secretsmanager:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})"
    r":(?P<account>\d{12}):secret:(?P<name>[A-Za-z0-9/_+=.@-]{1,512})",
    re.ASCII,
)
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}", re.ASCII)
# Keys and values quoted in messages are cut to this many characters.
_QUOTE_MAX = 256


@dataclass(frozen=True)
class CertificateRef:
    """One certificate entry: where it stands in the manifest and which secret holds it."""

    level: Level
    index: int
    arn: str
    partition: str
    region: str
    account: str

    @property
    def path(self) -> str:
        """The entry's place in the manifest, as a user would look for it."""
        key = "toolCertificates" if self.level == "tool" else "certificates"
        return f"{key}[{self.index}]"

    def source(self) -> Source:
        """Where it was named, as the status reports it."""
        return Source(self.level, self.index, self.arn)


@dataclass(frozen=True)
class Credentials:
    """The caller's AWS credentials. Never logged, written or echoed."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: tool-level certificates first, then session-level ones."""

    certificates: tuple[CertificateRef, ...]
    credentials: Credentials | None = field(default=None, repr=False)


def parse_arn(arn: str, path: str) -> tuple[str, str, str]:
    """Check a Secrets Manager ARN and return (partition, region, account)."""
    m = _ARN.fullmatch(arn)
    if m is None:
        raise ManifestError(
            path,
            f"{_quote(arn)} is not a Secrets Manager secret ARN "
            "(arn:<partition>:secretsmanager:<region>:<12-digit account>:secret:<name>)",
        )
    return m["partition"], m["region"], m["account"]


def parse(data: bytes | str) -> Manifest:
    """Parse and check a manifest document."""
    # surrogatepass: a str holding a lone surrogate then fails as "not UTF-8" below,
    # not with a UnicodeEncodeError here.
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError("", f"is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("", f"is not UTF-8 (byte {exc.start})") from exc
    doc = _load_json(text)
    top = _object(doc, "", _TOP_KEYS)

    refs: list[CertificateRef] = []
    for key, level in _LEVEL_KEYS:
        if key not in top:
            continue
        entries = top[key]
        if not isinstance(entries, list):
            raise ManifestError(key, f"must be a list, not {_type(entries)}")
        if len(entries) > MAX_PER_LEVEL:
            raise ManifestError(
                key, f"has {len(entries)} certificates; at most {MAX_PER_LEVEL} are allowed"
            )
        refs.extend(_entry(entry, level, key, i) for i, entry in enumerate(entries))
    if len(refs) > MAX_TOTAL:
        raise ManifestError("", f"has {len(refs)} certificates; at most {MAX_TOTAL} are allowed")

    credentials = _credentials(top["credentials"]) if "credentials" in top else None
    return Manifest(certificates=tuple(refs), credentials=credentials)


def _entry(entry: object, level: Level, key: str, index: int) -> CertificateRef:
    path = f"{key}[{index}]"
    obj = _object(entry, path, {"location"}, required={"location"})
    loc_path = f"{path}.location"
    location = obj["location"]
    if not isinstance(location, dict):
        raise ManifestError(loc_path, f"must be an object, not {_type(location)}")
    others = sorted(k for k in location if k != "secretsManager")
    if others:
        raise ManifestError(
            loc_path,
            f"location type {_quote(others[0])}: only secretsManager locations are supported",
        )
    if "secretsManager" not in location:
        raise ManifestError(loc_path, "missing key 'secretsManager'")
    sm_path = f"{loc_path}.secretsManager"
    sm = _object(location.get("secretsManager"), sm_path, {"secretArn"}, required={"secretArn"})
    arn_path = f"{sm_path}.secretArn"
    arn = sm["secretArn"]
    if not isinstance(arn, str):
        raise ManifestError(arn_path, f"must be a string, not {_type(arn)}")
    partition, region, account = parse_arn(arn, arn_path)
    return CertificateRef(level, index, arn, partition, region, account)


def _credentials(value: object) -> Credentials:
    obj = _object(
        value, "credentials", _CREDENTIAL_KEYS, required={"accessKeyId", "secretAccessKey"}
    )
    fields: dict[str, str] = {}
    for key in sorted(obj):
        v = obj[key]
        # The values themselves never go into a message.
        if not isinstance(v, str):
            raise ManifestError(f"credentials.{key}", f"must be a string, not {_type(v)}")
        if not v or v != v.strip() or not v.isprintable():
            raise ManifestError(
                f"credentials.{key}", "must be non-empty printable text without spaces at the ends"
            )
        fields[key] = v
    if _ACCESS_KEY_ID.fullmatch(fields["accessKeyId"]) is None:
        raise ManifestError("credentials.accessKeyId", "is not an AWS access key id")
    return Credentials(
        access_key_id=fields["accessKeyId"],
        secret_access_key=fields["secretAccessKey"],
        session_token=fields.get("sessionToken"),
    )


def _object(
    value: object, path: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> JSONObject:
    if not isinstance(value, dict):
        # ManifestError already names the path; only the top level needs saying.
        where = "" if path else "the top level "
        raise ManifestError(path, f"{where}must be an object, not {_type(value)}")
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        # Keys are case-sensitive, as the AWS APIs' are: say so when only the case is wrong.
        meant = [a for a in sorted(allowed) if a.lower() == unknown[0].lower()]
        hint = f"; keys are case-sensitive: did you mean {_quote(meant[0])}?" if meant else ""
        raise ManifestError(
            path,
            f"unknown key {_quote(unknown[0])} (allowed: {', '.join(sorted(allowed))}){hint}",
        )
    missing = sorted(k for k in required if k not in value)
    if missing:
        raise ManifestError(path, f"missing key {missing[0]!r}")
    return value


def _load_json(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ManifestError:
        raise
    except json.JSONDecodeError as exc:
        raise ManifestError(
            "", f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ManifestError("", "is nested too deeply") from exc
    except ValueError as exc:
        # int() of a number with thousands of digits, for one.
        raise ManifestError("", f"is not acceptable JSON: {exc}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> JSONObject:
    out: JSONObject = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError("", f"key {_quote(key)} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ManifestError("", f"is not valid JSON: {name} is not a JSON value")


def _quote(text: str) -> str:
    """repr() of a key or an ARN, cut short: a 1 MiB key must not make a 1 MiB message."""
    if len(text) <= _QUOTE_MAX:
        return repr(text)
    return repr(text[:_QUOTE_MAX]) + f"... ({len(text)} characters)"


def _type(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
