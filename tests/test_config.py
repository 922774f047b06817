"""Configuration: which file is read, and every key's type and range, refused by name.

The file is found as ``--config PATH``, else ``$TRUSTINSTALLER_CONFIG``, else
/etc/trustinstaller/config.toml if it exists, else the defaults. The default path is tested in a
private mount namespace over a throwaway layer on /etc, never the host's own /etc.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import cli, write_config
from trustinstaller import config
from trustinstaller.config import Config
from trustinstaller.errors import ConfigError
from trustinstaller.stores.debian import DebianPaths

# -- each key: wrong types and out-of-range values ---------------------------------------------

BAD = [
    # The three paths: strings, absolute.
    ("socket", 3, "socket: must be an absolute path"),
    ("socket", "run/ti.sock", "socket: must be an absolute path"),
    ("state_dir", ["/run/x"], "state_dir: must be an absolute path"),
    ("state_dir", "", "state_dir: must be an absolute path"),
    ("runtime_dir", "relative/env", "runtime_dir: must be an absolute path"),
    ("runtime_dir", "/run/with space", "runtime_dir: may hold only letters"),
    ("runtime_dir", "/run/quote'd", "runtime_dir: may hold only letters"),
    ("status_socket", "run/ti-status.sock", "status_socket: must be an absolute path"),
    ("status_socket", "/run/ti-status.sock", "status_socket: is served only with socket_group"),
    # Timeouts: positive numbers of seconds; a bool is not a number here.
    ("update_timeout", 0, "update_timeout: must be a positive number of seconds"),
    ("update_timeout", -1.5, "update_timeout: must be a positive number of seconds"),
    ("certutil_timeout", "30", "certutil_timeout: must be a positive number of seconds"),
    ("certutil_timeout", True, "certutil_timeout: must be a positive number of seconds"),
    ("request_timeout", 0.0, "request_timeout: must be a positive number of seconds"),
    ("request_timeout", [10], "request_timeout: must be a positive number of seconds"),
    # allowed_uids: a list of non-negative integers.
    ("allowed_uids", 0, "allowed_uids: must be a list of non-negative integers"),
    ("allowed_uids", [-1], "allowed_uids: must be a list of non-negative integers"),
    ("allowed_uids", ["0"], "allowed_uids: must be a list of non-negative integers"),
    ("allowed_uids", [True], "allowed_uids: must be a list of non-negative integers"),
    ("allowed_uids", [0, 1.5], "allowed_uids: must be a list of non-negative integers"),
    # socket_group and endpoint_url: non-empty strings.
    ("socket_group", "", "socket_group: must be a non-empty string"),
    ("socket_group", 65534, "socket_group: must be a non-empty string"),
    ("endpoint_url", "", "endpoint_url: must be a non-empty string"),
    ("endpoint_url", ["https://x"], "endpoint_url: must be a non-empty string"),
    ("endpoint_url", "ftp://vpce.example", "endpoint_url: must start with https://"),
    ("endpoint_url", "vpce.example", "endpoint_url: must start with https://"),
    # browser_users: names of users who exist and are not root.
    ("browser_users", "browser", "browser_users: must be a list of user names"),
    ("browser_users", [""], "browser_users: must be a list of user names"),
    ("browser_users", [1000], "browser_users: must be a list of user names"),
    ("browser_users", ["no-such-user-trustinstaller"], "browser_users: no user"),
    ("browser_users", ["root"], "browser_users: 'root' is root"),
    # nss_databases: 'sql:' and an absolute path.
    ("nss_databases", "sql:/srv/nssdb", "nss_databases: must be a list"),
    ("nss_databases", ["dbm:/srv/nssdb"], "nss_databases: 'dbm:/srv/nssdb': use 'sql:'"),
    ("nss_databases", ["sql:srv/nssdb"], "nss_databases: 'sql:srv/nssdb': use 'sql:'"),
    # firefox_policies: a list of absolute file paths.
    ("firefox_policies", "/etc/firefox/policies/policies.json", "firefox_policies: must be a list"),
    ("firefox_policies", ["policies.json"], "firefox_policies: must be an absolute path"),
    ("firefox_policies", ["/"], "firefox_policies: '/': name a file"),
    ("firefox_policies", ["/etc/../x.json"], "firefox_policies: '/etc/../x.json': name a file"),
    # chromium_policies: a list of absolute directory paths.
    ("chromium_policies", "/etc/chromium/policies/managed", "chromium_policies: must be a list"),
    ("chromium_policies", ["managed"], "chromium_policies: must be an absolute path"),
    ("chromium_policies", ["/"], "chromium_policies: '/': name a directory"),
    ("chromium_policies", ["/etc/../m"], "chromium_policies: '/etc/../m': name a directory"),
    # os_store: a table of known keys, each an absolute path.
    ("os_store", "/etc/ssl", "os_store: must be a table"),
    ("os_store", {"local_certs": "/x"}, "os_store.local_certs: unknown key"),
    ("os_store", {"etc_certs_dir": "etc/ssl/certs"}, "os_store.etc_certs_dir: must be an abs"),
    ("os_store", {"hooks_dir": 3}, "os_store.hooks_dir: must be an absolute path"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_is_refused_by_name(key: str, value: object, message: str) -> None:
    """A wrong type or an out-of-range value is a ConfigError naming the source and the key."""
    with pytest.raises(ConfigError, match=f"^config test.toml: {re.escape(message)}"):
        config.from_mapping({key: value}, source="test.toml")


GOOD = [
    ("socket", "/run/x/ti.sock", "socket", Path("/run/x/ti.sock")),
    ("state_dir", "/run/x", "state_dir", Path("/run/x")),
    ("runtime_dir", "/run/x-env", "runtime_env_dir", Path("/run/x-env")),
    ("update_timeout", 5, "update_timeout", 5.0),
    ("certutil_timeout", 0.5, "certutil_timeout", 0.5),
    ("request_timeout", 1, "request_timeout", 1.0),
    ("allowed_uids", [0, 1000], "allowed_uids", (0, 1000)),
    ("allowed_uids", [], "allowed_uids", ()),
    ("socket_group", "nogroup", "socket_group", "nogroup"),
    ("endpoint_url", "https://vpce.example", "endpoint_url", "https://vpce.example"),
    ("endpoint_url", "http://127.0.0.1:5000", "endpoint_url", "http://127.0.0.1:5000"),
    ("firefox_policies", [], "firefox_policies", ()),
    ("firefox_policies", ["/a/p.json", "/a/p.json"], "firefox_policies", (Path("/a/p.json"),)),
    ("chromium_policies", [], "chromium_policies", ()),
    (
        "chromium_policies",
        ["/a/m", "/b/m", "/a/m"],
        "chromium_policies",
        (Path("/a/m"), Path("/b/m")),
    ),
    (
        "os_store",
        {"certs_conf": "/srv/ca.conf"},
        "os_store",
        DebianPaths(certs_conf=Path("/srv/ca.conf")),
    ),
]


@pytest.mark.parametrize(
    ("key", "value", "attribute", "expected"), GOOD, ids=[f"{k}={v!r}" for k, v, _, _ in GOOD]
)
def test_good_value_is_taken(key: str, value: object, attribute: str, expected: object) -> None:
    """A value of the right type and range reaches the Config as given (numbers as floats)."""
    got = getattr(config.from_mapping({key: value}), attribute)
    assert got == expected
    assert type(got) is type(expected)


def test_status_socket_defaults_beside_the_control_socket() -> None:
    """The status socket is NAME-status.sock beside the control socket, or where it is set."""
    assert config.from_mapping({"socket": "/run/ti.sock"}).status_socket_path == Path(
        "/run/ti-status.sock"
    )
    # Not in the 0700 state directory, where the default socket is.
    assert config.from_mapping({}).status_socket_path == Path("/run/trustinstaller-status.sock")
    cfg = config.from_mapping({"socket_group": "nogroup", "status_socket": "/srv/s.sock"})
    assert cfg.status_socket_path == Path("/srv/s.sock")
    with pytest.raises(ConfigError, match="status_socket: must not be the control socket's path"):
        config.from_mapping(
            {"socket": "/run/a.sock", "socket_group": "nogroup", "status_socket": "/run/a.sock"}
        )


def test_the_configuration_imports_no_store() -> None:
    """Reading a configuration loads no store module: the stores depend on it, not the reverse."""
    code = (
        "import sys; from trustinstaller import config; config.from_mapping({}); "
        "print(sorted(m for m in sys.modules if m.startswith('trustinstaller.stores')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_unset_key_keeps_its_default() -> None:
    """Keys left out keep the documented defaults."""
    cfg = config.from_mapping({})
    assert cfg.socket == Path("/run/trustinstaller/trustinstaller.sock")
    assert cfg.state_dir == Path("/run/trustinstaller")
    assert cfg.runtime_env_dir == Path("/run/trustinstaller-env")
    assert cfg.allowed_uids == (0,)
    assert (cfg.socket_group, cfg.endpoint_url) == (None, None)
    assert (cfg.update_timeout, cfg.certutil_timeout, cfg.request_timeout) == (300.0, 30.0, 10.0)
    assert cfg.os_store == DebianPaths(
        local_certs_dir=Path("/usr/local/share/ca-certificates"),
        etc_certs_dir=Path("/etc/ssl/certs"),
        certs_dir=Path("/usr/share/ca-certificates"),
        certs_conf=Path("/etc/ca-certificates.conf"),
        hooks_dir=Path("/etc/ca-certificates/update.d"),
    )


def test_unknown_key_is_refused_and_the_allowed_ones_named() -> None:
    """A misspelt key is refused, not ignored: the message names it and lists the keys."""
    with pytest.raises(ConfigError, match=r"^config c.toml: sokcet: unknown key \(allowed: ") as e:
        config.from_mapping({"sokcet": "/run/x.sock", "state_dir": "/run/x"}, source="c.toml")
    assert "socket, socket_group, state_dir" in str(e.value)


# -- the file: TOML, and which file ------------------------------------------------------------


def test_bad_toml_is_refused_with_the_file_named(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError naming the file, and the CLI exits 6."""
    bad = tmp_path / "bad.toml"
    bad.write_text('socket = "/run/x.sock\nstate_dir = \n')
    with pytest.raises(ConfigError, match=f"^config {re.escape(str(bad))}: not valid TOML: "):
        config.load(bad)
    done = cli("--config", str(bad), "status")
    assert done.returncode == 6
    assert done.stderr.startswith(f"trustinstaller: config {bad}: not valid TOML")


def test_missing_file_is_refused_not_defaulted(tmp_path: Path) -> None:
    """A named file that cannot be read is an error, never a silent fall back to the defaults."""
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"^config {re.escape(str(missing))}: cannot read: "):
        config.load(missing)


def toml(path: Path, state_dir: Path) -> Path:
    path.write_text(f'state_dir = "{state_dir}"\nsocket = "{state_dir}/ti.sock"\n')
    return path


def test_env_var_names_the_file_and_config_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TRUSTINSTALLER_CONFIG is read when no --config is given; --config wins over it."""
    from_env = toml(tmp_path / "env.toml", tmp_path / "from-env")
    from_arg = toml(tmp_path / "arg.toml", tmp_path / "from-arg")
    monkeypatch.setenv(config.ENV_VAR, str(from_env))
    assert config.load().state_dir == tmp_path / "from-env"
    assert config.load(from_arg).state_dir == tmp_path / "from-arg"
    # The CLI the same way: ``status`` with no daemon names the state directory it read.
    done = cli("status", env={config.ENV_VAR: str(from_env)})
    assert done.returncode == 0, done.stderr
    assert f"source: state directory {tmp_path / 'from-env'} (no daemon answered)" in done.stdout
    done = cli("--config", str(from_arg), "status", env={config.ENV_VAR: str(from_env)})
    assert f"source: state directory {tmp_path / 'from-arg'} (no daemon answered)" in done.stdout
    # A variable naming a missing file is an error too.
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml: cannot read"):
        config.load()


# Runs in a new mount namespace: a throwaway overlay on /etc (writes land in $1/upper, never in
# the host's /etc) and a tmpfs on /run, then /etc/trustinstaller as the test wants it, then the
# CLI. Refuses to go on unless both mounts took.
IN_NAMESPACE = r"""
set -eu
scratch=$1; mode=$2; shift 2
mkdir -p "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$scratch/upper,workdir=$scratch/work" /etc
mountpoint -q /etc
mount -t tmpfs -o mode=0755 tmpfs /run
mountpoint -q /run
rm -rf /etc/trustinstaller
case "$mode" in
    none) ;;
    file) mkdir /etc/trustinstaller; cp "$scratch/config.toml" /etc/trustinstaller/config.toml ;;
esac
exec "$@"
"""


def cli_in_namespace(
    scratch: Path, mode: str, *args: str, env_var: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a private mount namespace with /etc/trustinstaller as ``mode`` says."""
    env = {k: v for k, v in os.environ.items() if k != config.ENV_VAR}
    if env_var is not None:
        env[config.ENV_VAR] = env_var
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_NAMESPACE, "sh",
         str(scratch), mode, sys.executable, "-m", "trustinstaller", *args],
        capture_output=True, text=True, timeout=120, check=False, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A scratch directory for the overlay's layers and the config to place."""
    d = tmp_path / "ns"
    d.mkdir()
    return d


@pytest.mark.root
def test_default_path_is_read_when_nothing_names_a_file(scratch: Path) -> None:
    """With no --config and no variable, /etc/trustinstaller/config.toml is the configuration."""
    toml(scratch / "config.toml", Path("/run/from-default-path"))
    done = cli_in_namespace(scratch, "file", "status")
    assert done.returncode == 0, done.stderr
    assert "source: state directory /run/from-default-path (no daemon answered)" in done.stdout
    # Its errors name it.
    (scratch / "config.toml").write_text("bogus_key = 1\n")
    done = cli_in_namespace(scratch, "file", "status")
    assert done.returncode == 6
    assert "config /etc/trustinstaller/config.toml: bogus_key: unknown key" in done.stderr
    # The variable still wins over it, and an empty variable counts as unset.
    other = toml(scratch / "other.toml", Path("/run/from-variable"))
    done = cli_in_namespace(scratch, "file", "status", env_var=str(other))
    assert "source: state directory /run/from-variable (no daemon answered)" in done.stdout
    done = cli_in_namespace(scratch, "file", "status", env_var="")
    assert done.returncode == 6
    assert "config /etc/trustinstaller/config.toml" in done.stderr


@pytest.mark.root
def test_without_the_default_file_the_defaults_apply(scratch: Path) -> None:
    """No /etc/trustinstaller/config.toml and nothing named: the built-in defaults, no error."""
    host_had_it = Path("/etc/trustinstaller").exists()
    done = cli_in_namespace(scratch, "none", "status")
    assert done.returncode == 0, done.stderr
    assert "source: state directory /run/trustinstaller (no daemon answered)" in done.stdout
    assert "state: open" in done.stdout
    # The host's /etc is as it was: the overlay took every write.
    assert Path("/etc/trustinstaller").exists() == host_had_it


# -- the idle exit: TRUSTINSTALLER_IDLE_EXIT ----------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf", "nan", "1e999", " "])
def test_bad_idle_exit_refuses_to_start(value: str, config: Config, tmp_path: Path) -> None:
    """A TRUSTINSTALLER_IDLE_EXIT that is not a positive finite number stops serve with exit 6."""
    cfg = write_config(config, tmp_path / "c.toml")
    done = subprocess.run(
        [sys.executable, "-m", "trustinstaller", "--config", str(cfg), "serve"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, "TRUSTINSTALLER_IDLE_EXIT": value},
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert done.stderr == (
        f"trustinstaller: TRUSTINSTALLER_IDLE_EXIT={value!r}: must be a positive number of "
        "seconds\n"
    )
    assert not config.socket.exists()
