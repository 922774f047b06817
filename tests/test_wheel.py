"""The package as a wheel, alone: built from a copy of the tree, installed with no index into a
fresh virtual environment, and ``trustinstaller apply`` run from there in a private namespace.

The dependencies come from the suite's wheelhouse (``make wheelhouse``, or ``/wheels`` inside
the Debian 13 root), so the install needs no network and never sees this tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.moto import FAKE_ENV, MotoServer
from tests.support.ns import PrivateNamespace
from trustinstaller import pem

pytestmark = pytest.mark.root

TOP = Path(__file__).resolve().parent.parent


def wheelhouse() -> Path:
    """Where the dependencies' wheels are: $TRUSTINSTALLER_WHEELHOUSE, else build/wheels."""
    default = TOP / "build" / "wheels" / f"cp{sys.version_info[0]}{sys.version_info[1]}"
    found = Path(os.environ.get("TRUSTINSTALLER_WHEELHOUSE", default))
    assert any(found.glob("boto3-*.whl")), f"no wheels in {found}: run 'make wheelhouse'"
    return found


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; fail the test with its output unless it exits 0."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]  # fmt: skip
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel and the sdist, built offline from a copy of the tree, and a fresh venv."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(TOP / name, src / name)
    shutil.copytree(TOP / "trustinstaller", src / "trustinstaller",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(base / "dist"),
         str(src)])  # fmt: skip
    [whl] = (base / "dist").glob("trustinstaller-*.whl")
    [sdist] = (base / "dist").glob("trustinstaller-*.tar.gz")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(wheelhouse()), str(whl)])  # fmt: skip
    return {"wheel": whl, "sdist": sdist, "venv": venv}


def test_the_wheel_holds_the_package_and_its_command(built: dict[str, Path]) -> None:
    """Every module is in the wheel, with the ``trustinstaller`` console script."""
    names = zipfile.ZipFile(built["wheel"]).namelist()
    for module in ("trustinstaller/cli.py", "trustinstaller/stores/chromium.py",
                   "trustinstaller/stores/nss_user.py"):  # fmt: skip
        assert module in names
    [entry] = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(built["wheel"]).read(entry).decode()
    assert "trustinstaller = trustinstaller.cli:main" in text


def test_the_installed_wheel_runs_outside_the_tree(built: dict[str, Path]) -> None:
    """The venv's trustinstaller imports its own copy, never this tree's."""
    python = built["venv"] / "bin" / "python"
    done = run([str(python), "-c", "import trustinstaller; print(trustinstaller.__file__)"],
               cwd="/")  # fmt: skip
    assert done.stdout.startswith(str(built["venv"])), done.stdout
    assert run([str(built["venv"] / "bin" / "trustinstaller"), "--version"]).stdout.strip()


def test_apply_from_the_wheel_installs_and_locks(
    built: dict[str, Path], moto: MotoServer, tmp_path: Path
) -> None:
    """``trustinstaller apply`` from the wheel's venv installs a CA into the default stores."""
    ca = make_ca("trustinstaller wheel test CA")
    arn = moto.put_secret(unique("wheel"), ca.pem)
    (tmp_path / "manifest.json").write_bytes(manifest(session=[arn]))
    (tmp_path / "config.toml").write_text(
        'state_dir = "/run/trustinstaller"\n'
        'socket = "/run/trustinstaller/trustinstaller.sock"\n'
        f'endpoint_url = "{moto.endpoint}"\n'
    )
    agent = [str(built["venv"] / "bin" / "trustinstaller"), "--config",
             str(tmp_path / "config.toml")]  # fmt: skip
    env = {"PATH": "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin", **FAKE_ENV,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}  # fmt: skip
    with PrivateNamespace(tmp_path / "ns") as ns:
        done = ns.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *agent, "apply",
                       str(tmp_path / "manifest.json")], cwd="/")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        status = json.loads(ns.run([*agent, "status", "--json"]).stdout)
        bundle = ns.run(["cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout.encode()
        policy = ns.run(["cat", "/etc/chromium/policies/managed/zz-trustinstaller.json"])
    assert status["state"] == "locked"
    assert ca.der in pem.ders(bundle)
    assert policy.returncode == 0, policy.stderr
