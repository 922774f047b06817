"""A throwaway browser user that exists only inside a private mount namespace.

The host's /etc/passwd and /etc/group are never changed: copies with one more
line are bind-mounted over them inside the namespace, so ``pwd.getpwnam`` there
(the agent resolving ``browser_users``) and ``setpriv`` (running a client as the
user) both see the user. Its home is a fresh directory under /tmp, owned by it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.clientenv import BASE_PATH, clean_env
from tests.support.ns import PrivateNamespace

NAME = "ti-browser"


def free_uid(start: int = 64100) -> int:
    """A uid (and gid of the same number) that the host's passwd does not use."""
    uid = start
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


@dataclass
class BrowserUser:
    """The user's name, ids and home, as seen inside the namespace."""

    name: str
    uid: int
    home: Path

    def argv(self, argv: Sequence[str], **env: str) -> list[str]:
        """``argv`` run as this user with a clean environment: HOME, USER, PATH, then ``env``."""
        return [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--",
            *clean_env(**{"HOME": str(self.home), "USER": self.name, **env}), *argv,
        ]  # fmt: skip

    def remove_home(self) -> None:
        """Delete the home directory and everything the clients left in it."""
        shutil.rmtree(self.home, ignore_errors=True)


def add_browser_user(ns: PrivateNamespace, name: str = NAME) -> BrowserUser:
    """Create the user inside ``ns`` only, with a fresh home under /tmp owned by it."""
    uid = free_uid()
    # Outside pytest's 0700 tree, so the user can reach its own home.
    home = Path(tempfile.mkdtemp(prefix=f"{name}-home-"))
    home.chmod(0o755)
    os.chown(home, uid, uid)
    etc = ns.scratch / "etc-user"
    etc.mkdir(exist_ok=True)
    passwd, group = etc / "passwd", etc / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"{name}:x:{uid}:{uid}:browser:{home}:/bin/sh\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"{name}:x:{uid}:\n")
    for copy, target in ((passwd, "/etc/passwd"), (group, "/etc/group")):
        copy.chmod(0o644)
        done = ns.run(["mount", "--bind", str(copy), target])
        if done.returncode != 0:
            raise RuntimeError(f"bind {target} in the namespace failed: {done.stderr}")
    check = ns.run(["getent", "passwd", name])
    if str(home) not in check.stdout:
        raise RuntimeError(f"user {name} not visible in the namespace: {check.stdout!r}")
    if name in Path("/etc/passwd").read_text():
        raise RuntimeError("the host's /etc/passwd changed: the bind leaked")
    return BrowserUser(name, uid, home)


__all__ = ["BASE_PATH", "BrowserUser", "add_browser_user", "clean_env", "free_uid"]
