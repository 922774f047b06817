"""The daemon over its real Unix socket, and the CLI as a real process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.daemon import Daemon, cli, request, write_config
from tests.support.moto import MotoServer
from tests.support.tls import handshake, https_server
from trustinstaller.config import Config


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A directory outside pytest's 0700 tree, so another uid can reach a socket in it."""
    d = Path(tempfile.mkdtemp(prefix="trustinstaller-sock-"))
    d.chmod(0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


@pytest.fixture
def daemon_config(config: Config, sockdir: Path, tmp_path: Path) -> Path:
    """The test configuration as a TOML file, with the socket in ``sockdir``."""
    return write_config(replace(config, socket=sockdir / "ti.sock"), tmp_path / "config.toml")


@pytest.fixture
def daemon(daemon_config: Path, sockdir: Path) -> Iterator[Daemon]:
    """A running daemon."""
    with Daemon(daemon_config, sockdir / "ti.sock") as d:
        yield d


def test_submit_installs_then_locks_across_restart(
    daemon: Daemon, daemon_config: Path, config: Config, moto: MotoServer
) -> None:
    """PUT installs once; a second PUT is 409, before and after a daemon restart."""
    ca = make_ca("daemon root")
    arn = moto.put_secret(unique(), ca.pem)
    assert daemon.status()["state"] == "open"
    sock = daemon.socket_path
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with https_server(ca) as url:
        # Refused for the right reason: the CA is unknown (a refused connection would not do).
        assert "CERTIFICATE_VERIFY_FAILED" in (handshake(url, config.os_store.bundle) or "")
        code, answer = daemon.put(manifest([arn]))
        assert (code, answer["outcome"], answer["state"]) == (200, "installed", "locked")
        assert handshake(url, config.os_store.bundle) is None

    second = moto.put_secret(unique(), make_ca("late").pem)
    code, answer = daemon.put(manifest([second]))
    assert (code, answer["outcome"]) == (409, "locked")
    assert "locked" in answer["message"]

    daemon.stop()
    daemon.start()
    assert daemon.status()["state"] == "locked"
    code, answer = daemon.put(manifest([second]))
    assert (code, answer["outcome"]) == (409, "locked")
    assert [c["source"]["arn"] for c in answer["certificates"]] == [arn]


def test_cli_submit_and_status_exit_codes(
    daemon: Daemon, daemon_config: Path, moto: MotoServer, tmp_path: Path
) -> None:
    """``submit`` exits 0, then 4 when locked; ``status --json`` reports the lock."""
    good = tmp_path / "m.json"
    good.write_bytes(manifest([moto.put_secret(unique(), make_ca("cli").pem)]))
    bad = tmp_path / "bad.json"
    bad.write_text('{"certificates": [{"location": {"s3": {}}}]}')

    done = cli("--config", str(daemon_config), "submit", str(bad))
    assert done.returncode == 2, done.stderr
    assert "only secretsManager locations are supported" in done.stderr

    done = cli("--config", str(daemon_config), "submit", str(good))
    assert done.returncode == 0, done.stderr
    assert "installed" in done.stdout

    done = cli("--config", str(daemon_config), "submit", str(good))
    assert done.returncode == 4
    assert "locked" in done.stderr

    done = cli("--config", str(daemon_config), "status", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["state"] == "locked"


def test_refused_certificate_exit_code_and_answer(
    daemon: Daemon, daemon_config: Path, moto: MotoServer, tmp_path: Path
) -> None:
    """A refused certificate is HTTP 422 with every error, and exit code 3 from the CLI."""
    arn = moto.put_secret(unique(), make_ca("weak", key_type="rsa1024").pem)
    code, answer = daemon.put(manifest([arn]))
    assert code == 422
    assert answer["outcome"] == "refused"
    assert answer["state"] == "failed"
    assert [e["object"] for e in answer["errors"]] == [arn]
    assert "weak key: RSA 1024 bits" in answer["errors"][0]["message"]
    m = tmp_path / "m.json"
    m.write_bytes(manifest([arn]))
    done = cli("--config", str(daemon_config), "submit", str(m))
    assert done.returncode == 3
    assert "weak key" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_without_daemon_reads_the_state_directory(
    daemon_config: Path, moto: MotoServer, tmp_path: Path, config: Config
) -> None:
    """``apply`` works without a daemon, and ``status`` then reads the state directory."""
    m = tmp_path / "m.json"
    m.write_bytes(manifest([moto.put_secret(unique(), make_ca("apply").pem)]))
    done = cli("--config", str(daemon_config), "apply", str(m))
    assert done.returncode == 0, done.stderr
    done = cli("--config", str(daemon_config), "apply", str(m))
    assert done.returncode == 4
    done = cli("--config", str(daemon_config), "status")
    assert done.returncode == 0
    assert "state: locked" in done.stdout
    assert "no daemon answered" in done.stdout
    assert stat.S_IMODE((config.state_dir / "status.json").stat().st_mode) == 0o600


def test_unknown_routes_and_methods(daemon: Daemon) -> None:
    """404 and 405 come back as JSON, and the daemon keeps serving (413: test_hardening)."""
    sock = daemon.socket_path
    assert request(sock, "GET", "/nope")[0] == 404
    assert request(sock, "POST", "/v1/manifest", b"{}")[0] == 405
    assert request(sock, "PUT", "/v1/manifest", b"[1, 2")[0] == 400
    assert daemon.status()["state"] == "failed"


def test_malformed_http_gets_a_4xx(daemon: Daemon) -> None:
    """A garbage request line is answered 400 and does not stop the daemon."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket_path))
        s.sendall(b"\x00\xffGARBAGE\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert daemon.status()["state"] == "open"


@pytest.mark.root
def test_other_uid_gets_403_even_on_an_open_socket(daemon: Daemon) -> None:
    """With the socket opened to all, uid 65534 is still refused by SO_PEERCRED."""
    assert os.geteuid() == 0, "this test runs as root in CI"
    daemon.socket_path.chmod(0o666)
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
         "curl", "-sS", "--unix-socket", str(daemon.socket_path), "-X", "PUT",
         "--data-binary", "{}", "-w", "\n%{http_code}",
         "http://localhost/v1/manifest"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip().endswith("403"), done.stdout + done.stderr
    assert "uid 65534 may not submit" in done.stdout
    assert daemon.status()["state"] == "open"


def test_curl_works_for_debugging(daemon: Daemon) -> None:
    """``curl --unix-socket`` reads the status, as the README says."""
    done = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(daemon.socket_path), "http://localhost/v1/status"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["state"] == "open"


def test_check_command(tmp_path: Path) -> None:
    """``check`` validates local PEM files: 0 when all pass, 3 when any is refused."""
    good = tmp_path / "good.pem"
    good.write_text(make_ca("checked").pem)
    bad = tmp_path / "bad.pem"
    bad.write_text(make_ca("not ca", basic_constraints=False).pem + make_ca("two").pem)
    done = cli("check", str(good))
    assert done.returncode == 0
    assert "OK" in done.stdout
    done = cli("check", str(good), str(bad))
    assert done.returncode == 3
    assert "holds 2 certificates" in done.stdout


def test_version_and_module_entry_point() -> None:
    """``python -m trustinstaller --version`` prints the version."""
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("trustinstaller ")


def test_store_snapshots_unchanged_by_failed_submit(
    daemon: Daemon, config: Config, moto: MotoServer
) -> None:
    """A refused manifest leaves the OS store and NSS byte-for-byte as they were."""
    before = osroot.snapshot_store(config.os_store)
    arn = moto.put_secret(unique(), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
    code, _ = daemon.put(manifest([arn]))
    assert code == 422
    assert osroot.snapshot_store(config.os_store) == before
