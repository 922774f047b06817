"""Configuration: TOML from ``--config PATH`` or ``TRUSTINSTALLER_CONFIG``, strictly checked."""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustinstaller._run import Account
from trustinstaller.errors import ConfigError
from trustinstaller.paths import (
    CHROMIUM_POLICY_DIRS,
    FIREFOX_SYSTEM_POLICIES,
    SAFE_VALUE,
    DebianPaths,
    NssDatabase,
)

ENV_VAR = "TRUSTINSTALLER_CONFIG"
DEFAULT_PATH = Path("/etc/trustinstaller/config.toml")
DEFAULT_STATE_DIR = Path("/run/trustinstaller")


def user_nss_databases(user: Account) -> tuple[NssDatabase, ...]:
    """Both NSS databases Chromium may read for ``user``; the user's own, worked on as the user."""
    # Chromium M146+ reads ~/.pki/nssdb if it exists, else ~/.local/share/pki/nssdb; a profile
    # may be created before or after us, so both get the CAs. The paths are only strings here:
    # root never looks them up.
    return (
        NssDatabase(user.home / ".pki" / "nssdb", user),
        NssDatabase(user.home / ".local" / "share" / "pki" / "nssdb", user),
    )


@dataclass(frozen=True)
class Config:
    """Everything the agent reads from its configuration file."""

    socket: Path = DEFAULT_STATE_DIR / "trustinstaller.sock"
    state_dir: Path = DEFAULT_STATE_DIR
    # Chromium and Chrome trust through their managed policy, for every user and HOME: an NSS
    # database is only for what that policy does not reach, and only when asked for.
    nss_databases: tuple[NssDatabase, ...] = ()
    allowed_uids: tuple[int, ...] = (0,)
    socket_group: str | None = None
    # With socket_group: where that group reads the status (GET only). Default: beside socket.
    status_socket: Path | None = None
    endpoint_url: str | None = None
    os_store: DebianPaths = field(default_factory=DebianPaths)
    update_timeout: float = 300.0
    certutil_timeout: float = 30.0
    # All of one user's steps in one install, rollback included (see _run.UserBudget).
    user_store_timeout: float = 20.0
    request_timeout: float = 10.0
    # Bounds the whole fetch phase: throttled and 5xx calls are retried until it runs out.
    fetch_timeout: float = 60.0
    # Seconds a locked, socket-activated daemon waits idle before it exits; None: it stays.
    # TRUSTINSTALLER_IDLE_EXIT, when set, overrides it.
    idle_exit: float | None = None
    browser_users: tuple[str, ...] = ()
    runtime_dir: Path | None = None
    # Set the runtime trust variables in systemd's manager environment, where systemd runs, so
    # that services started after the install get them (docs/clients.md says why it is on).
    systemd_environment: bool = True
    # Firefox's policies.json files. Left out of the file: /etc/firefox/policies/policies.json
    # where Firefox is installed, which from_mapping finds out (a Config() probes nothing).
    firefox_policies: tuple[Path, ...] = ()
    # Managed-policy directories that get CACertificates: Chromium's and Google Chrome's.
    chromium_policies: tuple[Path, ...] = CHROMIUM_POLICY_DIRS

    @property
    def status_socket_path(self) -> Path:
        """The status socket: ``status_socket``, else ``NAME-status.sock`` beside ``socket``.

        Beside the state directory instead when ``socket`` is in it: that directory is 0700,
        and the group could not reach a socket there.
        """
        if self.status_socket is not None:
            return self.status_socket
        name = f"{self.socket.stem}-status{self.socket.suffix}"
        if self.socket.parent == self.state_dir:
            return self.state_dir.parent / name
        return self.socket.with_name(name)

    @property
    def runtime_env_dir(self) -> Path:
        """Where the runtime trust environment goes: beside the 0700 state directory, not in it."""
        return self.runtime_dir or self.state_dir.with_name(f"{self.state_dir.name}-env")


_PATH_KEYS = {"socket", "status_socket", "state_dir", "runtime_dir"}
_OS_KEYS = {"local_certs_dir", "etc_certs_dir", "certs_dir", "certs_conf", "hooks_dir", "dpkg_dir"}
_TIMEOUT_KEYS = {
    "update_timeout",
    "certutil_timeout",
    "user_store_timeout",
    "request_timeout",
    "fetch_timeout",
    "idle_exit",
}
_KEYS = (
    _PATH_KEYS
    | _TIMEOUT_KEYS
    | {
        "nss_databases",
        "browser_users",
        "allowed_uids",
        "socket_group",
        "endpoint_url",
        "os_store",
        "firefox_policies",
        "chromium_policies",
        "systemd_environment",
    }
)


# Turns a key and a reason into the error naming the configuration file.
_Fail = Callable[[str, str], ConfigError]
# Config's keyword arguments, each checked against its key's rules from the parsed TOML: the
# TOML boundary, where a value's type is known only once its key's check has passed.
_Settings = dict[str, Any]


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load ``path``, else ``$TRUSTINSTALLER_CONFIG``, else /etc/trustinstaller/config.toml."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        if not DEFAULT_PATH.is_file():
            return from_mapping({}, source="defaults")
        chosen = DEFAULT_PATH
    try:
        with open(chosen, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config {chosen}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {chosen}: not valid TOML: {exc}") from exc
    return from_mapping(data, source=str(chosen))


def from_mapping(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Build a Config from parsed TOML, refusing unknown keys and wrong types.

    What depends on the host is resolved here, once: a key left out that has no plain default
    (``firefox_policies``) gets the host's.
    """

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"config {source}: {key}: {reason}")

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
    kw: _Settings = {}
    for part in (_paths, _timeouts, _databases, _access):
        kw.update(part(data, fail))
    _check_together(kw, fail)
    for part in (_os_store, _policies):
        kw.update(part(data, fail))
    kw.setdefault("firefox_policies", installed_firefox_policies())
    return Config(**kw)


def installed_firefox_policies() -> tuple[Path, ...]:
    """Firefox's system policy file when Firefox is installed, else nothing."""
    if shutil.which("firefox") or shutil.which("firefox-esr"):
        return (FIREFOX_SYSTEM_POLICIES,)
    return ()


def _paths(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """The absolute paths: the sockets, the state directory and runtime_dir."""
    kw = {key: _abs_path(data[key], key, fail) for key in _PATH_KEYS if key in data}
    if "runtime_dir" in kw and not SAFE_VALUE.fullmatch(str(kw["runtime_dir"])):
        # Its paths are written into a file that both sh and systemd read, unquoted-safe only.
        raise fail("runtime_dir", "may hold only letters, digits and / . _ + @ -")
    return kw


def _timeouts(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """Each timeout: a positive, finite number of seconds."""
    kw: _Settings = {}
    for key in _TIMEOUT_KEYS:
        if key in data:
            v = data[key]
            # Not "v <= 0": NaN and inf (valid TOML floats) must be refused too.
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
                raise fail(key, "must be a positive number of seconds")
            kw[key] = float(v)
    return kw


def _databases(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """``nss_databases``, and the databases of each of ``browser_users``."""
    kw: _Settings = {}
    dbs: list[NssDatabase] = []
    if "nss_databases" in data:
        if not isinstance(data["nss_databases"], list):
            raise fail("nss_databases", _NSS_SHAPE)
        dbs = [_nss_database(d, fail) for d in data["nss_databases"]]
    if "browser_users" in data:
        users = data["browser_users"]
        if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
            raise fail("browser_users", "must be a list of user names like 'browser'")
        kw["browser_users"] = tuple(users)
        # Explicit databases stay; with only browser_users, root's default is not added.
        for u in users:
            dbs += user_nss_databases(_account(u, "browser_users", fail))
    if "nss_databases" in data or "browser_users" in data:
        kw["nss_databases"] = _unique_databases(dbs, fail)
    return kw


def _access(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """Who may reach the daemon, and how: uids, the group, the endpoint, systemd's environment."""
    kw: _Settings = {}
    if "systemd_environment" in data:
        if not isinstance(data["systemd_environment"], bool):
            raise fail("systemd_environment", "must be true or false")
        kw["systemd_environment"] = data["systemd_environment"]
    if "allowed_uids" in data:
        uids = data["allowed_uids"]
        if not isinstance(uids, list) or not all(
            isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in uids
        ):
            raise fail("allowed_uids", "must be a list of non-negative integers")
        kw["allowed_uids"] = tuple(uids)
    for key in ("socket_group", "endpoint_url"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise fail(key, "must be a non-empty string")
            kw[key] = data[key]
    return kw


def _check_together(kw: Mapping[str, Any], fail: _Fail) -> None:
    """What one key allows another: the status socket, and the endpoint's scheme."""
    if "status_socket" in kw and "socket_group" not in kw:
        raise fail("status_socket", "is served only with socket_group; set socket_group too")
    if "status_socket" in kw and kw["status_socket"] == kw.get("socket", Config.socket):
        raise fail("status_socket", "must not be the control socket's path")
    if "endpoint_url" in kw and not kw["endpoint_url"].startswith(("https://", "http://")):
        raise fail("endpoint_url", "must start with https:// (or http:// for a local test server)")


def _os_store(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """The ``os_store`` table: update-ca-certificates' directories, each absolute."""
    if "os_store" not in data:
        return {}
    table = data["os_store"]
    if not isinstance(table, dict):
        raise fail("os_store", "must be a table")
    bad = sorted(set(table) - _OS_KEYS)
    if bad:
        raise fail(f"os_store.{bad[0]}", f"unknown key (allowed: {', '.join(sorted(_OS_KEYS))})")
    paths = {k: _abs_path(v, f"os_store.{k}", fail) for k, v in table.items()}
    return {"os_store": DebianPaths(**paths)}


def _policies(data: Mapping[str, Any], fail: _Fail) -> _Settings:
    """The browser policy keys that are set."""
    return {
        key: _policy_paths(data[key], key, kind, example, fail)
        for key, kind, example in _POLICY_KEYS
        if key in data
    }


# Browser policy keys: a list of absolute paths, each a file or a directory, [] for none.
_POLICY_KEYS = (
    ("firefox_policies", "file", "/etc/firefox/policies/policies.json"),
    ("chromium_policies", "directory", "/etc/chromium/policies/managed"),
)


def _policy_paths(
    value: object, key: str, kind: str, example: str, fail: _Fail
) -> tuple[Path, ...]:
    """A browser policy key: absolute paths without '..', each once, in order."""
    if not isinstance(value, list):
        raise fail(key, f"must be a list of {kind} paths like '{example}', or [] for none")
    paths = [_abs_path(v, key, fail) for v in value]
    for path in paths:
        if path == Path("/") or ".." in path.parts:
            raise fail(key, f"{str(path)!r}: name a {kind}, without '..'")
    return tuple(dict.fromkeys(paths))


_NSS_SHAPE = (
    "must be a list of 'sql:/absolute/dir' strings (root's databases) or "
    "{path = 'sql:/absolute/dir', owner = 'user'} tables (a user's)"
)


def _nss_database(entry: object, fail: _Fail) -> NssDatabase:
    """One ``nss_databases`` entry: a string (root's), or a table with ``path`` and ``owner``."""
    owner: Account | None = None
    if isinstance(entry, dict):
        bad = sorted(set(entry) - {"path", "owner"})
        if bad or not isinstance(entry.get("path"), str) or not isinstance(entry.get("owner"), str):
            raise fail("nss_databases", f"{entry!r}: {_NSS_SHAPE}")
        owner = _account(entry["owner"], "nss_databases", fail)
        spec = entry["path"]
    elif isinstance(entry, str):
        spec = entry
    else:
        raise fail("nss_databases", _NSS_SHAPE)
    if not spec.startswith("sql:/"):
        raise fail("nss_databases", f"{spec!r}: use 'sql:' and an absolute path")
    db = NssDatabase.parse(spec, owner)
    if ".." in db.directory.parts:
        raise fail("nss_databases", f"{spec!r}: no '..' components")
    return db


def _unique_databases(
    dbs: list[NssDatabase] | tuple[NssDatabase, ...], fail: _Fail
) -> tuple[NssDatabase, ...]:
    """Each directory once; the same directory with two owners is a contradiction."""
    seen: dict[Path, NssDatabase] = {}
    for db in dbs:
        other = seen.setdefault(db.directory, db)
        if other.owner != db.owner:
            raise fail("nss_databases", f"{db.directory} is listed with two different owners")
    return tuple(seen.values())


def _account(name: str, key: str, fail: _Fail) -> Account:
    try:
        user = Account.lookup(name)
    except KeyError:
        raise fail(key, f"no user {name!r} on this host") from None
    if user.uid == 0:
        raise fail(key, f"{name!r} is root: list root's databases as plain 'sql:' paths")
    return user


def _abs_path(value: object, key: str, fail: _Fail) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise fail(key, "must be an absolute path")
    return Path(value)
