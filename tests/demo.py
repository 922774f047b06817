"""``make demo``: the main job end to end, on this machine, without touching its trust store.

1. Start a local Secrets Manager (a moto server on 127.0.0.1) and store a freshly made CA in it.
2. Start an HTTPS server on 127.0.0.1 whose certificate that CA signed.
3. Make a private mount namespace with throwaway copies of /etc/ssl,
   /usr/local/share/ca-certificates, /etc/ca-certificates and the browsers' policy
   directories, and a tmpfs on /run.
4. In there, add a browser user (only in there), run the daemon with the default stores (no
   ``browser_users``: nothing is done in any home), show curl and headless Chromium (as the
   browser user, with a HOME made for each run) refusing the site, submit the manifest, show
   both trusting it, and show a second manifest refused as locked, also after a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.browseruser import add_browser_user
from tests.support.certs import make_ca
from tests.support.moto import FAKE_ENV, moto_server
from tests.support.ns import PrivateNamespace
from tests.support.tls import https_server

SOCKET = "/run/trustinstaller/trustinstaller.sock"
CHROMIUM = (
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
PAGE_TEXT = "trusted by trustinstaller"
MANAGED = "/etc/chromium/policies/managed"
HOST_FILES = ("/etc/ssl/certs/ca-certificates.crt",)
HOST_TREES = ("/etc/ssl/certs", "/usr/local/share/ca-certificates", "/etc/chromium", "/etc/opt",
              "/etc/firefox")  # fmt: skip


def say(text: str) -> None:
    """Print a step heading."""
    print(f"\n== {text}", flush=True)


def show(done: subprocess.CompletedProcess[str]) -> None:
    """Print a command's output, indented."""
    for line in (done.stdout + done.stderr).strip().splitlines():
        print(f"   | {line}")
    print(f"   (exit {done.returncode})", flush=True)


def host_fingerprint() -> dict[str, str]:
    """Hashes of the host's trust store and browser policies, to prove the demo left them alone."""
    out = {}
    for base in HOST_TREES:
        for p in sorted(Path(base).rglob("*")):
            if p.is_symlink():
                out[str(p)] = "->" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def main() -> int:
    """Run the demo; exit non-zero if anything did not behave as the README says."""
    if os.geteuid() != 0:
        print("make demo needs root (for the private mount namespace)", file=sys.stderr)
        return 1
    before = host_fingerprint()
    scratch = Path(tempfile.mkdtemp(prefix="trustinstaller-demo-"))
    env = {**FAKE_ENV, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    ok = True
    try:
        say("Starting a local Secrets Manager (moto server on 127.0.0.1)")
        with moto_server() as moto:
            print(f"   endpoint {moto.endpoint}")
            ca = make_ca("Example Corp Demo Root CA")
            arn = moto.put_secret("demo/corp-root", ca.pem)
            print(f"   stored a fresh root CA as {arn}")

            with https_server(ca) as url:
                say(f"HTTPS server on {url}, signed by that CA")
                config = scratch / "config.toml"
                config.write_text(f'endpoint_url = "{moto.endpoint}"\n')
                manifest = scratch / "manifest.json"
                manifest.write_text(
                    json.dumps(
                        {
                            "toolCertificates": [
                                {"location": {"secretsManager": {"secretArn": arn}}}
                            ],
                            "certificates": [],
                        },
                        indent=2,
                    )
                )
                print(f"   manifest {manifest}:\n{manifest.read_text()}")
                ok = run_in_namespace(scratch, config, manifest, url, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    after = host_fingerprint()
    say("Host trust store and browser policies")
    if after == before:
        print(f"   unchanged ({len(after)} entries under {', '.join(HOST_TREES)})")
    else:
        print("   CHANGED: this is a bug", file=sys.stderr)
        ok = False
    say("Demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def run_in_namespace(
    scratch: Path, config: Path, manifest: Path, url: str, env: dict[str, str]
) -> bool:
    """The part that runs with the private trust store; True if all went as expected."""
    ti = [sys.executable, "-m", "trustinstaller", "--config", str(config)]
    curl = ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "HTTP %{http_code}\n", url]
    ok = True
    with PrivateNamespace(scratch / "ns") as ns:
        say("Private mount namespace ready: /etc/ssl etc. are throwaway copies, /run is a tmpfs")
        user = add_browser_user(ns)
        print(f"   browser user {user.name} (uid {user.uid}, home {user.home}), only in there")
        print(f"   config {config} (no browser_users: nothing is done in any home):\n"
              f"{config.read_text()}")  # fmt: skip
        profiles = iter(range(100))

        def chromium() -> subprocess.CompletedProcess[str]:
            # A HOME and a profile made for this run, as automation tools launch Chromium.
            home = user.home / f"run-{next(profiles)}"
            home.mkdir()
            os.chown(home, user.uid, user.uid)
            argv = user.argv([*CHROMIUM, f"--user-data-dir={home}/profile", "--dump-dom", url],
                             HOME=str(home))  # fmt: skip
            return ns.run(argv, timeout=180)

        def start_daemon() -> subprocess.Popen[bytes]:
            log = (scratch / "daemon.log").open("ab")
            proc = ns.popen([*ti, "serve"], env=env, stdout=log, stderr=log)
            log.close()
            probe = ["curl", "-sf", "-o", "/dev/null", "--unix-socket", SOCKET,
                     "http://localhost/v1/status"]  # fmt: skip
            for _ in range(300):
                if ns.run(probe).returncode == 0:
                    return proc
                time.sleep(0.05)
            raise RuntimeError("daemon did not start; see its log")

        daemon = start_daemon()
        say(f"Daemon listening on {SOCKET}")
        show(ns.run(["curl", "-sS", "--unix-socket", SOCKET, "http://localhost/v1/status"]))

        say("Before: curl refuses the site (unknown CA)")
        done = ns.run(curl)
        show(done)
        ok &= done.returncode == 60

        say(f"Before: headless Chromium, as {user.name} with a fresh HOME, refuses it too")
        done = chromium()
        refused = "ERR_CERT_AUTHORITY_INVALID" in done.stderr and PAGE_TEXT not in done.stdout
        print(f"   {'ERR_CERT_AUTHORITY_INVALID' if refused else 'UNEXPECTED: ' + done.stderr}")
        ok &= refused

        say("trustinstaller submit manifest.json")
        done = ns.run([*ti, "submit", str(manifest)], env=env)
        show(done)
        ok &= done.returncode == 0

        say("After: curl trusts the site through the OS store")
        done = ns.run(curl)
        show(done)
        ok &= done.returncode == 0 and "HTTP 200" in done.stdout

        say(f"After: headless Chromium, as {user.name} with another fresh HOME, shows the page")
        done = chromium()
        reached = done.returncode == 0 and PAGE_TEXT in done.stdout
        print(f"   {'page: ' + PAGE_TEXT if reached else 'UNEXPECTED: ' + done.stderr}")
        ok &= reached

        say("Chromium read the CA from its managed policy: root's file, 0644, for every user")
        show(ns.run(["ls", "-l", MANAGED]))
        show(ns.run(["head", "-c", "160", f"{MANAGED}/zz-trustinstaller.json"]))
        print()

        say("A second manifest is refused: the configuration is locked (exit 4)")
        done = ns.run([*ti, "submit", str(manifest)], env=env)
        show(done)
        ok &= done.returncode == 4

        say("Restart the daemon: still locked")
        daemon.terminate()
        daemon.wait(timeout=30)
        daemon = start_daemon()
        done = ns.run([*ti, "submit", str(manifest)], env=env)
        show(done)
        ok &= done.returncode == 4
        show(ns.run([*ti, "status"], env=env))
        daemon.terminate()
        daemon.wait(timeout=30)
        user.remove_home()
    return ok


if __name__ == "__main__":
    sys.exit(main())
