"""Header fields whose value holds a bare CR, LF or NUL, which their readers split differently.

mitmproxy keeps such a character inside the one value it reads and sends it on as written, while Python's
``http.client`` and ``http.server`` (and so urllib3 and requests) end a header line at a bare CR as well:
``X-Note: a<CR>Host: other`` is one field to the proxy and two to them, a Host, a length or a
Content-Type no check here read among them. RFC 9110 5.5 lets a recipient reject such a value or read
each of those characters as a space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FIELD_BREAK = re.compile(rb"[\r\n\x00]")
_NAMED = {b"\r": "a bare CR", b"\n": "a bare LF", b"\x00": "a NUL"}
_MAX_SHOWN = 80


def field_break(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why one of ``fields`` reads as other fields to some of its readers, or None."""
    for name, value in fields:
        found = FIELD_BREAK.search(value)
        if found is not None:
            shown = name[:_MAX_SHOWN].decode("latin-1")
            return f"header {shown!r} holds {_NAMED[found.group()]}, where some readers end its line"
    return None


def mend_field_breaks(fields: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """``fields`` with each bare CR, LF or NUL of a value read as a space, the one reading every reader
    shares, and how many fields changed."""
    mended = []
    changed = 0
    for name, value in fields:
        spaced = FIELD_BREAK.sub(b" ", value)
        changed += spaced != value
        mended.append((name, spaced))
    return tuple(mended), changed
