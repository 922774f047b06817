"""Root's own paths: the checked walk from ``/``, and the stores that rely on it.

Each case builds a real tree under a root-owned temporary directory, hands parts of it to
another uid (65534) or makes them writable by others, and checks that the walk refuses
exactly the component another user could change, and that a store refuses before it writes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import osroot
from tests.support.certs import make_ca
from tests.test_runtime_env import Journal, trusted
from trustinstaller import _fs, _run
from trustinstaller.errors import StoreError, UnsafePathError
from trustinstaller.stores.nss import NssDatabase, NssStore, foreign_modules
from trustinstaller.stores.runtime_env import RuntimeEnvStore

pytestmark = pytest.mark.root

OTHER = 65534  # nobody: a uid that is not ours


def mkdirs(base: Path, rel: str, mode: int = 0o755) -> Path:
    """Make ``base/rel`` with every new directory root's and ``mode``."""
    p = base
    for part in rel.split("/"):
        p = p / part
        p.mkdir(exist_ok=True)
        p.chmod(mode)
    return p


def to_other(p: Path) -> None:
    """Give ``p`` (itself, not a link's target) to the other uid."""
    os.lchown(p, OTHER, OTHER)


def sticky(p: Path) -> None:
    """Make ``p`` like /tmp: writable by all, sticky."""
    p.chmod(0o1777)


Setup = Callable[[Path], None]

WALK_CASES: list[tuple[str, Setup, str | None]] = [
    ("all root's", lambda b: None, None),
    ("a component owned by another uid", lambda b: to_other(b / "a"), "a: is owned by uid 65534"),
    ("the last one owned by another uid", lambda b: to_other(b / "a/b/c"), "c: is owned by uid"),
    ("group-writable", lambda b: (b / "a/b").chmod(0o775), "b: is writable by group or others"),
    ("other-writable", lambda b: (b / "a").chmod(0o757), "a: is writable by group or others"),
    ("sticky and world-writable, child root's", lambda b: sticky(b / "a"), None),
    (
        "sticky, child another's",
        lambda b: (sticky(b / "a"), to_other(b / "a/b")),
        "b: is owned by uid 65534",
    ),
]


@pytest.mark.parametrize(("setup", "problem"), [c[1:] for c in WALK_CASES],
                         ids=[c[0] for c in WALK_CASES])  # fmt: skip
def test_the_walk_refuses_exactly_the_component_another_user_could_change(
    tmp_path: Path, setup: Setup, problem: str | None
) -> None:
    """Every directory on the way must be root's and writable by no one else (sticky aside)."""
    mkdirs(tmp_path, "a/b/c")
    setup(tmp_path)
    if problem is None:
        with _fs.opened_dir(tmp_path / "a/b/c") as fd:
            assert os.path.samestat(os.fstat(fd), (tmp_path / "a/b/c").stat())
        return
    with pytest.raises(UnsafePathError) as info:
        _fs.open_dir(tmp_path / "a/b/c")
    assert problem.split(":")[0] in str(info.value.filename), info.value
    assert problem.split(": ", 1)[1] in str(info.value.strerror)


def test_a_root_owned_symlink_on_the_way_is_followed(tmp_path: Path) -> None:
    """Like /var/run -> /run: root's link in a checked directory leads to its checked target."""
    real = mkdirs(tmp_path, "real/d")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "rel").symlink_to("real")
    mkdirs(tmp_path, "sub")
    (tmp_path / "sub/up").symlink_to("../real")
    for path in (tmp_path / "link/d", tmp_path / "rel/d", tmp_path / "sub/up/d"):
        with _fs.opened_dir(path) as fd:
            assert os.path.samestat(os.fstat(fd), real.stat())


def test_a_symlink_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """In a sticky directory with fs.protected_symlinks=0, another's link must not lead us."""
    mkdirs(tmp_path, "real/d")
    sticky(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    to_other(tmp_path / "link")
    with pytest.raises(UnsafePathError, match="symlink owned by uid 65534"):
        _fs.open_dir(tmp_path / "link/d")


def test_a_symlink_as_the_last_component_is_refused_whoever_owns_it(tmp_path: Path) -> None:
    """The directory itself is never reached through a link."""
    mkdirs(tmp_path, "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError) as info:
        _fs.open_dir(tmp_path / "link")
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_dotdot_and_relative_paths_are_refused(tmp_path: Path) -> None:
    """A path must be absolute and plain: '..' could climb out of a checked directory."""
    with pytest.raises(UnsafePathError, match=r"'\.\.'"):
        _fs.open_dir(tmp_path / "a" / ".." / "b")
    with pytest.raises(UnsafePathError, match="absolute"):
        _fs.open_dir(Path("relative/dir"))


def test_parents_are_created_and_recorded_before_each_mkdir(tmp_path: Path) -> None:
    """``before_mkdir`` hears of each directory before it exists, outermost first."""
    seen: list[tuple[str, bool]] = []
    target = tmp_path / "x/y/z"
    with _fs.opened_dir(target, parents=True, mode=0o700,
                        before_mkdir=lambda p: seen.append((str(p), p.exists()))):  # fmt: skip
        pass
    assert seen == [(str(tmp_path / "x"), False), (str(tmp_path / "x/y"), False),
                    (str(target), False)]  # fmt: skip
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_a_directory_squatted_by_another_user_is_refused_not_used(tmp_path: Path) -> None:
    """``create`` in a sticky directory: one another user made first fails the check."""
    sticky(tmp_path)
    squat = tmp_path / "env"
    squat.mkdir()
    to_other(squat)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        _fs.open_dir(squat, create=True)


# -- root's NSS databases -------------------------------------------------------------

MODULE_CASES = [
    ("library=\nname=NSS Internal PKCS #11 Module\n", []),
    ("library=libnssckbi.so\n", []),
    ("library=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-trust.so\n", []),
    ("LIBRARY = /usr/lib/x86_64-linux-gnu/libsoftokn3.so\n", []),
    ("library=/home/browser/evil.so\n", ["/home/browser/evil.so"]),
    ("library=/usr/lib/../../tmp/evil.so\n", ["/usr/lib/../../tmp/evil.so"]),
    ("library=./evil.so\n", ["./evil.so"]),
    ("library=/usr/libexec/x.so\n", ["/usr/libexec/x.so"]),
    ("name=x\nlibrary=/tmp/a.so\nlibrary=/lib/b.so\n", ["/tmp/a.so"]),
]


@pytest.mark.parametrize(("text", "bad"), MODULE_CASES)
def test_foreign_modules_are_those_outside_the_system_library_directories(
    text: str, bad: list[str]
) -> None:
    """A library named by path must live under /lib, /usr/lib and the like; bare names are fine."""
    assert foreign_modules(text) == bad


def root_db(tmp_path: Path) -> Path:
    """A fresh database of root's, made by certutil itself."""
    db = mkdirs(tmp_path, "pki/nssdb", 0o700)
    NssStore(_run.run, NssDatabase(db)).install([], Journal())
    return db


def test_a_root_database_naming_a_foreign_module_is_refused_before_any_add(tmp_path: Path) -> None:
    """certutil as root loads every module pkcs11.txt names: such a database is not opened."""
    db = root_db(tmp_path)
    with (db / "pkcs11.txt").open("a") as f:
        f.write("\nlibrary=/tmp/evil.so\nname=evil\n")
    before = osroot.nss_listing(db)
    with pytest.raises(StoreError, match=r"names a library outside .*'/tmp/evil.so'"):
        NssStore(_run.run, NssDatabase(db)).install([trusted(make_ca("x"))], Journal())
    assert osroot.nss_listing(db) == before


@pytest.mark.parametrize("name", ["cert9.db", "key4.db", "pkcs11.txt"])
def test_a_root_database_with_a_file_another_user_owns_is_refused(
    tmp_path: Path, name: str
) -> None:
    """A database file another user could rewrite would be parsed by root's certutil."""
    db = root_db(tmp_path)
    to_other(db / name)
    with pytest.raises(StoreError, match=f"{name} is owned by uid 65534"):
        NssStore(_run.run, NssDatabase(db)).preflight()


def test_a_root_database_below_another_users_directory_is_refused_naming_owner(
    tmp_path: Path,
) -> None:
    """A plain nss_databases path must be root's all the way; the message says to name an owner."""
    db = mkdirs(tmp_path, "kiosk/nssdb", 0o755)
    to_other(tmp_path / "kiosk")
    with pytest.raises(StoreError, match=r"kiosk is owned by uid 65534.*owner"):
        NssStore(_run.run, NssDatabase(db)).preflight()
    with pytest.raises(StoreError, match="kiosk is owned by uid 65534"):
        NssStore(_run.run, NssDatabase(db)).install([trusted(make_ca("x"))], Journal())
    assert list(db.iterdir()) == []


def test_certutil_gets_the_checked_descriptor_not_the_path(tmp_path: Path) -> None:
    """Root's certutil opens ``sql:/proc/self/fd/N``: the walk's own descriptor."""
    db = root_db(tmp_path)
    seen: list[tuple[str, ...]] = []

    def spy(argv: object, **kw: object) -> _run.Result:
        seen.append(tuple(argv))  # type: ignore[arg-type]
        return _run.run(argv, **kw)  # type: ignore[arg-type]

    ca = trusted(make_ca("through fd"))
    NssStore(spy, NssDatabase(db)).install([ca], Journal())
    certutil = [a for a in seen if a[0] == "certutil" and a[1] in ("-A", "-L")]
    assert certutil
    assert all(a[3].startswith("sql:/proc/self/fd/") for a in certutil), certutil
    assert f"trustinstaller-{ca.fingerprint_sha256}" in osroot.nss_listing(db)


# -- the runtime directory -------------------------------------------------------------


def test_a_runtime_dir_whose_parent_others_can_write_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    """Another user could create or swap it there: refused at preflight, naming the parent."""
    parent = mkdirs(tmp_path, "shared", 0o777)
    store = RuntimeEnvStore(parent / "env", tmp_path / "none.pem")
    with pytest.raises(StoreError, match=r"shared is writable by group or others"):
        store.preflight()
    with pytest.raises(StoreError, match=r"shared is writable by group or others"):
        store.install([trusted(make_ca("x"))], Journal())
    assert list(parent.iterdir()) == []


def test_a_runtime_dir_in_a_sticky_parent_is_refused_and_a_squat_not_written(
    tmp_path: Path,
) -> None:
    """A sticky parent fails the preflight; an install without one still refuses a directory
    squatted there."""
    parent = mkdirs(tmp_path, "tmp", 0o1777)
    store = RuntimeEnvStore(parent / "env", tmp_path / "none.pem")
    with pytest.raises(StoreError, match=r"may be written by other users \(mode 1777\)"):
        store.preflight()
    (parent / "env").mkdir()
    to_other(parent / "env")
    with pytest.raises(StoreError, match="owned by uid 65534"):
        store.install([trusted(make_ca("x"))], Journal())
    assert list((parent / "env").iterdir()) == []
