"""The systemd units: the hardening score, and agreement with the packaged configuration."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
SERVICE = TOP / "systemd/trustinstaller.service"
SOCKET = TOP / "systemd/trustinstaller.socket"
PACKAGED_CONFIG = TOP / "packaging/deb/config.toml"
BAR = 2.0  # issue 5: overall exposure of 2.0 or lower


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of a repeated key kept in order."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_exposure_score_is_within_the_bar() -> None:
    """`systemd-analyze security --offline` scores the service at 2.0 or lower."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(SERVICE)],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for trustinstaller\.service: (\d+\.\d)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    score = float(m.group(1))
    print(f"exposure {score}")
    assert score <= BAR, f"exposure {score} is over {BAR}:\n{done.stdout}"


def test_socket_unit_and_packaged_config_name_the_same_socket() -> None:
    """The CLI connects to the configured socket, so it must be the one systemd listens on."""
    config = tomllib.loads(PACKAGED_CONFIG.read_text())
    sock = unit_settings(SOCKET)
    assert sock["ListenStream"] == [config["socket"]]
    assert sock["SocketMode"] == ["0600"]
    service = unit_settings(SERVICE)
    runtime_dirs = service["RuntimeDirectory"][0].split()
    # Outside the RuntimeDirectory=, which systemd may remove or recreate under the socket.
    assert not any(config["socket"].startswith(f"/run/{d}/") for d in runtime_dirs)
    assert Path(config["state_dir"]).name in runtime_dirs


def test_service_keeps_the_lock_and_the_choices_it_documents() -> None:
    """Preserved state dir, notify readiness, SIGTERM to the daemon only, '-' on store paths."""
    s = unit_settings(SERVICE)
    assert s["Type"] == ["notify"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]
    assert s["KillMode"] == ["mixed"]
    assert s["ProtectSystem"] == ["strict"]
    paths = [p for line in s["ReadWritePaths"] for p in line.split()]
    assert paths
    assert all(p.startswith("-") for p in paths), paths
    # Java's keystore hook runs a JIT under this unit: W+X memory must stay allowed.
    assert s["MemoryDenyWriteExecute"] == ["no"]
