"""Who may connect to a Unix socket: its mode and its POSIX access ACL, read and written.

Connecting to a Unix socket needs write permission on its inode, and nothing else on it. The
control socket is 0600 root; a uid in ``allowed_uids`` other than root gets a named-user ACL
entry of its own, never a group. Quirks this module exists for, one per line:
- The ACL is the xattr ``system.posix_acl_access``: a little-endian version 2 header, then
  (tag u16, perm u16, id u32) entries, sorted by tag and then id, as acl_valid(3) requires.
- With a named entry the ACL needs a mask, and the mode's group bits then show the mask, not
  the owning group's rights: 0660 on such a socket does not mean the group may connect.
- An fd's fsetxattr on a socket acts on the socket, not on its inode in the filesystem: the
  ACL is set by path (the path's directory has passed the checked walk).
- ProtectSystem=strict makes /run read-only for the service: a socket systemd made there
  cannot be given an ACL from inside the service (EROFS), only by the socket unit.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_ENTRY = struct.Struct("<HHI")
_W = 0o2  # the permission connect(2) checks on a socket


@dataclass(frozen=True)
class Access:
    """Who besides the owner may connect, as the mode and the ACL say."""

    owner: int
    users: frozenset[int]  # named users with write permission, after the mask
    group: bool  # the owning group, or any named group, may connect
    other: bool


def encode(users: frozenset[int]) -> bytes:
    """An access ACL: the owner rw, each of ``users`` rw, the group and others nothing."""
    entries = [(_USER_OBJ, 0o6, _NO_ID)]
    entries += [(_USER, 0o6, uid) for uid in sorted(users)]
    entries += [(_GROUP_OBJ, 0, _NO_ID), (_MASK, 0o6, _NO_ID), (_OTHER, 0, _NO_ID)]
    return struct.pack("<I", _VERSION) + b"".join(_ENTRY.pack(*e) for e in entries)


def decode(data: bytes, owner: int) -> Access:
    """Who an access ACL lets connect; ValueError if it is not one."""
    if len(data) < 4 or (len(data) - 4) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    if struct.unpack_from("<I", data)[0] != _VERSION:
        raise ValueError("POSIX ACL of an unknown version")
    entries = [_ENTRY.unpack_from(data, off) for off in range(4, len(data), _ENTRY.size)]
    masks = [perm for tag, perm, _ in entries if tag == _MASK]
    mask = masks[0] if masks else 0o7
    users = frozenset(i for tag, p, i in entries if tag == _USER and p & mask & _W)
    group = any(tag in (_GROUP_OBJ, _GROUP) and p & mask & _W for tag, p, _ in entries)
    other = any(tag == _OTHER and p & _W for tag, p, _ in entries)
    return Access(owner, users - {owner}, group, other)


def access(path: str) -> Access:
    """Who may connect to the socket at ``path``, from its mode and its ACL if it has one."""
    st = os.stat(path, follow_symlinks=False)
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.ENOTSOCK, "not a socket", path)
    try:
        return decode(os.getxattr(path, XATTR, follow_symlinks=False), st.st_uid)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP):
            raise
    return Access(st.st_uid, frozenset(), bool(st.st_mode & 0o020), bool(st.st_mode & 0o002))


def grant(path: str, users: frozenset[int]) -> None:
    """Let exactly the owner and ``users`` connect to the socket at ``path``; OSError if not."""
    os.setxattr(path, XATTR, encode(users), follow_symlinks=False)
