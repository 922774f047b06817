"""The whole path against real parts: moto over HTTP, update-ca-certificates, certutil, TLS."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import structlog

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import Issued, make_ca
from tests.support.moto import MotoServer
from tests.support.tls import handshake, https_server
from trustinstaller.config import Config
from trustinstaller.documents import status_to_json
from trustinstaller.errors import (
    CertificatesRefusedError,
    LockedError,
    ManifestError,
)
from trustinstaller.installer import Installer
from trustinstaller.stores import nss


def nss_dir(config: Config) -> Path:
    return config.nss_databases[0].directory


def test_install_makes_tls_handshake_succeed(config: Config, moto: MotoServer) -> None:
    """A CA from Secrets Manager ends up in the bundle and NSS, and a real handshake then passes."""
    ca = make_ca("corp root")
    arn = moto.put_secret(unique(), ca.pem)
    bundle = config.os_store.bundle
    with https_server(ca) as url:
        assert "CERTIFICATE_VERIFY_FAILED" in (handshake(url, bundle) or "")
        status = status_to_json(Installer(config).submit(manifest([arn])))
        assert handshake(url, bundle) is None
    assert status["state"] == "locked"
    [cert] = status["certificates"]
    assert cert["subject"] == "CN=corp root"
    assert cert["source"] == {"level": "tool", "index": 0, "arn": arn}
    assert cert["stores"] == ["os", f"nss:{nss_dir(config)}", "env"]
    assert cert["warnings"] == []
    listing = nss.parse_listing(osroot.nss_listing(nss_dir(config)))
    assert listing == {f"trustinstaller-{cert['fingerprint_sha256']}": "C,,"}
    crt = config.os_store.our_dir / f"{cert['fingerprint_sha256']}.crt"
    assert crt.read_text() == ca.pem
    assert crt.stat().st_mode & 0o777 == 0o644


def test_second_manifest_is_refused_as_locked(config: Config, moto: MotoServer) -> None:
    """After one install, any later manifest is refused and changes nothing."""
    first = moto.put_secret(unique(), make_ca("first").pem)
    second = moto.put_secret(unique(), make_ca("second").pem)
    Installer(config).submit(manifest([first]))
    before = osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))
    with pytest.raises(LockedError, match="locked"):
        Installer(config).submit(manifest([second]))
    with pytest.raises(LockedError):
        Installer(config).submit(b"not even json")
    assert (osroot.snapshot_store(config.os_store), osroot.nss_listing(nss_dir(config))) == before


def test_any_refusal_installs_nothing_and_lists_every_failure(
    config: Config, moto: MotoServer
) -> None:
    """One good and three bad secrets: nothing is written, no lock, and all three are named."""
    good = moto.put_secret(unique(), make_ca("good").pem)
    expired = moto.put_secret(
        unique(), make_ca("old", not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).pem
    )
    binary = moto.put_secret(unique(), b"\x30\x82binary")
    missing = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{unique('gone')}-AbCdEf"
    before = osroot.snapshot_store(config.os_store)
    installer = Installer(config)
    with pytest.raises(CertificatesRefusedError) as info:
        installer.submit(manifest([good, expired], [binary, missing]))
    objects = [p.object for p in info.value.problems()]
    assert objects == [expired, binary, missing]
    text = str(info.value)
    assert "expired" in text
    assert "must be a string secret" in text
    assert "not found" in text
    assert osroot.snapshot_store(config.os_store) == before
    assert not nss_dir(config).exists()
    status = status_to_json(installer.status())
    assert status["state"] == "failed"
    assert len(status["errors"]) == 3
    # Not locked: a corrected manifest is accepted.
    assert installer.submit(manifest([good])).state == "locked"


def test_same_certificate_twice_is_installed_once(config: Config, moto: MotoServer) -> None:
    """Two secrets holding the same CA give one certificate, with a warning naming the second."""
    ca = make_ca("dup")
    a = moto.put_secret(unique(), ca.pem)
    b = moto.put_secret(unique(), ca.pem.replace("\n", "\r\n") + "\n\n")
    status = status_to_json(Installer(config).submit(manifest([a], [b])))
    [cert] = status["certificates"]
    assert cert["duplicates"] == [{"level": "session", "index": 0, "arn": b}]
    assert any("installed once" in w for w in cert["warnings"])
    assert len(list(config.os_store.our_dir.iterdir())) == 1


def test_non_ca_is_installed_with_a_warning(config: Config, moto: MotoServer) -> None:
    """A CA:FALSE certificate is installed, and the status carries the warning."""
    arn = moto.put_secret(unique(), make_ca("leafish", basic_constraints=False).pem)
    status = status_to_json(Installer(config).submit(manifest(session=[arn])))
    assert status["certificates"][0]["warnings"] == [
        "not a CA (basicConstraints CA:FALSE); installed with a warning"
    ]
    assert status["warnings"] == [
        f"{arn}: not a CA (basicConstraints CA:FALSE); installed with a warning"
    ]


def test_empty_manifest_locks_an_empty_configuration(config: Config, moto: MotoServer) -> None:
    """An empty manifest is valid: it writes nothing and locks."""
    before = osroot.snapshot_store(config.os_store)
    status = status_to_json(Installer(config).submit(b"{}"))
    assert status["state"] == "locked"
    assert status["certificates"] == []
    assert osroot.snapshot_store(config.os_store) == before
    with pytest.raises(LockedError):
        Installer(config).submit(b"{}")


def test_bad_manifest_changes_nothing(config: Config) -> None:
    """A manifest with a typo is refused by name and leaves no lock."""
    installer = Installer(config)
    with pytest.raises(ManifestError, match="unknown key 'toolCertificate'"):
        installer.submit(b'{"toolCertificate": []}')
    assert installer.status().state == "failed"
    assert installer.submit(b"{}").state == "locked"


def test_manifest_credentials_are_used_for_the_fetch(tmp_path: Path, config: Config) -> None:
    """With IAM enforced, the manifest's credentials decide access, not the environment's."""
    from dataclasses import replace

    from tests.support.moto import moto_server

    # moto lets the first N requests through unauthenticated: enough to set up IAM and a secret.
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "6"}) as iam_moto:
        iam = iam_moto.client("iam")
        arn = iam_moto.put_secret(unique(), make_ca("iam").pem)  # 1
        iam.create_user(UserName="reader")  # 2
        iam.create_user(UserName="nobody")  # 3
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": "*"}],
        }  # fmt: skip
        iam.put_user_policy(UserName="reader", PolicyName="read",
                            PolicyDocument=json.dumps(policy))  # 4  # fmt: skip
        reader = iam.create_access_key(UserName="reader")["AccessKey"]  # 5
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]  # 6
        cfg = replace(config, endpoint_url=iam_moto.endpoint)

        def creds(k: dict[str, str]) -> dict[str, str]:
            return {"accessKeyId": k["AccessKeyId"], "secretAccessKey": k["SecretAccessKey"]}

        with pytest.raises(CertificatesRefusedError, match="access denied"):
            Installer(cfg).submit(manifest([arn], credentials=creds(nobody)))
        status = status_to_json(Installer(cfg).submit(manifest([arn], credentials=creds(reader))))
        assert status["state"] == "locked"
    text = (cfg.state_dir / "status.json").read_text()
    assert reader["SecretAccessKey"] not in text
    assert reader["AccessKeyId"] not in text


def test_audit_events_name_each_certificate_and_never_the_pem(
    config: Config, moto: MotoServer, test_ca: Issued
) -> None:
    """One cert_installed event per certificate, with no PEM or credential in any event."""
    arn = moto.put_secret(unique(), test_ca.pem)
    with structlog.testing.capture_logs() as logs:
        Installer(config).submit(
            manifest(
                [arn],
                credentials={
                    "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                    "secretAccessKey": "SEKRET-do-not-log",
                },
            )
        )
    installed = [e for e in logs if e["event"] == "cert_installed"]
    assert len(installed) == 1
    assert installed[0]["arn"] == arn
    assert installed[0]["subject"] == "CN=trustinstaller test root CA"
    blob = json.dumps(logs, default=str)
    assert "SEKRET-do-not-log" not in blob
    assert "BEGIN CERTIFICATE" not in blob
