"""Text for a terminal: attacker-chosen text (a subject, a tool's output) printed inertly.

A certificate's subject is whatever its maker chose. Printed raw, a newline forges a line
of our own output (``state: locked``), ESC sequences drive the terminal (retitle it, clear
it, hide text), and bidi overrides (U+202E) make text read backwards. So every field the
CLI prints in text form goes through :func:`escape`. The JSON outputs do not: JSON's own
escaping covers control characters, and a program reads them.
"""

from __future__ import annotations

import unicodedata

FIELD_LIMIT = 256
# A message can join several problems and a tool's last lines, so it gets more room.
MESSAGE_LIMIT = 1024

# Categories a terminal may act on or show as nothing: controls (C0, DEL, C1), format
# characters (bidi overrides and isolates, zero-width ones, U+061C), surrogates left by
# undecodable bytes, private use, unassigned code points, and the Unicode line and paragraph
# separators, which some terminals and pagers break lines at.
_ESCAPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A backslash is left as it is: RFC 4514 subjects are full of them ("CN=Acme\, Inc."), and a
# literal "\x1b" in a subject is only text that looks like an escape, never a control.


def escape(text: object, *, limit: int = FIELD_LIMIT) -> str:
    """``text`` on one line with nothing a terminal would interpret, cut past ``limit`` chars.

    Escapes look like Python's: ``\\n``, ``\\x1b``, ``\\u202e``. A cut field ends with
    ``...[+N chars]``, N counting the characters left out.
    """
    s = str(text)
    out: list[str] = []
    used = 0
    for i, ch in enumerate(s):
        piece = _escape_char(ch)
        if used + len(piece) > limit:
            out.append(f"...[+{len(s) - i} chars]")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def _escape_char(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    if unicodedata.category(ch) not in _ESCAPED:
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
