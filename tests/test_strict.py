"""Strict clients: CAs that OpenSSL refuses under X509_V_FLAG_X509_STRICT (Python >= 3.13, urllib3).

The validator names each rule and still installs the CA; ``verify`` shows the two kinds of
OpenSSL client apart. The table is checked against this release's own OpenSSL, so the rules
hold on Debian 12 (OpenSSL 3.0) and Debian 13 (OpenSSL 3.5) alike.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.builders import manifest, unique
from tests.support.certs import Issued, make_leaf
from tests.support.daemon import cli
from tests.support.moto import MotoServer
from tests.support.tls import https_server
from trustinstaller import _run, validate, verify
from trustinstaller.config import Config
from trustinstaller.documents import status_to_json
from trustinstaller.installer import Installer

_KU = {
    "digital_signature": True, "content_commitment": False, "key_encipherment": False,
    "data_encipherment": False, "key_agreement": False, "key_cert_sign": True, "crl_sign": True,
    "encipher_only": False, "decipher_only": False,
}  # fmt: skip


def root(
    *,
    bc: str | None = "critical",
    ku: str | None = "keyCertSign",
    ski: str | None = "plain",
    aki: str | None = None,
    cn: str | None = "strict test root",
    path_length: int | None = None,
) -> Issued:
    """A self-signed root; each argument leaves out or changes one extension."""
    k = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )
    if bc is not None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                            critical=bc == "critical")  # fmt: skip
    if ku is not None:
        b = b.add_extension(x509.KeyUsage(**{**_KU, "key_cert_sign": ku == "keyCertSign"}),
                            critical=True)  # fmt: skip
    if ski is not None:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()),
                            critical=ski == "critical")  # fmt: skip
    if aki is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(k.public_key()),
                            critical=aki == "critical")  # fmt: skip
    return Issued(b.sign(k, hashes.SHA256()), k)


# (root's arguments, the rules named, whether plain OpenSSL refuses it too)
CASES = [
    pytest.param({}, [], False, id="conforming"),
    pytest.param({"aki": "plain"}, [], False, id="self-signed-with-aki"),
    pytest.param({"ku": None}, ["no keyUsage extension"], False, id="no-key-usage"),
    pytest.param({"ku": "other"}, ["keyUsage without keyCertSign"], True, id="ku-without-certsign"),
    pytest.param({"bc": "plain"}, ["basicConstraints not marked critical"], False,
                 id="bc-not-critical"),
    pytest.param({"bc": None}, ["no basicConstraints extension"], False, id="no-bc-but-ku"),
    pytest.param({"bc": None, "ku": None, "ski": None}, ["no basicConstraints extension"], True,
                 id="no-bc-no-ku"),
    pytest.param({"ski": None}, ["no subjectKeyIdentifier extension"], False, id="no-ski"),
    pytest.param({"ski": "critical"}, ["subjectKeyIdentifier marked critical"], True,
                 id="ski-critical"),
    pytest.param({"aki": "critical"}, ["authorityKeyIdentifier marked critical"], True,
                 id="aki-critical"),
    pytest.param({"cn": None}, ["empty subject name", "empty issuer name"], False,
                 id="empty-names"),
    pytest.param({"ku": None, "path_length": 0},
                 ["pathLenConstraint without keyUsage keyCertSign", "no keyUsage extension"],
                 False, id="pathlen-without-ku"),
    pytest.param({"bc": "plain", "ku": None, "ski": None},
                 ["basicConstraints not marked critical", "no keyUsage extension",
                  "no subjectKeyIdentifier extension"], False, id="three-at-once"),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "rules", "plain_refuses"), CASES)
def test_strict_rules_are_named(kw: dict[str, Any], rules: list[str], plain_refuses: bool) -> None:
    """Each rule a strict verifier applies to a root is named, and only those."""
    found = validate.strict_refusals(root(**kw).cert)
    assert [f.split(" (")[0] for f in found] == rules


@pytest.mark.parametrize(("kw", "rules", "plain_refuses"), CASES)
def test_rules_match_this_releases_openssl(
    kw: dict[str, Any], rules: list[str], plain_refuses: bool, tmp_path: Path
) -> None:
    """``openssl verify -x509_strict`` refuses a leaf under the root exactly when rules hold."""
    ca = root(**kw)
    (tmp_path / "root.pem").write_text(ca.pem)
    (tmp_path / "leaf.pem").write_text(make_leaf(ca).pem)

    def refuses(*flags: str) -> bool:
        done = subprocess.run(
            ["openssl", "verify", *flags, "-CAfile", str(tmp_path / "root.pem"),
             str(tmp_path / "leaf.pem")],
            capture_output=True, text=True, check=False, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return done.returncode != 0

    assert refuses("-x509_strict") == bool(rules)
    assert refuses() == plain_refuses


def test_ca_without_key_usage_is_installed_with_a_warning_naming_strict_clients(
    config: Config, moto: MotoServer
) -> None:
    """The CA is installed; the result, the status and ``check`` carry the strict warning."""
    ca = root(ku=None)
    arn = moto.put_secret(unique(), ca.pem)
    status = status_to_json(Installer(config).submit(manifest([arn])))
    assert status["state"] == "locked"
    [cert] = status["certificates"]
    assert "os" in cert["stores"]
    [warning] = cert["warnings"]
    assert "Python >= 3.13" in warning
    assert "no keyUsage extension" in warning
    assert any("no keyUsage extension" in w for w in status["warnings"])
    assert ca.pem in config.os_store.bundle.read_text()


def test_check_prints_the_strict_warning(tmp_path: Path) -> None:
    """``trustinstaller check`` says OK and prints the rule strict clients apply."""
    pem = tmp_path / "root.pem"
    pem.write_text(root(ski=None).pem)
    done = cli("check", str(pem))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK ")
    assert "warning: strict clients (Python >= 3.13" in done.stdout
    assert "no subjectKeyIdentifier extension" in done.stdout


def test_verify_shows_strict_refusing_what_openssl_default_accepts(tmp_path: Path) -> None:
    """A CA without keyUsage: ``openssl default`` accepts, ``python/urllib3 strict`` refuses."""
    ca = root(ku=None)
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ca.pem)
    with https_server(ca) as url:
        v = verify.verify_url(
            url, os_bundle=bundle, combined_bundle=bundle, nss_databases=[], runner=_run.run
        )
    assert [(x.label, x.accepted) for x in v] == [
        ("os bundle (openssl default)", True),
        ("os bundle (python/urllib3 strict)", False),
        ("combined bundle (openssl default)", True),
        ("combined bundle (python/urllib3 strict)", False),
    ]
    assert v[1].reason == "CA cert does not include key usage extension"
    text = verify.render(url, v)
    assert "REFUSES  combined bundle (python/urllib3 strict)" in text
    assert "ACCEPTS  combined bundle (openssl default)" in text


def test_verify_strict_path_accepts_a_conforming_ca(tmp_path: Path) -> None:
    """A conforming CA is accepted by both kinds of client: the strict path is not always no."""
    ca = root()
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ca.pem)
    with https_server(ca) as url:
        v = verify.verify_url(
            url, os_bundle=bundle, combined_bundle=bundle, nss_databases=[], runner=_run.run
        )
    assert [x.accepted for x in v] == [True] * 4
