"""The OS store's fast path: what update-ca-certificates does, in-process, without its loop.

The script spends its time in two ``sed`` runs and a ``basename`` for each CA listed in
``ca-certificates.conf``, on every run. This module takes the same steps in the same order and
leaves the tools' own work to the tools: ``openssl rehash`` makes the hash links and ``run-parts
--test`` lists the hooks, each of which is run as the script runs it. It runs only for a script
whose SHA-256 is in ``PROVEN`` (each one compared with this module, file for file, by
tests/test_os_fast.py) and a layout those steps model; anything else raises ``Unproven`` and
the caller runs the script itself.

The script's quirks reproduced here, one per line:
- It reads ca-certificates.conf with ``while read``: a last line without a newline is never read.
- ``read`` strips leading and trailing blanks and eats backslashes (a backslash is Unproven).
- A ``!`` line removes ``<etc>/<basename .crt>.pem`` if it is a link, with no renaming.
- An added link's name maps `` `` and ``,`` to ``_`` and ``(``/``)`` to ``=``.
- A link is made again (``+``) when the name is missing, dangling, or links elsewhere.
- ``find -L`` takes local ``*.crt`` files through links, sorted bytewise (LC_ALL=C).
- The bundle is each added file in that order, with a newline added where the last one lacks it.
- With nothing added at all the bundle is left as it was; with nothing added or removed, orphan
  links stay and ``openssl rehash`` does not run.
- Orphans go and ``openssl rehash`` runs before the bundle is replaced.
- An empty or missing ca-certificates.conf means ``--fresh``.
- ``--fresh`` first removes links into the CA directories, then links that are not to a file.
- Hooks run in the store's directory with the ``+`` lines then the ``-`` lines on stdin; one that
  fails is an ``E:`` line, and the others still run.

An install's hooks are left to the transaction as the store's rest (they run beside the later
stores). Where every hook is one in ``EARLY_HOOKS`` (Debian's jks-keystore, with the package
files its run executes), which reads only the ``.pem`` links, never the hash links or the
bundle, the hooks start as soon as the links are made, beside ``openssl rehash`` and the
bundle's write; the result is the same, and the Java keystore test checks it. A rollback takes
no ``--fresh`` run: our removed files' links go as orphans, and the
hooks get a ``-`` line for each of our files, once (the script path tells them after its fresh
run, which feeds them every CA again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller import _fs, log
from trustinstaller._run import Runner, command_env, which
from trustinstaller.documents import Entry
from trustinstaller.errors import HostError
from trustinstaller.stores import Rest
from trustinstaller.stores.debian import BUNDLE, DebianPaths, DebianStore
from trustinstaller.stores.debian import PREFIX as PREFIX  # the registry reads it here

if TYPE_CHECKING:  # annotations only: the registry imports this module
    from trustinstaller.stores.registry import Registry

# The SHA-256 of each /usr/sbin/update-ca-certificates this module reproduces; add one only
# with the differential test passing on that release (tests/test_os_fast.py checks the host's).
PROVEN: dict[str, str] = {
    "395364bffc7ce85ccbe2de71215f9c6c85c024af3bbd991c75a01c2d2aa3080a": (
        "Debian 12, ca-certificates 20230311+deb12u1"
    ),
    # Debian 13 adds --sysroot and reads with ``read -r``, quoting every name: the same steps
    # for every name this module takes (one with a backslash or a blank it leaves to the script).
    "2cb06c85b5f01c4f6b72c3983d9f66d44aac0a7ac997ee55e7e429aedbc3934d": (
        "Debian 13, ca-certificates 20250419+deb13u1"
    ),
}
FAST = "fast"
SCRIPT = "script"


@dataclass(frozen=True)
class ProvenHook:
    """A hook that reads only the ``.pem`` links (those named on its stdin; on a fresh run,
    every one), never the hash links or the bundle, with every file whose code its run
    executes: each path's SHA-256, as tests/test_os_fast.py's Java keystore test ran them."""

    release: str
    files: Mapping[str, str]


# Debian's jks-keystore queues its stdin for ca-certificates-java's trigger, whose postinst
# hands the jar the queued lines (or, fresh, every .pem link in /etc/ssl/certs); the jar reads
# the file each + line names. The hook is the same file on both releases.
_JKS_HOOK = "/etc/ca-certificates/update.d/jks-keystore"
_JKS_POSTINST = "/var/lib/dpkg/info/ca-certificates-java.postinst"
_JKS_JAR = "/usr/share/ca-certificates-java/ca-certificates-java.jar"
EARLY_HOOKS: tuple[ProvenHook, ...] = (
    ProvenHook("Debian 12, ca-certificates-java 20230710~deb12u1", {
        _JKS_HOOK: "254a87ea1f9fe37751e3ed90a79013f3424c7a5fe26bfe59fac312abff82dbda",
        _JKS_POSTINST: "c124604fd90c85a2c7b44dfcdb448dc9296f9b654114739fb0965fd22b63fb3b",
        _JKS_JAR: "cac45fae26adaa0c56000d7480a89cce2af2d3095182b61ba58764df81f1ce46",
    }),
    ProvenHook("Debian 13, ca-certificates-java 20240118", {
        _JKS_HOOK: "254a87ea1f9fe37751e3ed90a79013f3424c7a5fe26bfe59fac312abff82dbda",
        _JKS_POSTINST: "4d76cba4f4a8583c70bb4632e9c2c00a669396500b686c1f32cd2046a9e1e110",
        _JKS_JAR: "e9e4d6ecc46c00fc22c6d332fec627e32c255f34f80d4bb035da853a351944a3",
    }),
)  # fmt: skip
# Characters the script uses unquoted, as a pattern or through ``read``: a name with one is
# left to the script itself.
_SHELL_SPECIAL = frozenset(" \t\n\r\\*?[]'\"$`")
_RESTORECON = Path("/sbin/restorecon")
_MAX_LINKS = 40


class Unproven(Exception):  # noqa: N818 (a reason to run the script, not an error)
    """This host or this tree is not one the fast path is proven for; the reason says why."""


@dataclass(frozen=True)
class Outcome:
    """What a run did: the lines the hooks got, and the script's own warnings; and the hooks'
    run, where it started beside the rehash (see ``update``)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    started: HookRun | None = field(default=None, compare=False)

    @property
    def hook_input(self) -> bytes:
        """The hooks' stdin, as the script feeds it: every ``+`` line, then every ``-`` line."""
        text = "".join(f"{line}\n" for line in (*self.added, *self.removed))
        return text.encode("utf-8", "surrogateescape")  # names as their bytes were


def script_digest(command: str) -> str:
    """The SHA-256 of the update-ca-certificates that ``command`` names on the runner's PATH."""
    found = which(command)
    if found is None:
        raise Unproven(f"{command} is not on the PATH")
    path = Path(found)
    with _fs.opened_dir(path.parent) as fd:
        data = _fs.read_file(fd, path.name, limit=1024 * 1024)
    if data is None:
        raise Unproven(f"{path} is missing")
    return hashlib.sha256(data).hexdigest()


def check(paths: DebianPaths, command: str) -> None:
    """Raise Unproven unless this host's script and layout are ones the fast path models."""
    try:
        digest = script_digest(command)
    except OSError as exc:
        raise Unproven(f"cannot read {command}: {exc.strerror or exc}") from exc
    if digest not in PROVEN:
        raise Unproven(f"{command} has SHA-256 {digest}, which no differential test covers")
    if command_env().get("LC_ALL") != "C":
        raise Unproven("the script would not run in the C locale")
    for tool in ("openssl", "run-parts", "env"):
        if which(tool) is None:
            raise Unproven(f"{tool} is not on the PATH")
    if os.access(_RESTORECON, os.X_OK):
        raise Unproven(f"{_RESTORECON} exists: the script relabels the bundle")
    for p in (paths.etc_certs_dir, paths.certs_dir, paths.local_certs_dir, paths.hooks_dir,
              paths.certs_conf):  # fmt: skip
        if not p.is_absolute() or _special(str(p)):
            raise Unproven(f"{str(p)!r} is not a plain absolute path")
    for p in (paths.etc_certs_dir, paths.certs_dir):
        if not p.is_dir() or p.is_symlink():
            raise Unproven(f"{p} is not a directory")
    try:
        conf = paths.certs_conf.lstat()
    except FileNotFoundError:
        raise Unproven(f"{paths.certs_conf} is missing") from None
    if not stat.S_ISREG(conf.st_mode):
        raise Unproven(f"{paths.certs_conf} is not a regular file")


def _special(text: str) -> bool:
    return any(c in _SHELL_SPECIAL or not c.isprintable() for c in text)


def basename(path: str, suffix: str = "") -> str:
    """``basename PATH SUFFIX`` as coreutils prints it."""
    name = path.rstrip("/")
    if not name:
        return "/" if path else ""
    name = name.rsplit("/", 1)[-1]
    if suffix and name != suffix and name.endswith(suffix):
        name = name[: -len(suffix)]
    return name


def pem_name(cert: str) -> str:
    """The name of the link the script's ``add`` makes for ``cert``."""
    base = basename(cert, ".crt")
    return base.replace(" ", "_").replace("(", "=").replace(")", "=").replace(",", "_") + ".pem"


def read_lines(data: bytes) -> list[str]:
    """The lines ``while read`` takes from ``data``: newline-ended ones, with blanks stripped."""
    if b"\0" in data:
        raise Unproven("ca-certificates.conf has a NUL byte")
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")[:-1]  # the text after the last newline is never read
    if any("\\" in line for line in lines):
        raise Unproven("ca-certificates.conf has a backslash, which read interprets")
    return lines


def conf_entries(data: bytes) -> tuple[list[str], list[str]]:
    """The ``!`` entries (to remove) and the entries to add, as the script's two seds give them."""
    lines = read_lines(data)
    # sed '/^$/d' 's/^!//p', then read: blanks stripped, an empty result skipped by neither.
    removed = [line[1:].strip(" \t") for line in lines if line.startswith("!")]
    added = [
        line.strip(" \t") for line in lines if line and not line.startswith(("#", "!"))
    ]  # fmt: skip
    for entry in (*removed, *added):
        parts = entry.split("/")
        if entry.startswith("/") or ".." in parts:
            raise Unproven(f"ca-certificates.conf names {entry!r} outside the CA directory")
    return removed, added


def local_certs(local_dir: Path) -> list[str]:
    """What ``find -L DIR -type f -name '*.crt' | sort`` prints (LC_ALL=C: bytewise)."""
    if not local_dir.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(local_dir):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise Unproven(f"{dirpath}/{d} links to a directory, which find -L follows")
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.endswith(".crt") and os.path.isfile(full):
                if _special(full.replace(" ", "")):
                    raise Unproven(f"{full!r} has a character read would change")
                found.append(full)
    return sorted(found, key=os.fsencode)


@dataclass
class Tree:
    """The store's directory (``/etc/ssl/certs``) as the script's steps change it.

    Entries not yet changed are read from the disk; ``changes`` holds each one a step set:
    a link's target, or None for one removed. ``ops`` are those steps, in order, to apply.
    """

    root: Path
    fd: int  # the directory, reached by the checked walk: read and written through it
    changes: dict[str, str | None] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every top-level name, after the changes."""
        gone = {n for n, t in self.changes.items() if t is None}
        return sorted((set(os.listdir(self.fd)) | set(self.changes)) - gone)

    def readlink(self, name: str) -> str | None:
        """The target of link ``name``, or None when it is no link (or missing)."""
        if name in self.changes:
            return self.changes[name]
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError:
            return None

    def kind(self, name: str, depth: int = 0) -> str | None:
        """What ``name`` resolves to: "file", "dir", "other", or None (missing or dangling)."""
        if depth > _MAX_LINKS:
            return None  # ELOOP: test -e and test -f are false
        target = self.readlink(name)
        if name in self.changes or target is not None:
            return None if target is None else self._target_kind(target, depth + 1)
        try:
            st = os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        return _kind(st.st_mode)

    def _target_kind(self, target: str, depth: int) -> str | None:
        inside = target.removeprefix(f"{self.root}/") if target.startswith("/") else target
        if "/" not in inside:
            return self.kind(inside, depth)
        if not target.startswith("/") or target.startswith(f"{self.root}/"):
            raise Unproven(f"a link in {self.root} points to {target!r}, through its directory")
        try:
            return _kind(os.stat(target).st_mode)
        except OSError:
            return None

    def link(self, name: str, target: str) -> None:
        """``ln -sf TARGET NAME``."""
        if self.kind(name) == "dir":
            raise Unproven(f"{self.root / name} is a directory, which ln would link into")
        self.changes[name] = target

    def remove(self, name: str) -> None:
        """``rm -f NAME``."""
        self.changes[name] = None

    def apply(self) -> None:
        """Take every name to its final state: a link replaced by a rename, never missing."""
        for name, target in self.changes.items():
            try:
                current: str | None = os.readlink(name, dir_fd=self.fd)
            except FileNotFoundError:
                current = None
            except OSError:  # not a link: a file the script's ln -sf replaces, or rm removes
                current = ""
            if target is None:
                _fs.remove(self.fd, name)
            elif current != target:
                _symlink(self.fd, name, target)

    def subdir_links(self) -> Iterator[str]:
        """Links below a subdirectory: none are modelled, so any one is Unproven."""
        for name in self.names():
            if self.readlink(name) is None and self.kind(name) == "dir":
                for dirpath, dirnames, filenames in os.walk(self.root / name):
                    for n in (*dirnames, *filenames):
                        if os.path.islink(os.path.join(dirpath, n)):
                            yield os.path.join(dirpath, n)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


@dataclass
class Plan:
    """One run's steps, decided before any is taken."""

    tree: Tree
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bundle_parts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rehash(self) -> bool:
        """The script prunes orphans and rehashes only when a link was added or removed."""
        return bool(self.added or self.removed)


def plan(paths: DebianPaths, fd: int, *, fresh: bool = False, gone: Sequence[str] = ()) -> Plan:
    """The steps the script would take on the tree whose store directory is ``fd``.

    ``gone``: local CA files just removed (a rollback's), each a removal: a ``-`` line for
    its link, which goes as an orphan. The script itself would keep those links.
    """
    root = paths.etc_certs_dir
    tree = Tree(root, fd)
    for link in tree.subdir_links():
        raise Unproven(f"{link} is a link below a subdirectory, which is not modelled")
    for name in tree.names():
        if _special(name) and tree.readlink(name) is not None:
            raise Unproven(f"{name!r} in {root} has a character the script mangles")
    with _fs.opened_dir(paths.certs_conf.parent) as conf_dir:
        conf = _fs.read_file(conf_dir, paths.certs_conf.name, limit=16 * 1024 * 1024) or b""
    if not conf:
        fresh = True  # [ ! -s "$CERTSCONF" ]
    removed, added = conf_entries(conf)
    p = Plan(tree)
    if fresh:
        _clear(tree, paths)
    certs_dir = str(paths.certs_dir)
    for entry in removed:
        name = basename(f"{certs_dir}/{entry}", ".crt") + ".pem"
        if tree.readlink(name) is not None:
            tree.remove(name)
            p.removed.append(f"-{root}/{name}")
    for entry in added:
        cert = f"{certs_dir}/{entry}"
        if not os.path.isfile(cert):
            p.warnings.append(f"W: {cert} not found, but listed in {paths.certs_conf}.")
            continue
        _add(p, cert)
    for cert in local_certs(paths.local_certs_dir):
        _add(p, cert)
    p.removed += [f"-{root}/{pem_name(c)}" for c in gone if not os.path.lexists(c)]
    if p.rehash:
        for name in tree.names():
            if tree.readlink(name) is not None and tree.kind(name) is None:
                tree.remove(name)
    if os.path.isdir(root / BUNDLE):
        raise Unproven(f"{root / BUNDLE} is a directory, which mv would move into")
    return p


def _clear(tree: Tree, paths: DebianPaths) -> None:
    """``--fresh``: links into the CA directories go, then links that are not to a file."""
    prefixes = (str(paths.certs_dir), str(paths.local_certs_dir))
    for name in tree.names():
        target = tree.readlink(name)
        if target is not None and target.startswith(prefixes):
            tree.remove(name)
    for name in tree.names():
        if tree.readlink(name) is not None and tree.kind(name) != "file":
            tree.remove(name)


def _add(p: Plan, cert: str) -> None:
    name = pem_name(cert)
    if p.tree.kind(name) is None or p.tree.readlink(name) != cert:
        p.tree.link(name, cert)
        p.added.append(f"+{p.tree.root}/{name}")
    p.bundle_parts.append(cert)


def bundle(parts: Sequence[str]) -> bytes:
    """The bundle ``sed -e '$a\\'`` appends, file by file: a newline added where one is missing."""
    out = bytearray()
    for cert in parts:
        with open(cert, "rb") as f:
            data = f.read()
        out += data
        if data and not data.endswith(b"\n"):
            out += b"\n"
    return bytes(out)


def run(
    paths: DebianPaths, runner: Runner, *, fresh: bool = False, timeout: float = 300.0
) -> Outcome:
    """Do what ``update-ca-certificates [--fresh]`` does on ``paths``; Unproven before any step."""
    outcome = update(paths, runner, fresh=fresh, timeout=timeout)
    run_hooks(paths, runner, outcome.hook_input, timeout=timeout)
    return outcome


def update(
    paths: DebianPaths,
    runner: Runner,
    *,
    fresh: bool = False,
    gone: Sequence[str] = (),
    timeout: float = 300.0,
    early: bool = False,
) -> Outcome:
    """``run`` up to the hooks: the links, the hash links and the bundle, and what the hooks
    are to be told; Unproven before any step. ``gone``: see ``plan``.

    With ``early`` (and not ``fresh``), where every hook is in ``EARLY_HOOKS``, the hooks start
    once the links are made, and the outcome's ``started`` is their run: the caller waits for
    it instead of running them. A failure after they started waits for them before it raises.
    """
    with _fs.opened_dir(paths.etc_certs_dir) as fd:
        try:
            p = plan(paths, fd, fresh=fresh, gone=gone)
            data = bundle(p.bundle_parts) if p.bundle_parts else None
        except OSError as exc:
            # Nothing is changed yet: the script meets the same file, and says so its own way.
            raise Unproven(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
        # As DebianStore does before the script: a killed run's partial bundle goes.
        _fs.remove(fd, f"{BUNDLE}.new")
        p.tree.apply()
        _fs.sync_dir(fd)
        outcome = Outcome(tuple(p.added), tuple(p.removed), tuple(p.warnings))
        started = _start_hooks(paths, runner, outcome, timeout) if early and not fresh else None
        try:
            if p.rehash:
                runner(["env", "-C", str(paths.etc_certs_dir), "openssl", "rehash", "."],
                       timeout=timeout)  # fmt: skip
            if data is not None:
                _fs.atomic_write(fd, BUNDLE, data, 0o644)
        except BaseException:
            if started is not None:
                with contextlib.suppress(Exception):  # this failure is the one to raise
                    started.wait()
            raise
    return Outcome(outcome.added, outcome.removed, outcome.warnings, started)


class HookRun:
    """Hooks running in a thread of their own; ``wait`` joins it and raises what they raised.

    Each run is in ``_RUNNING`` until it ends, so that no later update or rollback of the store
    overlaps it (``wait_for_hooks``): a rollback removes the files a hook may be reading.
    """

    def __init__(self, call: Callable[[], None]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), name="os-hooks")
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._thread.start()
        except BaseException:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            raise

    def _run(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (raised again by wait, in the caller)
            self._error = exc
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)

    def wait(self) -> None:
        """Wait for the hooks; raise what they raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


_RUNNING_LOCK = threading.Lock()
_RUNNING: set[HookRun] = set()


def wait_for_hooks() -> None:
    """Wait for every hook run an update started beside itself and that has not ended."""
    with _RUNNING_LOCK:
        runs = list(_RUNNING)
    for run_ in runs:
        with contextlib.suppress(Exception):  # its own update reports its failure
            run_.wait()


# dpkg's own records: jks-keystore runs ``dpkg --triggers-only --pending``, which runs every
# trigger pending there, ca-certificates' own (update-ca-certificates) among them.
_DPKG = Path("/var/lib/dpkg")
_PENDING_MARKS = (b"Triggers-Pending:", b" triggers-pending\n")


def triggers_pending(admin: Path = _DPKG) -> bool:
    """Whether dpkg holds a trigger not yet run (or cannot tell): the hook would run it, and
    another package's, update-ca-certificates say, must not run beside our rehash."""
    try:
        with _fs.opened_dir(admin / "triggers") as fd:
            if _fs.read_file(fd, "Unincorp", limit=16 * 1024 * 1024):
                return True  # activated outside dpkg (dpkg-trigger), not yet incorporated
        with _fs.opened_dir(admin) as fd:
            status = _fs.read_file(fd, "status", limit=256 * 1024 * 1024) or b""
        journal = []
        with _fs.opened_dir(admin / "updates") as fd:
            for name in sorted(os.listdir(fd)):
                if name.isdigit():
                    journal.append(_fs.read_file(fd, name, limit=256 * 1024 * 1024) or b"")
    except OSError:
        return True
    return any(mark in data for data in (status, *journal) for mark in _PENDING_MARKS)


def proven_early(hook: str, table: Sequence[ProvenHook] = EARLY_HOOKS) -> bool:
    """Whether ``hook`` is one a row of ``table`` names, with every file of that row as it is."""
    for row in table:
        if hook in row.files and all(_digest(p) == want for p, want in row.files.items()):
            return True
    return False


def _digest(path: str) -> str | None:
    """The SHA-256 of root's file ``path``, read by the checked walk; None if it cannot be."""
    p = Path(path)
    try:
        with _fs.opened_dir(p.parent) as fd:
            data = _fs.read_file(fd, p.name, limit=16 * 1024 * 1024)
    except OSError:
        return None
    return None if data is None else hashlib.sha256(data).hexdigest()


def _start_hooks(
    paths: DebianPaths, runner: Runner, outcome: Outcome, timeout: float
) -> HookRun | None:
    """Start the hooks now, where every one is proven to read only the links and dpkg holds no
    pending trigger that Java's hook would run beside the rehash; else None."""
    listing = list_hooks(paths, runner, timeout=timeout)
    if not listing or not all(proven_early(hook) for hook in listing) or triggers_pending():
        return None
    lines = outcome.hook_input
    return HookRun(lambda: run_hooks(paths, runner, lines, timeout=timeout, listing=listing))


def _symlink(dir_fd: int, name: str, target: str) -> None:
    """Make link ``name`` to ``target`` by a rename over it: never a moment without one."""
    tmp = f".{name}.{os.urandom(6).hex()}.tmp"
    os.symlink(target, tmp, dir_fd=dir_fd)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise


def list_hooks(paths: DebianPaths, runner: Runner, *, timeout: float) -> list[str]:
    """The hooks the script would run, in its order, as ``run-parts --test`` lists them."""
    if not paths.hooks_dir.is_dir():
        return []
    listing = runner(["run-parts", "--test", "--", str(paths.hooks_dir)], timeout=timeout)
    return [h for h in (line.strip(" \t") for line in listing.stdout.split("\n")) if h]


def run_hooks(
    paths: DebianPaths,
    runner: Runner,
    lines: bytes,
    *,
    timeout: float,
    listing: Sequence[str] | None = None,
) -> None:
    """Run each hook as the script does: in the store's directory, ``lines`` on stdin.

    ``listing``: the hooks, as ``list_hooks`` gave them (listed here when None). Every hook
    runs even when one fails; then a HostError names the failures, as check_update_output
    does for the script's ``E:`` lines.
    """
    hooks = list_hooks(paths, runner, timeout=timeout) if listing is None else listing
    errors: list[str] = []
    failed: list[str] = []
    for hook in hooks:
        argv = ["env", "-C", str(paths.etc_certs_dir), hook]
        result = runner(argv, input=lines, timeout=timeout, check=False)
        output = f"{result.stdout}\n{result.stderr}"
        found = [line for line in output.splitlines() if line.startswith("E: ")]
        if result.returncode != 0:
            found.append(f"E: {hook} exited with code {result.returncode}.")
        if found:
            failed.append(hook)
            errors += found
    if errors:
        # In the script path's words: the script would have printed these and exited 0.
        raise HostError(failed[:1], "a hook failed (it still exits 0)", output="\n".join(errors))


@dataclass
class FastDebianStore(DebianStore):
    """The OS store, by the fast path where it is proven and by the script everywhere else."""

    # Whether the last fast update started its hooks beside the rehash (see ``update``).
    early_hooks: bool = field(default=False, init=False, compare=False)

    def rollback(self, entries: Sequence[Entry]) -> None:
        """As DebianStore's, once no hook an install started is still reading our files."""
        wait_for_hooks()
        super().rollback(entries)

    def _update(
        self, *, fresh: bool = False, timeout: float | None = None, defer_hooks: bool = False
    ) -> Rest | None:
        hooks = self._fast(fresh=fresh, timeout=timeout or self.timeout)
        if hooks is None:
            return super()._update(fresh=fresh, timeout=timeout)
        if defer_hooks:
            return hooks
        hooks()
        return None

    def _rebuild_without(self, names: Sequence[str]) -> None:
        """The fast path's own undo: no ``--fresh``, and one run of the hooks.

        The links to our files, gone now, are orphans, which the run removes; the hooks get a
        ``-`` line for each of ``names``, as the script path tells them after its fresh run.
        """
        gone = [str(self.paths.our_dir / n) for n in names]
        hooks = self._fast(gone=gone, timeout=self.rollback_timeout)
        if hooks is None:
            super()._rebuild_without(names)
        else:
            hooks()

    def _fast(
        self, *, fresh: bool = False, gone: Sequence[str] = (), timeout: float
    ) -> Rest | None:
        """Take the fast path up to the hooks, and return their run; None where it is
        unproven (nothing is changed then)."""
        start = time.monotonic()
        wait_for_hooks()  # an earlier update's, left running by a failure before its rest
        try:
            check(self.paths, self.command)
            outcome = update(self.paths, self.runner, fresh=fresh, gone=gone, timeout=timeout,
                             early=True)  # fmt: skip
        except Unproven as why:
            log.get().info("os_update", store=self.name, path=SCRIPT, fresh=fresh,
                           reason=str(why)[:300])  # fmt: skip
            return None
        self.os_update = FAST
        self.early_hooks = outcome.started is not None

        def hooks() -> None:
            said = {"store": self.name, "path": FAST, "fresh": fresh, "added": len(outcome.added),
                    "removed": len(outcome.removed), "warnings": len(outcome.warnings),
                    "early_hooks": self.early_hooks}  # fmt: skip
            try:
                if outcome.started is not None:
                    outcome.started.wait()
                else:
                    run_hooks(self.paths, self.runner, outcome.hook_input, timeout=timeout)
            except HostError:
                log.get().warning("os_update", **said, status="hooks_failed")
                raise
            log.get().info("os_update", **said,
                           duration_ms=round((time.monotonic() - start) * 1000))  # fmt: skip

        return hooks


# -- the registry's entry ---------------------------------------------------------------------
# The OS store's construction from the configuration (see stores/registry.py); its name,
# PREFIX, is debian.py's.


def all_from_config(context: Registry) -> list[FastDebianStore]:
    """The OS store: its proven fast path, or update-ca-certificates itself."""
    return [from_name(PREFIX, context)]


def from_name(name: str, context: Registry) -> FastDebianStore:
    """The OS store, whose name is ``PREFIX`` alone."""
    cfg = context.config
    return FastDebianStore(context.runner_for(None), cfg.os_store, timeout=cfg.update_timeout)
