"""The runtime trust environment, for clients that ignore the OS store.

It is a directory of three files, readable by the browser user: a combined PEM
bundle (the OS roots plus ours), a PEM of our CAs alone, and an environment
file that both ``sh`` and systemd's ``EnvironmentFile=`` read.

Quirks this module exists for, one per line:
- Python requests and botocore trust certifi's bundle, never /etc/ssl: REQUESTS_CA_BUNDLE and
  AWS_CA_BUNDLE redirect them.
- SSL_CERT_FILE and CURL_CA_BUNDLE *replace* the default roots, so they name the OS roots plus
  ours, never ours alone. So do the other BUNDLE_KEYS, each one client's own name for its roots.
- httplib2 reads only HTTPLIB2_CA_CERTS, else certifi; grpcio only GRPC_DEFAULT_SSL_ROOTS_FILE_PATH,
  else the roots.pem compiled into it: neither looks at SSL_CERT_FILE or the OS store.
- Node trusts its own compiled-in roots; NODE_EXTRA_CA_CERTS *adds* to them (read once, at
  startup), so it names only our CAs. Deno's DENO_CERT adds to its Mozilla roots the same way.
- SSL_CERT_DIR replaces OpenSSL's (and Go's) hashed directory: it names the OS's own, which
  update-ca-certificates rehashes with our .crt files linked in, so it holds the OS roots and ours.
- The state directory is 0700 (lock, journal): the browser user could not read a file in it, so
  this directory sits beside it, 0755 with 0644 files.
- A minimal container may have no OS bundle at all: certifi's roots stand in for it.
- Playwright builds its Firefox with system policies turned off and reads the policies file named
  by PLAYWRIGHT_FIREFOX_POLICIES_JSON instead: ours holds only Certificates.Install.
- systemd's EnvironmentFile= and sh agree on single quotes only when the value holds no quote,
  backslash or newline, so such a path is refused instead of escaped.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trustinstaller import _fs, pem
from trustinstaller.documents import Entry, Mkdir, Write
from trustinstaller.errors import StoreError, UnsafePathError
from trustinstaller.paths import SAFE_VALUE as SAFE_VALUE  # config.py checks runtime_dir with it
from trustinstaller.stores import Recorder, owns_file, undo_files
from trustinstaller.stores.debian import DebianPaths, cert_filename
from trustinstaller.stores.firefox import policies_document

if TYPE_CHECKING:  # annotations only: keeps cryptography off the path to ready
    from trustinstaller.stores.registry import Registry
    from trustinstaller.validate import TrustedCA

BUNDLE = "ca-bundle.pem"
CUSTOM = "custom-cas.pem"
ENV_FILE = "env"
# Each replaces its client's roots, so each names the full bundle (the README's table says whose).
BUNDLE_KEYS = (
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE",
    "HTTPLIB2_CA_CERTS", "GIT_SSL_CAINFO", "PIP_CERT", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", "NIX_SSL_CERT_FILE",
)  # fmt: skip
# Each adds to its client's roots, so each names our CAs alone.
CUSTOM_KEYS = ("NODE_EXTRA_CA_CERTS", "DENO_CERT")
CUSTOM_KEY = CUSTOM_KEYS[0]
# Replaces the hashed directory: names the OS's, which holds the OS roots and ours.
DIR_KEY = "SSL_CERT_DIR"
DEFAULT_CERTS_DIR = DebianPaths().etc_certs_dir
FIREFOX_POLICIES = "firefox-policies.json"
FIREFOX_KEY = "PLAYWRIGHT_FIREFOX_POLICIES_JSON"

PREFIX = "env"


def hashed_dir(os_bundle: Path) -> Path:
    """The OS's hashed certificate directory: update-ca-certificates writes its bundle there."""
    return os_bundle.parent


def env_pairs(directory: Path, certs_dir: Path = DEFAULT_CERTS_DIR) -> list[tuple[str, str]]:
    """The variables naming the files in ``directory``, and the hashed ``certs_dir``."""
    bundle, custom = str(directory / BUNDLE), str(directory / CUSTOM)
    return [*((k, bundle) for k in BUNDLE_KEYS), *((k, custom) for k in CUSTOM_KEYS),
            (DIR_KEY, str(certs_dir)),
            (FIREFOX_KEY, str(directory / FIREFOX_POLICIES))]  # fmt: skip


def quote(value: str, store: str = PREFIX) -> str:
    """Single-quote ``value`` for sh and systemd alike; refuse what they would read differently.

    The configuration refuses such a runtime_dir already; the OS store's directory may still
    hold one, and the host's administrator must then choose other paths.
    """
    if not SAFE_VALUE.fullmatch(value):
        raise StoreError(store, f"path {value!r} may hold only letters, digits and / . _ + @ -, "
                         "which sh and systemd read alike: choose another runtime_dir or "
                         "os_store.etc_certs_dir")  # fmt: skip
    return f"'{value}'"


def render_env(pairs: Sequence[tuple[str, str]], *, export: bool = False) -> str:
    """``KEY='value'`` lines (``export KEY='value'`` with ``export``), one per variable."""
    prefix = "export " if export else ""
    return "".join(f"{prefix}{k}={quote(v)}\n" for k, v in pairs)


def env_file_text(directory: Path, certs_dir: Path = DEFAULT_CERTS_DIR) -> str:
    """The environment file: a comment, then plain assignments (systemd has no ``export``)."""
    return (
        "# Written by trustinstaller. Use as a systemd EnvironmentFile=, or in sh:\n"
        "#   set -a; . THIS_FILE; set +a\n" + render_env(env_pairs(directory, certs_dir))
    )


def pem_ders(data: bytes) -> list[bytes]:
    """The DER encodings of the certificates in a PEM bundle, in order."""
    return pem.ders(data)


# The OS bundle is about 200 KB with Debian's 140 CAs; this is far above any real one.
_BUNDLE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Base:
    """The bundle ours are added to: its bytes, the certificates in it, and where it was read."""

    data: bytes
    ders: frozenset[bytes]
    source: str


def base_bundle(os_bundle: Path) -> Base:
    """The OS bundle, or certifi's where the OS has none; each parsed once."""
    try:
        # Root's own path, by the checked walk: never through a link or a directory not root's.
        with _fs.opened_dir(os_bundle.parent) as fd:
            data = _fs.read_file(fd, os_bundle.name, limit=_BUNDLE_LIMIT) or b""
    except FileNotFoundError:
        data = b""
    found = pem_ders(data)
    if found:
        return Base(data, frozenset(found), str(os_bundle))
    import certifi

    where = certifi.where()
    data = Path(where).read_bytes()
    return Base(data, frozenset(pem_ders(data)), where)


def custom_pem(certs: Sequence[TrustedCA]) -> bytes:
    """Our CAs alone, each under a comment naming its fingerprint."""
    return b"".join(
        f"# trustinstaller sha256={ca.fingerprint_sha256}\n{ca.pem.strip()}\n".encode("ascii")
        for ca in certs
    )


def combined_pem(base: Base, certs: Sequence[TrustedCA]) -> bytes:
    """The base bundle plus each of ``certs`` it does not hold already."""
    extra = [ca for ca in certs if ca.der not in base.ders]
    head = base.data if not base.data or base.data.endswith(b"\n") else base.data + b"\n"
    return head + custom_pem(extra)


@dataclass
class RuntimeEnvStore:
    """Writes the combined bundle, our CAs' PEM and the environment file into one directory."""

    directory: Path
    os_bundle: Path
    name: str = PREFIX
    parallel: bool = False
    optional: bool = False
    # Where the OS store writes our .crt files, which the Firefox policy names.
    certs_dir: Path = field(default_factory=lambda: DebianPaths().our_dir)

    def env_text(self) -> str:
        """The environment file for this directory and the OS store's hashed directory."""
        return env_file_text(self.directory, hashed_dir(self.os_bundle))

    def firefox_policies(self, certs: Sequence[TrustedCA]) -> bytes:
        """The policies document for Playwright's Firefox: our certificate files only."""
        return policies_document([str(self.certs_dir / cert_filename(ca)) for ca in certs])

    def preflight(self) -> None:
        """The parent must be root's own; an existing directory must be ours and readable by all."""
        quote(str(self.directory))
        quote(str(hashed_dir(self.os_bundle)))
        try:
            with _fs.opened_dir(self.directory.parent) as parent:
                _fs.check_writable_by_root_only(parent, str(self.directory.parent))
                st = os.stat(self.directory.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError as exc:
            if exc.filename == self.directory.name:
                return  # made at install, through the parent's descriptor
            raise StoreError(self.name, f"{self.directory.parent} is not a directory") from exc
        except UnsafePathError as exc:
            raise StoreError(self.name, _unsafe(exc)) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(self.name, f"{self.directory} is a symlink or not a directory")
        if st.st_uid != os.geteuid():
            raise StoreError(self.name, f"{self.directory} is owned by uid {st.st_uid}, not us")
        if st.st_mode & 0o005 != 0o005:
            raise StoreError(
                self.name,
                f"{self.directory} has mode {stat.S_IMODE(st.st_mode):o}: the browser user "
                "could not read it; chmod 755 it or remove it",
            )

    def install(self, certs: Sequence[TrustedCA], record: Recorder) -> None:
        """Write the bundles first and the environment file last, each atomically."""
        try:
            base = base_bundle(self.os_bundle)
        except UnsafePathError as exc:
            raise StoreError(self.name, f"{exc.filename} {exc.strerror}; refusing to read the "
                             "OS bundle through it: fix that component") from exc  # fmt: skip
        files = (
            (BUNDLE, combined_pem(base, certs)),
            (CUSTOM, custom_pem(certs)),
            (FIREFOX_POLICIES, self.firefox_policies(certs)),
            (ENV_FILE, self.env_text().encode("ascii")),
        )
        try:
            try:
                fd = _fs.open_dir(self.directory)
            except FileNotFoundError:
                record(Mkdir(str(self.directory)))
                fd = _fs.open_dir(self.directory, create=True, mode=0o755)
                os.fchmod(fd, 0o755)  # the umask must not hide it from the browser user
            try:
                # Every file recorded in one journal write, before the first is written.
                record(*(Write(str(self.directory), name) for name, _ in files))
                for name, data in files:
                    _fs.atomic_write(fd, name, data, 0o644)
            finally:
                os.close(fd)
        except UnsafePathError as exc:
            raise StoreError(self.name, _unsafe(exc)) from exc
        except OSError as exc:
            raise StoreError(self.name, f"{self.directory}: {exc.strerror or exc}") from exc

    def verify(self, certs: Sequence[TrustedCA]) -> None:
        """Both bundles must hold every certificate, and the environment file must name them."""
        try:
            with _fs.opened_dir(self.directory) as fd:
                bundle = _fs.read_file(fd, BUNDLE) or b""
                custom = _fs.read_file(fd, CUSTOM) or b""
                policies = _fs.read_file(fd, FIREFOX_POLICIES) or b""
                env = _fs.read_file(fd, ENV_FILE) or b""
        except OSError as exc:
            raise StoreError(self.name, f"{self.directory}: {exc.strerror or exc}") from exc
        for label, data in ((BUNDLE, bundle), (CUSTOM, custom)):
            held = set(pem_ders(data))
            missing = [ca.fingerprint_sha256 for ca in certs if ca.der not in held]
            if missing:
                raise StoreError(self.name, f"{self.directory / label} lacks {', '.join(missing)}")
        if policies != self.firefox_policies(certs):
            raise StoreError(
                self.name, f"{self.directory / FIREFOX_POLICIES} is not what was written"
            )
        if env.decode("ascii", "replace") != self.env_text():
            raise StoreError(self.name, f"{self.directory / ENV_FILE} is not what was written")

    def notices(self, certs: Sequence[TrustedCA]) -> dict[str, list[str]]:
        """None: nothing beside this store can undo what it installs."""
        return {}

    def rollback(self, entries: Sequence[Entry]) -> None:
        """Remove the files we wrote, then the directory if we made it and it is empty."""
        undo_files(entries)

    def owns(self, entry: Entry) -> bool:
        """The directory and the four files in it."""
        if isinstance(entry, Mkdir):
            return entry.path == str(self.directory)
        names = {BUNDLE, CUSTOM, FIREFOX_POLICIES, ENV_FILE}
        written = isinstance(entry, Write) and entry.original is None  # never restores bytes
        return written and owns_file(entry, self.directory, names.__contains__)


def _unsafe(exc: UnsafePathError) -> str:
    return (
        f"{exc.filename} {exc.strerror}: runtime_dir must be reached through directories only "
        "root may change; choose another runtime_dir, or fix that component"
    )


def installed(directory: Path) -> bool:
    """Whether an install wrote the environment here (the env file is written last).

    Only as the install would have written it: the directory reached by the checked walk, below
    a parent only root may write, and the file root's alone. Anything else, a directory another
    user made first say, is no environment of ours to hand to clients.
    """
    with contextlib.suppress(OSError):
        with _fs.opened_dir(directory.parent) as parent:
            _fs.check_writable_by_root_only(parent, str(directory.parent))
        with _fs.opened_dir(directory) as fd:
            return _fs.check_file(fd, ENV_FILE, str(directory / ENV_FILE)) is not None
    return False


def all_from_config(context: Registry) -> list[RuntimeEnvStore]:
    """The runtime trust environment's store: always one."""
    return [from_name(PREFIX, context)]


def from_name(name: str, context: Registry) -> RuntimeEnvStore:
    """The runtime trust environment's store, whose name is ``PREFIX`` alone."""
    cfg = context.config
    return RuntimeEnvStore(cfg.runtime_env_dir, cfg.os_store.bundle,
                           certs_dir=cfg.os_store.our_dir)  # fmt: skip
