"""Hostile input on the socket, leaks, planted symlinks, and the daemon's own TLS trust."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca, make_leaf
from tests.support.daemon import Daemon, request, write_config
from tests.support.moto import MotoServer, moto_server
from trustinstaller import server
from trustinstaller.config import Config
from trustinstaller.errors import CertificatesRefusedError
from trustinstaller.installer import Installer


@pytest.fixture
def daemon(config: Config, tmp_path: Path) -> Iterator[Daemon]:
    """A running daemon on this test's temporary root."""
    sock = tmp_path / "d" / "ti.sock"
    sock.parent.mkdir()
    cfg = write_config(replace(config, socket=sock), tmp_path / "config.toml")
    with Daemon(cfg, sock) as d:
        yield d


def raw(sock: Path, data: bytes, *, timeout: float = 30) -> bytes:
    """Send raw bytes on the socket and read the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def put_raw(body: bytes) -> bytes:
    """A PUT /v1/manifest request with this body."""
    head = f"PUT /v1/manifest HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (json.dumps({"certificates": [1] * 200_000}).encode(), "at most 10"),
        (b'{"certificates": "\xff\xfe"}', "not UTF-8"),
        (b'{"toolCertificates": {"a": 1}}', "must be a list"),
        (b'{"credentials": {"accessKeyId": 5, "secretAccessKey": "x"}}', "must be a string"),
        (b"{,}", "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_bodies_get_a_clear_400(daemon: Daemon, body: bytes, fragment: str) -> None:
    """Deep nesting, huge arrays, non-UTF-8 and wrong types: 400 with a message; still serving."""
    answer = raw(daemon.socket_path, put_raw(body))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert fragment in json.loads(payload)["message"]
    assert daemon.status()["state"] == "failed"


def test_oversized_body_is_refused_unread(daemon: Daemon) -> None:
    """A body over 1 MiB is answered 413 from its Content-Length, before it is sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(daemon.socket_path))
        s.sendall(b"PUT /v1/manifest HTTP/1.1\r\nContent-Length: 104857600\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


def test_stalled_client_times_out_and_does_not_block_others(daemon: Daemon) -> None:
    """A client that stops mid-body is dropped with 408, and others are served meanwhile."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.settimeout(60)
        slow.connect(str(daemon.socket_path))
        slow.sendall(b"PUT /v1/manifest HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        # While it stalls, another client is answered.
        assert daemon.status()["state"] == "open"
        answer = slow.recv(4096)  # the daemon's request_timeout (5 s here) ends it
    assert answer.startswith(b"HTTP/1.1 408")
    assert daemon.status()["state"] == "open"


def test_connection_flood_is_capped(daemon: Daemon) -> None:
    """Past MAX_CONNECTIONS idle connections, a new one gets 503 at once; then all is well."""
    idle = []
    try:
        for _ in range(server.MAX_CONNECTIONS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(daemon.socket_path))
            idle.append(s)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(30)
            extra.connect(str(daemon.socket_path))
            # Answered on accept, before any request is read.
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        for s in idle:
            s.close()
    # The slots come back as the idle connections' threads see EOF.
    for _ in range(200):
        try:
            assert daemon.status()["state"] == "open"
            break
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    else:
        pytest.fail("the daemon did not recover from the flood")


def test_no_credential_or_key_material_anywhere(
    daemon: Daemon, config: Config, moto: MotoServer, tmp_path: Path
) -> None:
    """Distinctive credentials and a secret with a private key leak into no log, answer or file."""
    creds = {
        "accessKeyId": "AKIADISTINCTIVE4242",
        "secretAccessKey": "sEcReT-Distinctive-0xC0FFEE-accesskey",
        "sessionToken": "ToKeN-Distinctive-0xBADCAFE-session",
    }
    ca = make_ca("leak check")
    keyed = make_ca("with key", key_type="rsa2048")
    good = moto.put_secret(unique(), ca.pem)
    bad = moto.put_secret(unique(), keyed.pem + keyed.key_pem)
    answers = [daemon.put(manifest([good, bad], credentials=creds))]
    assert answers[0][0] == 422
    answers.append(daemon.put(manifest([good], credentials=creds)))
    assert answers[1][0] == 200
    answers.append((200, daemon.status()))
    daemon.stop()

    key_lines = [line for line in keyed.key_pem.splitlines() if "-----" not in line]
    cert_lines = [line for line in ca.pem.splitlines() if "-----" not in line]
    secrets_ = [*creds.values(), *key_lines]
    texts = {"answers": json.dumps(answers), "log": daemon.log.read_text()}
    for p in config.state_dir.rglob("*"):
        if p.is_file():
            texts[str(p)] = p.read_bytes().decode("latin-1")
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for p in [
        *config.os_store.local_certs_dir.rglob("*"),
        *config.os_store.etc_certs_dir.iterdir(),
    ]:
        if p.is_file():
            texts[str(p)] = p.read_bytes().decode("latin-1")
    for p in config.nss_databases[0].directory.iterdir():
        texts[str(p)] = p.read_bytes().decode("latin-1")
    for where, text in texts.items():
        for s in secrets_:
            assert s not in text, f"{s[:12]}... found in {where}"
    # PEM bodies stay out of logs, answers and state; the store files hold them by design.
    for where in ["answers", "log", *(str(p) for p in config.state_dir.rglob("*"))]:
        if where in texts:
            assert not any(line in texts[where] for line in cert_lines), where
    assert "private key" in texts["answers"]
    assert re.search(r'"event": "cert_refused"', texts["log"])
    assert re.search(r'"event": "cert_installed"', texts["log"])


def test_symlink_at_a_target_file_is_replaced_not_followed(
    config: Config, moto: MotoServer, tmp_path: Path
) -> None:
    """A symlink planted where our .crt goes is replaced; its target is never written."""
    ca = make_ca("symlink target")
    arn = moto.put_secret(unique(), ca.pem)
    from trustinstaller.validate import fingerprint

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    config.os_store.our_dir.mkdir()
    (config.os_store.our_dir / f"{fingerprint(ca.der)}.crt").symlink_to(victim)
    Installer(config).submit(manifest([arn]))
    assert victim.read_text() == "precious\n"
    crt = config.os_store.our_dir / f"{fingerprint(ca.der)}.crt"
    assert not crt.is_symlink()
    st = crt.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o644, 0)


def test_symlinked_state_dir_is_refused(config: Config, tmp_path: Path) -> None:
    """A symlink planted at the state directory is not followed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config.state_dir.parent.mkdir(parents=True, exist_ok=True)
    config.state_dir.symlink_to(elsewhere)
    from trustinstaller.errors import StateError

    with pytest.raises(StateError, match="state directory"):
        Installer(config).submit(b"{}")
    assert list(elsewhere.iterdir()) == []


def test_daemon_trusts_only_public_roots_for_its_own_tls(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint signed by a private CA fails even with that CA in every CA-bundle variable."""
    ca = make_ca("private endpoint CA")
    leaf = make_leaf(ca, "127.0.0.1")
    (tmp_path / "cert.pem").write_text(leaf.pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)
    (tmp_path / "ca.pem").write_text(ca.pem)
    tls = (tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    for var in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(var, str(tmp_path / "ca.pem"))
    with moto_server(tls=tls) as tls_moto:
        arn = tls_moto.put_secret(unique(), make_ca("behind tls").pem, verify=str(tls[2]))
        cfg = replace(config, endpoint_url=tls_moto.endpoint)
        with pytest.raises(CertificatesRefusedError, match="endpoint unreachable"):
            Installer(cfg).submit(manifest([arn]))
    assert osroot.nss_listing(cfg.nss_databases[0].directory) == ""


def test_state_files_are_0600(daemon: Daemon, config: Config) -> None:
    """The status file and the install lock are readable by root only."""
    daemon.put(b"{}")
    for name in ("status.json", "install.lock"):
        assert stat.S_IMODE((config.state_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    assert os.stat(daemon.socket_path).st_mode & 0o077 == 0
    assert request(daemon.socket_path, "GET", "/v1/status")[1]["state"] == "locked"
