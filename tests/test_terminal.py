"""Text output: attacker-chosen subjects and messages reach the terminal escaped, JSON unchanged."""

from __future__ import annotations

import json
import sys
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.builders import manifest, unique
from tests.support.certs import make_ca
from tests.support.daemon import cli, write_config
from tests.support.moto import MotoServer
from tests.support.tls import https_server
from trustinstaller.config import Config
from trustinstaller.paths import NssDatabase
from trustinstaller.terminal import FIELD_LIMIT, escape

# What a terminal would act on or hide: controls, format characters, separators, and so on.
UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

FORGED = "\nstate: locked"
# A forged line, a screen clear, a window-title change, a C1 CSI, and a right-to-left override.
EVIL_CN = f"evil{FORGED}\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eexe.pdf\r\u2066x\u2069"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CN=Example Root CA,O=Example", "CN=Example Root CA,O=Example"),
        ("CN=Zürich 東京 Ωmega", "CN=Zürich 東京 Ωmega"),
        ("CN=a\\,b", "CN=a\\,b"),  # RFC 4514's own escapes are left as they are
        ("a\nstate: locked", "a\\nstate: locked"),
        ("a\r\n\tb", "a\\r\\n\\tb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b\x80\x9f", "c1\\x85\\x9b\\x80\\x9f"),
        ("\u202eabc\u202c", "\\u202eabc\\u202c"),
        ("\u202a\u202b\u202d", "\\u202a\\u202b\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("bad\udcff", "bad\\udcff"),  # a surrogate left by undecodable bytes
        ("", ""),
        (None, "None"),
        (3, "3"),
    ],
)
def test_escape_table(text: object, expected: str) -> None:
    """Controls, C1, bidi and invisible format characters become visible escapes; text stays."""
    assert escape(text) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a" * FIELD_LIMIT, FIELD_LIMIT, "a" * FIELD_LIMIT),
        ("a" * 300, FIELD_LIMIT, "a" * FIELD_LIMIT + "...[+44 chars]"),
        ("abcdef", 3, "abc...[+3 chars]"),
        # An escape is never cut in half: it goes whole, or it is counted as left out.
        ("ab\x1bcd", 5, "ab...[+3 chars]"),
        ("ab\x1bcd", 6, "ab\\x1b...[+2 chars]"),
        ("\n" * 10, 4, "\\n\\n...[+8 chars]"),
    ],
)
def test_escape_cuts_long_fields(text: str, limit: int, expected: str) -> None:
    """A field longer than its limit is cut at a whole character and says how much was left."""
    assert escape(text, limit=limit) == expected


@pytest.mark.slow
def test_escape_leaves_no_unsafe_code_point() -> None:
    """For every Unicode code point, the escaped form holds nothing a terminal would interpret."""
    for code in range(sys.maxunicode + 1):
        out = escape(chr(code))
        assert all(unicodedata.category(c) not in UNSAFE for c in out), hex(code)


def assert_inert(output: str, real: int = 0) -> None:
    """No raw control, bidi or invisible character, and no forged ``state: locked`` line."""
    for ch in output:
        assert ch == "\n" or unicodedata.category(ch) not in UNSAFE, repr(ch)
    lines = [line.strip() for line in output.splitlines()]
    assert lines.count("state: locked") == real, output


def test_check_prints_a_hostile_subject_escaped(tmp_path: Path) -> None:
    """``check`` on a CA whose subject holds a newline, ESC and U+202E prints it inert."""
    pem = tmp_path / "evil.pem"
    pem.write_text(make_ca(EVIL_CN).pem)
    done = cli("check", str(pem))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert_inert(output)
    assert "evil\\nstate: locked\\x1b[2J\\x1b]0\\;pwned\\x07\\x9b31m\\u202eexe.pdf\\r" in output
    assert len(done.stdout.splitlines()) == 1


def test_check_names_a_hostile_file_name_escaped(tmp_path: Path) -> None:
    """A PEM file name with a newline and ESC is printed escaped in the ``cannot read`` line."""
    done = cli("check", str(tmp_path / f"missing{FORGED}\x1b[2J.pem"))
    assert done.returncode == 2
    assert_inert(done.stdout + done.stderr)
    assert "missing\\nstate: locked\\x1b[2J.pem: cannot read" in done.stderr


def test_error_line_from_main_is_escaped(tmp_path: Path) -> None:
    """The ``trustinstaller: ...`` line escapes a path with a forged line and a bidi override."""
    done = cli("--config", str(tmp_path / f"c{FORGED}\u202e.toml"), "status")
    assert done.returncode == 6
    assert_inert(done.stdout + done.stderr)
    assert done.stderr.startswith("trustinstaller: config ")
    assert "c\\nstate: locked\\u202e.toml: cannot read" in done.stderr


def hostile_status(fingerprint: str) -> dict[str, object]:
    """A status document whose every text field an attacker might have chosen is hostile."""
    return {
        "state": "failed",
        "certificates": [
            {
                "fingerprint_sha256": fingerprint,
                "subject": f"CN={EVIL_CN}",
                "not_before": "2026-01-01T00:00:00Z",
                "not_after": "2027-01-01T00:00:00Z",
                "source": {"level": "certificates", "index": 0, "arn": f"arn{FORGED}\x1b[8m"},
                "duplicates": [],
                "stores": ["os", f"nss:/x{FORGED}"],
                "warnings": [f"w{FORGED}\u202e"],
            }
        ],
        "warnings": [],
        "errors": [{"kind": "refused", "object": "x", "message": "m" * 5000 + FORGED}],
    }


def test_status_text_from_a_state_file_is_escaped(config: Config, tmp_path: Path) -> None:
    """``status`` without a daemon prints a hostile status file escaped; ``--json`` is as stored."""
    doc = hostile_status("ab" * 32)
    config.state_dir.mkdir(mode=0o700, parents=True)
    (config.state_dir / "status.json").write_text(json.dumps(doc))
    (config.state_dir / "status.json").chmod(0o600)
    cfg = write_config(replace(config, socket=tmp_path / "no.sock"), tmp_path / "c.toml")

    done = cli("--config", str(cfg), "status")
    assert done.returncode == 0, done.stderr
    assert_inert(done.stdout + done.stderr)
    lines = done.stdout.splitlines()
    assert lines[1] == "state: failed"
    assert sum(line.startswith("state:") for line in lines) == 1
    assert "CN=evil\\nstate: locked\\x1b[2J" in done.stdout
    assert "from arn\\nstate: locked\\x1b[8m -> os, nss:/x\\nstate: locked" in done.stdout
    assert "warning: w\\nstate: locked\\u202e" in done.stdout
    assert "...[+" in done.stdout  # the 5000-character message is cut
    assert max(len(line) for line in lines) < 1200

    done = cli("--config", str(cfg), "status", "--json")
    shown = json.loads(done.stdout)
    assert shown["certificates"][0]["subject"] == f"CN={EVIL_CN}"
    assert shown["errors"] == doc["errors"]


def test_apply_prints_an_installed_hostile_subject_escaped(
    config: Config, moto: MotoServer, tmp_path: Path
) -> None:
    """``apply`` installs a CA whose subject forges a line, and prints that subject inert."""
    arn = moto.put_secret(unique(), make_ca(EVIL_CN).pem)
    m = tmp_path / "m.json"
    m.write_bytes(manifest([arn]))
    cfg = write_config(replace(config, socket=tmp_path / "no.sock"), tmp_path / "c.toml")
    done = cli("--config", str(cfg), "apply", str(m))
    assert done.returncode == 0, done.stdout + done.stderr
    assert_inert(done.stdout + done.stderr, real=1)  # the one real line, from the real lock
    assert done.stdout.splitlines()[1] == "state: locked"
    assert "CN=evil\\nstate: locked\\x1b[2J" in done.stdout


def test_verify_text_escapes_the_url_and_paths(config: Config, tmp_path: Path) -> None:
    """``verify`` prints a URL and an NSS path holding a forged line escaped; ``--json`` raw."""
    nss = f"{tmp_path}/nss{FORGED}\u202e"
    db = NssDatabase(Path(nss))
    cfg = write_config(replace(config, socket=tmp_path / "no.sock", nss_databases=(db,)),
                       tmp_path / "c.toml")  # fmt: skip
    with https_server(make_ca("verify root")) as url:
        hostile_url = f"{url}x{FORGED}\x1b[2J"
        done = cli("--config", str(cfg), "verify", hostile_url)
        shown = cli("--config", str(cfg), "verify", "--json", hostile_url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert_inert(done.stdout + done.stderr)
    assert "x\\nstate: locked\\x1b[2J:" in done.stdout
    assert "nss\\nstate: locked\\u202e: missing" in done.stdout
    assert json.loads(shown.stdout)[-1]["location"] == nss
