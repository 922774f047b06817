"""The OS store's fast path against the real update-ca-certificates, on copies of one tree.

Each case sets up two copies of the same store the same way, runs the script (as DebianStore
runs it) on one and the fast path on the other, and requires the same result: every file's
bytes and mode, every link's target, and what each hook got on stdin, in which directory.
PROVEN in trustinstaller/stores/debian_fast.py lists the scripts this covers; the first test
fails on a host whose script is not in it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import osroot
from tests.support.certs import make_ca
from tests.support.moto import MotoServer
from tests.support.ns import PrivateNamespace
from tests.support.tls import handshake, https_server
from tests.test_namespace import HAS_JAVA_HOOK, keytool_aliases
from trustinstaller import _fs, _run
from trustinstaller.config import Config
from trustinstaller.documents import (
    State,
    Status,
    Write,
    status_from_json,
    status_to_json,
)
from trustinstaller.errors import HostError
from trustinstaller.installer import Installer
from trustinstaller.stores import debian_fast
from trustinstaller.stores.debian import DebianPaths, DebianStore, Update
from trustinstaller.stores.debian_fast import FastDebianStore, Unproven

Setup = Callable[[DebianPaths], None]
CAS = [make_ca(f"fast path CA {i}").pem for i in range(6)]
# The hook records its stdin and its working directory, one block per run.
HOOK = """#!/bin/sh
{{ echo "cwd=$(pwd)"; cat; echo "--"; }} >> {log}
"""


def _hook(paths: DebianPaths) -> Path:
    log = paths.hooks_dir.parent / "hook.log"
    hook = paths.hooks_dir / "10record"
    hook.write_text(HOOK.format(log=log))
    hook.chmod(0o755)
    return log


def _pair(template: Path, tmp: Path) -> tuple[DebianPaths, DebianPaths]:
    script = osroot.clone_os_root(template, tmp / "script")
    fast = osroot.clone_os_root(template, tmp / "fast")
    return script, fast


def _result(paths: DebianPaths, base: Path) -> dict[str, object]:
    """The store, the local CAs and the hooks' record, with the copy's own path taken out."""
    log = paths.hooks_dir.parent / "hook.log"

    def norm(tree: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        return {k: (kind, v.replace(str(base), "ROOT")) for k, (kind, v) in tree.items()}

    return {
        "etc": norm(osroot.snapshot_tree(paths.etc_certs_dir)),
        "local": norm(osroot.snapshot_tree(paths.local_certs_dir)),
        "hooks": log.read_text().replace(str(base), "ROOT") if log.exists() else None,
    }


def _both(template: Path, tmp: Path, *steps: tuple[Setup, bool]) -> dict[str, object]:
    """Apply each (setup, fresh) step to both copies, update each its way, compare after each.

    Returns the script's result after the last step.
    """
    script, fast = _pair(template, tmp)
    for paths in (script, fast):
        _hook(paths)
    for setup, fresh in steps:
        setup(script)
        setup(fast)
        DebianStore(_run.run, script)._update(fresh=fresh)
        store = FastDebianStore(_run.run, fast)
        store._update(fresh=fresh)
        assert store.os_update == debian_fast.FAST
        assert _result(fast, tmp / "fast") == _result(script, tmp / "script")
    return _result(script, tmp / "script")


def _local(name: str, data: str | bytes) -> Setup:
    def setup(paths: DebianPaths) -> None:
        path = paths.local_certs_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _unlink(name: str) -> Setup:
    def setup(paths: DebianPaths) -> None:
        (paths.local_certs_dir / name).unlink()

    return setup


def _conf(edit: Callable[[str], str]) -> Setup:
    def setup(paths: DebianPaths) -> None:
        paths.certs_conf.write_text(edit(paths.certs_conf.read_text()))

    return setup


def _etc(name: str, target: str | None = None, data: bytes | None = None) -> Setup:
    def setup(paths: DebianPaths) -> None:
        path = paths.etc_certs_dir / name
        if target is not None:
            path.symlink_to(target.replace("LOCAL", str(paths.local_certs_dir)))
        elif data is not None:
            path.write_bytes(data)

    return setup


def _nothing(paths: DebianPaths) -> None:
    pass


def _first_conf_entry(text: str) -> str:
    return next(line for line in text.splitlines() if line and not line.startswith("#"))


def _deselect(text: str) -> str:
    first = _first_conf_entry(text)
    return text.replace(f"{first}\n", f"!{first}\n", 1)


OURS = "trustinstaller/" + "ab" * 32 + ".crt"
CASES: dict[str, tuple[tuple[Setup, bool], ...]] = {
    "add": ((_local(OURS, CAS[0]), False),),
    "add then remove, plain": ((_local(OURS, CAS[0]), False), (_unlink(OURS), False)),
    "add then remove, fresh": ((_local(OURS, CAS[0]), False), (_unlink(OURS), True)),
    "around ours in sort order": (
        (_local("aaa.crt", CAS[1]), False),
        (_local("trustinstaller-z/x.crt", CAS[2]), False),
        (_local("Trust.crt", CAS[3]), False),
        (_local("trustinstaller.crt", CAS[4]), False),
        (_local(OURS, CAS[0]), False),
        (_local("zzz/ours.crt", CAS[5]), False),
    ),
    "deselected entry": ((_conf(_deselect), False), (_local(OURS, CAS[0]), False)),
    "deselected entry, fresh": ((_conf(_deselect), True),),
    "stale link": (
        (_etc("gone.pem", "LOCAL/gone.crt"), False),
        (_etc("12345678.0", "gone.pem"), False),
        (_local(OURS, CAS[0]), False),
    ),
    "stale link, nothing else": ((_etc("gone.pem", "LOCAL/gone.crt"), False),),
    "name with spaces": ((_local("My Corp (Root), CA.crt", CAS[1]), False),),
    "CRLF and no final newline": (
        (_local("crlf.crt", CAS[1].replace("\n", "\r\n")), False),
        (_local("nonl.crt", CAS[2].rstrip("\n")), False),
        (_local("empty.crt", b""), False),
    ),
    "bundle out of date": (
        (_etc("ca-certificates.crt", data=CAS[3].encode()), False),
        (_local(OURS, CAS[0]), False),
    ),
    "bundle out of date, nothing to add": (
        (_etc("ca-certificates.crt", data=b"stale\n"), False),
        (_etc("ca-certificates.crt.new", data=b"half\n"), False),
    ),
    "a regular file at our link's name": (
        (_etc("over.pem", data=b"x"), False),
        (_local("over.crt", CAS[1]), False),
    ),
    "conf: blanks, a comment, no final newline": (
        (
            _conf(
                lambda t: (
                    f"  \n# c\n{t.replace(_first_conf_entry(t), '  ' + _first_conf_entry(t))}"
                    "mozilla/NoSuch.crt"
                )
            ),
            False,
        ),
    ),
    "empty conf means fresh": ((_conf(lambda t: ""), False),),
    "same again": ((_local(OURS, CAS[0]), False), (_nothing, False), (_nothing, True)),
}
# What the hooks must have been told in some cases: the comparison is not of two empty records.
TOLD = {
    "add": "+ROOT/etc/ssl/certs/" + "ab" * 32 + ".pem\n",
    "add then remove, fresh": "+ROOT/etc/ssl/certs/ACCVRAIZ1.pem\n",
    "deselected entry": "\n-ROOT/etc/ssl/certs/",
    "name with spaces": "+ROOT/etc/ssl/certs/My_Corp_=Root=__CA.pem\n",
    "stale link": "cwd=ROOT/etc/ssl/certs\n",
}


def test_the_hosts_script_is_proven() -> None:
    """The installed update-ca-certificates is one the differential test below covers."""
    digest = debian_fast.script_digest("update-ca-certificates")
    assert digest in debian_fast.PROVEN, f"update-ca-certificates {digest} is not in PROVEN"


@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java's hook")
def test_the_hosts_java_hook_may_start_beside_the_rehash() -> None:
    """Debian's jks-keystore here, with the postinst and jar its run executes, is a row of
    EARLY_HOOKS, which the Java keystore test below covers."""
    hook = "/etc/ca-certificates/update.d/jks-keystore"
    files = next(row.files for row in debian_fast.EARLY_HOOKS if hook in row.files)
    found = {p: debian_fast._digest(p) for p in files}
    assert debian_fast.proven_early(hook), f"no row of EARLY_HOOKS has {found}"


def test_a_hook_starts_beside_the_rehash_only_with_every_file_of_its_row(tmp_path: Path) -> None:
    """A row's hook is proven only while every file the row names has the row's SHA-256."""
    files = {n: tmp_path / n for n in ("hook", "postinst", "jar")}
    for name, path in files.items():
        path.write_text(name)
    row = debian_fast.ProvenHook(
        "test", {str(p): debian_fast._digest(str(p)) or "" for p in files.values()}
    )
    hook = str(files["hook"])
    assert debian_fast.proven_early(hook, [row])
    assert not debian_fast.proven_early(str(tmp_path / "other"), [row])
    files["jar"].write_text("changed")
    assert not debian_fast.proven_early(hook, [row])
    files["jar"].unlink()
    assert not debian_fast.proven_early(hook, [row])
    files["jar"].symlink_to(files["postinst"])  # never read through a link
    assert not debian_fast.proven_early(hook, [row])


def test_a_hook_not_proven_runs_after_the_bundle(os_root: DebianPaths) -> None:
    """A hook outside EARLY_HOOKS (this one reads the bundle) runs once the bundle holds ours."""
    seen = os_root.hooks_dir.parent / "seen.pem"
    hook = os_root.hooks_dir / "20bundle"
    hook.write_text(f"#!/bin/sh\ncat > /dev/null\ncp {os_root.bundle} {seen}\n")
    hook.chmod(0o755)
    _local(OURS, CAS[0])(os_root)
    store = FastDebianStore(_run.run, os_root)
    rest = store._update(defer_hooks=True)
    assert rest is not None
    assert store.os_update == debian_fast.FAST
    assert not store.early_hooks
    assert not seen.exists()  # the hooks are the rest: they have not started
    rest()
    assert CAS[0].encode() in seen.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_gives_what_the_script_gives(
    case: str, os_root_template: Path, tmp_path: Path
) -> None:
    """Byte for byte, link for link, hook input for hook input: the script's result."""
    result = _both(os_root_template, tmp_path, *CASES[case])
    assert TOLD.get(case, "") in str(result["hooks"])


def test_a_failing_hook_fails_both(os_root_template: Path, tmp_path: Path) -> None:
    """A hook that exits non-zero fails both ways, after every hook ran, with the same input."""
    script, fast = _pair(os_root_template, tmp_path)
    for paths in (script, fast):
        log = _hook(paths)
        bad = paths.hooks_dir / "20fail"
        bad.write_text(f"#!/bin/sh\ncat >> {log}\nexit 3\n")
        bad.chmod(0o755)
        _local(OURS, CAS[0])(paths)
    with pytest.raises(HostError, match="a hook failed"):
        DebianStore(_run.run, script)._update()
    with pytest.raises(HostError, match="a hook failed"):
        FastDebianStore(_run.run, fast)._update()
    assert _result(fast, tmp_path / "fast") == _result(script, tmp_path / "script")


@pytest.mark.slow
@pytest.mark.parametrize("retry", [False, True], ids=["once", "retried"])
def test_the_fast_rollback_leaves_what_the_scripts_rollback_leaves(
    os_root_template: Path, tmp_path: Path, retry: bool
) -> None:
    """An install of three CAs then its rollback, each store its way: the same tree after
    both; the fast path runs the hooks once, with a ``-`` line for each CA and nothing else,
    where the script path runs them after a fresh run that told them of every CA. Rolled
    back twice (a retry at the next start, our files gone already), the hooks are told again."""
    script, fast = _pair(os_root_template, tmp_path)
    names = [f"{i:064x}.crt" for i in range(3)]
    logs = {}
    for paths, kind in ((script, DebianStore), (fast, FastDebianStore)):
        logs[kind] = _hook(paths)
        for name, pem in zip(names, CAS, strict=False):
            _local(f"trustinstaller/{name}", pem)(paths)
        store = kind(_run.run, paths)
        store._update()
        logs[kind].unlink()
        entries = [*(Write(str(paths.our_dir), n) for n in names), Update()]
        for _ in range(2 if retry else 1):
            store.rollback(entries)
        assert store.os_update == (debian_fast.FAST if kind is FastDebianStore else "script")
    done = {k: _result(p, tmp_path / k) for k, p in (("script", script), ("fast", fast))}
    assert done["fast"]["etc"] == done["script"]["etc"]
    assert done["fast"]["local"] == done["script"]["local"] == {"trustinstaller": ("dir", "0o755")}
    minus = "".join(f"-ROOT/etc/ssl/certs/{n.removesuffix('.crt')}.pem\n" for n in names)
    once = f"cwd=ROOT/etc/ssl/certs\n{minus}--\n"
    assert done["fast"]["hooks"] == once * (2 if retry else 1)


_NAME = st.text(st.sampled_from("abcXYZ019 _-,()."), min_size=1, max_size=12)


@pytest.mark.slow
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.tuples(st.sampled_from(["", "trustinstaller/", "sub dir/"]), _NAME),
        st.tuples(st.integers(0, len(CAS) - 1), st.sampled_from(["\n", "\r\n", ""])),
        max_size=6,
    ),
    fresh=st.booleans(),
)
def test_property_random_local_cas(
    files: dict[tuple[str, str], tuple[int, str]],
    fresh: bool,
    os_root_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Any set of local CAs, under any names, gives the script's result."""
    steps: list[tuple[Setup, bool]] = []
    for (folder, name), (index, eol) in files.items():
        text = CAS[index].replace("\n", eol) if eol != "\n" else CAS[index]
        steps.append((_local(f"{folder}{name}.crt", text), fresh))
    _both(os_root_template, tmp_path_factory.mktemp("prop"), *(steps or [(_nothing, fresh)]))


# -- when the fast path is not taken ---------------------------------------------------------


def _unproven_copy(tmp: Path) -> str:
    copy = tmp / "bin" / "update-ca-certificates"
    copy.parent.mkdir()
    shutil.copy2(shutil.which("update-ca-certificates") or "", copy)
    with copy.open("a") as f:
        f.write("# changed\n")
    return str(copy)


def test_an_unknown_script_runs_itself(os_root: DebianPaths, tmp_path: Path) -> None:
    """A script whose SHA-256 is not in PROVEN is run as it is, and the store says so."""
    command = _unproven_copy(tmp_path)
    with pytest.raises(Unproven, match="no differential test covers"):
        debian_fast.check(os_root, command)
    _local(OURS, CAS[0])(os_root)
    store = FastDebianStore(_run.run, os_root, command=command)
    store._update()
    assert store.os_update == debian_fast.SCRIPT
    assert CAS[0].encode() in os_root.bundle.read_bytes()


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: os.symlink("/nowhere", p.etc_certs_dir / "java-link"), None),
        (lambda p: (p.etc_certs_dir / "sub").mkdir() or os.symlink("x", p.etc_certs_dir / "sub/l"),
         "below a subdirectory"),
        (lambda p: os.symlink("/nowhere", p.etc_certs_dir / "a b.pem"), "mangles"),
        (lambda p: _local("back\\slash.crt", CAS[0])(p), "read would change"),
        (lambda p: p.certs_conf.write_text("mozilla\\x.crt\n"), "backslash"),
        (lambda p: (p.etc_certs_dir / "x.pem").mkdir() or _local("x.crt", CAS[0])(p),
         "ln would link into"),
        # Resolved only when orphans are looked for: after a change.
        (lambda p: os.symlink("../x", p.etc_certs_dir / "rel.pem") or _local("y.crt", CAS[0])(p),
         "through its directory"),
    ],
)  # fmt: skip
def test_unmodelled_layouts_are_unproven(
    setup: Callable[[DebianPaths], object], reason: str | None, os_root: DebianPaths
) -> None:
    """What the fast path does not model is Unproven, before any step; the rest is planned."""
    setup(os_root)
    before = osroot.snapshot_store(os_root)
    if reason is None:
        with _fs.opened_dir(os_root.etc_certs_dir) as fd:
            debian_fast.plan(os_root, fd)
        return
    with pytest.raises(Unproven, match=reason):
        debian_fast.run(os_root, _run.run)
    assert osroot.snapshot_store(os_root) == before


def test_a_missing_conf_is_unproven(os_root: DebianPaths) -> None:
    """Without ca-certificates.conf the layout is not the expected one: the script runs."""
    os_root.certs_conf.unlink()
    with pytest.raises(Unproven, match="missing"):
        debian_fast.check(os_root, "update-ca-certificates")


# -- pure pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "suffix", "expected"),
    [
        ("/a/b/c.crt", ".crt", "c"),
        ("/a/b/.crt", ".crt", ".crt"),
        ("/a/b/", ".crt", "b"),
        ("/a/b/c.crt.crt", ".crt", "c.crt"),
        ("c", "", "c"),
        ("/", "", "/"),
    ],
)
def test_basename(path: str, suffix: str, expected: str) -> None:
    """basename as coreutils prints it."""
    assert debian_fast.basename(path, suffix) == expected


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        ("/x/My Corp (Root), CA.crt", "My_Corp_=Root=__CA.pem"),
        ("/x/plain.crt", "plain.pem"),
        ("/x/no-suffix", "no-suffix.pem"),
    ],
)
def test_pem_name(cert: str, expected: str) -> None:
    """The link name the script's add makes."""
    assert debian_fast.pem_name(cert) == expected


@pytest.mark.parametrize(
    ("conf", "removed", "added"),
    [
        (b"a.crt\n!b.crt\n#c.crt\n\n  d.crt \n", ["b.crt"], ["a.crt", "d.crt"]),
        (b"a.crt\nlast.crt", [], ["a.crt"]),
        (b"!\n", [""], []),
        (b"a.crt\r\n", [], ["a.crt\r"]),
    ],
)
def test_conf_entries(conf: bytes, removed: list[str], added: list[str]) -> None:
    """The entries the script's two seds and read loops take from ca-certificates.conf."""
    assert debian_fast.conf_entries(conf) == (removed, added)


def test_status_says_which_path_ran_and_round_trips() -> None:
    """os_update is written only when known, and read back as written."""
    bare = Status(State.LOCKED)
    assert "os_update" not in status_to_json(bare)
    assert status_from_json(status_to_json(bare)) == bare
    fast = Status(State.LOCKED, os_update=debian_fast.FAST)
    assert status_to_json(fast)["os_update"] == "fast"
    assert status_from_json(status_to_json(fast)) == fast


def test_an_install_says_it_took_the_fast_path(config: Config, moto: MotoServer) -> None:
    """A whole install through the registry's OS store reports ``os_update`` in its status and
    log, and a real handshake trusts the CA afterwards."""
    ca = make_ca("fast path install")
    arn = moto.put_secret(f"fast-{secrets.token_hex(4)}", ca.pem)
    body = json.dumps({"toolCertificates": [{"location": {"secretsManager": {"secretArn": arn}}}]})
    with https_server(ca) as url, structlog.testing.capture_logs() as logs:
        status = status_to_json(Installer(config).submit(body.encode()))
        assert handshake(url, config.os_store.bundle) is None
    assert status["os_update"] == "fast"
    assert status_to_json(Installer(config).status())["os_update"] == "fast"
    [event] = [e for e in logs if e["event"] == "os_update"]
    assert event["path"] == "fast"


def _submit_one(config: Config, moto: MotoServer, name: str) -> tuple[bytes, str]:
    ca = make_ca(name)
    arn = moto.put_secret(f"hooks-{secrets.token_hex(4)}", ca.pem)
    body = json.dumps({"toolCertificates": [{"location": {"secretsManager": {"secretArn": arn}}}]})
    return body.encode(), ca.pem


# Waits for the runtime environment's file, which a later store writes: it returns only when
# that store ran while this hook was still running, and fails after 30 s otherwise.
WAITING_HOOK = """#!/bin/sh
cat > /dev/null
i=0
while [ ! -e {env} ]; do
    i=$((i + 1)); [ $i -lt 600 ] || {{ echo "E: {env} never came"; exit 1; }}
    sleep 0.05
done
"""


def test_the_hooks_run_beside_the_stores_after_the_os_store(
    config: Config, moto: MotoServer
) -> None:
    """On the fast path the hooks (Java's keystore, the slowest step) run in a thread while the
    stores after the OS store install: a hook that waits for the runtime environment's file
    sees it come, and the install finishes and verifies."""
    env_file = config.runtime_env_dir / "env"
    hook = config.os_store.hooks_dir / "50wait"
    hook.write_text(WAITING_HOOK.format(env=env_file))
    hook.chmod(0o755)
    body, pem = _submit_one(config, moto, "hooks beside")
    status = status_to_json(Installer(config).submit(body))
    assert status["state"] == "locked"
    assert status["os_update"] == "fast"
    assert pem.encode() in config.os_store.bundle.read_bytes()


def test_a_failing_hook_on_the_fast_path_rolls_the_install_back(
    config: Config, moto: MotoServer
) -> None:
    """A hook that fails (once) after the later stores have installed beside it fails the
    install: every store is undone (the bundle lacks the CA, the runtime environment is gone)
    and the hook's E: line is the error's output."""
    hook = config.os_store.hooks_dir / "50fail"
    once = config.os_store.hooks_dir.parent / "failed-once"
    hook.write_text(f"#!/bin/sh\ncat > /dev/null\n[ -e {once} ] && exit 0\ntouch {once}\n"
                    "sleep 0.5\necho 'E: keystore broke'\n")  # fmt: skip
    hook.chmod(0o755)
    before = config.os_store.bundle.read_bytes()
    body, pem = _submit_one(config, moto, "hooks fail")
    with pytest.raises(HostError) as caught, structlog.testing.capture_logs() as logs:
        Installer(config).submit(body)
    assert "E: keystore broke" in caught.value.output
    said = [e for e in logs if e["event"] == "os_update"]
    assert (said[0]["path"], said[0].get("status")) == ("fast", "hooks_failed")
    assert pem.encode() not in config.os_store.bundle.read_bytes()
    assert config.os_store.bundle.read_bytes() == before
    assert not (config.runtime_env_dir / "env").exists()
    assert not (config.state_dir / "journal.json").exists()


def test_a_fresh_run_never_leaves_a_link_missing(os_root: DebianPaths) -> None:
    """--fresh removes and remakes every .pem link in the script; the fast path leaves one whose
    target stays the same as it is (same inode), and replaces the bundle by a rename (the hash
    links are openssl rehash's own)."""
    _local(OURS, CAS[0])(os_root)
    FastDebianStore(_run.run, os_root)._update()
    links = {p.name: p.lstat().st_ino for p in os_root.etc_certs_dir.glob("*.pem")}
    bundle = os_root.bundle.stat().st_ino
    store = FastDebianStore(_run.run, os_root)
    store._update(fresh=True)
    assert store.os_update == debian_fast.FAST
    after = {p.name: p.lstat().st_ino for p in os_root.etc_certs_dir.glob("*.pem")}
    assert len(after) > 100
    assert after == links
    assert os_root.bundle.stat().st_ino != bundle
    assert not [p for p in os_root.etc_certs_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_linked_conf_is_left_to_the_script(os_root: DebianPaths, tmp_path: Path) -> None:
    """A ca-certificates.conf that is a symlink is not read through: the script runs instead."""
    real = tmp_path / "elsewhere.conf"
    real.write_bytes(os_root.certs_conf.read_bytes())
    os_root.certs_conf.unlink()
    os_root.certs_conf.symlink_to(real)
    _local(OURS, CAS[0])(os_root)
    store = FastDebianStore(_run.run, os_root)
    store._update()
    assert store.os_update == debian_fast.SCRIPT
    assert CAS[0].encode() in os_root.bundle.read_bytes()


# -- with Debian's own Java hook, in private namespaces ----------------------------------------


def _java_view(ns: PrivateNamespace) -> dict[str, object]:
    """The keystore's aliases, and the store's tree but for the keystore's own bytes."""
    etc = osroot.snapshot_tree(ns.path("/etc/ssl/certs"))
    etc.pop("java/cacerts", None)  # a PKCS #12 file: salted, so never the same bytes twice
    return {"java": keytool_aliases(ns), "etc": etc}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java's hook")
def test_java_keystore_gets_what_the_script_gives_it(tmp_path: Path) -> None:
    """With Debian's own jks-keystore hook: the same keystore and store after an install by
    each path, and after the rollback of each. The fast path starts the hook beside the rehash
    (EARLY_HOOKS), where the host's is proven."""
    early = debian_fast.proven_early("/etc/ca-certificates/update.d/jks-keystore")
    views: dict[str, list[dict[str, object]]] = {}
    for way in ("script", "fast"):
        with PrivateNamespace(tmp_path / way) as ns:
            done = ns.run(["update-ca-certificates"])
            assert done.returncode == 0, done.stderr
            ours = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
            ours.mkdir()
            for i, pem in enumerate(CAS[:3]):
                (ours / f"{i:064x}.crt").write_text(pem)
            views[way] = []
            for step in ("install", "rollback"):
                done = ns.run([sys.executable, "-c", osroot.OS_STORE_STEP, way, step], cwd="/",
                              env={"PYTHONPATH": str(Path(__file__).parents[1])})  # fmt: skip
                assert done.returncode == 0, done.stdout + done.stderr
                assert done.stdout.split()[-1] == way
                assert f"early_hooks={early and way == 'fast'}" in done.stdout
                views[way].append(_java_view(ns))
    assert views["fast"] == views["script"]
    installed, rolled_back = views["fast"]
    assert len(installed["java"]) == len(rolled_back["java"]) + 3  # type: ignore[arg-type]


# The failing install of the test below: whether the hook thread was still alive when the
# failure reached the caller.
_FAILING_INSTALL = """
import threading
from trustinstaller import _run
from trustinstaller.stores.debian_fast import FastDebianStore
try:
    FastDebianStore(_run.run)._update()
except Exception as exc:
    alive = any(t.name == "os-hooks" and t.is_alive() for t in threading.enumerate())
    print(f"failed={type(exc).__name__} hooks_alive={alive}")
"""


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not HAS_JAVA_HOOK, reason="needs ca-certificates-java's hook")
def test_a_rehash_failing_beside_an_early_hook_waits_for_it_then_rolls_back(
    tmp_path: Path,
) -> None:
    """The update fails only once the hook it started beside the rehash has ended, and the
    rollback leaves Java's keystore as it was."""
    if not debian_fast.proven_early("/etc/ca-certificates/update.d/jks-keystore"):
        pytest.skip("this host's Java hook is not in EARLY_HOOKS")
    with PrivateNamespace(tmp_path / "ns") as ns:
        done = ns.run(["update-ca-certificates"])
        assert done.returncode == 0, done.stderr
        before = keytool_aliases(ns)
        ours = ns.path("/usr/local/share/ca-certificates") / "trustinstaller"
        ours.mkdir()
        for i, pem in enumerate(CAS[:3]):
            (ours / f"{i:064x}.crt").write_text(pem)
        shims = tmp_path / "shims"
        shims.mkdir()
        (shims / "openssl").write_text('#!/bin/sh\necho "rehash refused" >&2\nexit 1\n')
        (shims / "openssl").chmod(0o755)
        env = {"PYTHONPATH": str(Path(__file__).parents[1])}
        done = ns.run([sys.executable, "-c", _FAILING_INSTALL], cwd="/",
                      env={**env, "PATH": f"{shims}:{os.environ['PATH']}"})  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "failed=HostError hooks_alive=False" in done.stdout, done.stdout
        # Only a hook started before the rehash runs at all when the rehash fails.
        assert len(keytool_aliases(ns)) == len(before) + 3
        step = [sys.executable, "-c", osroot.OS_STORE_STEP, "fast", "rollback"]
        done = ns.run(step, cwd="/", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert keytool_aliases(ns) == before
