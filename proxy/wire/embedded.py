"""What a binary body or part holds compressed inside it, opened as a receiver that unpacks it would.

A file sent whole (an upload's part, an ``application/octet-stream`` body) may be compressed: gzip, a
zlib or raw deflate stream, a zip archive. Its printable runs (``proxy.wire.printable``) show nothing of
the text inside, so the streams that start it are decoded, under the limits a relayed body's decoder has
(``proxy.wire.decoding.inflate``), and what they decode to is read too, opened again where it is itself
compressed (a ``.tar.gz`` inside a zip), ``MAX_DEPTH`` levels deep.

What is opened: every gzip member one after another from the first byte; a zlib stream at the first
byte; a zip archive's members (stored or deflated) from a local file header at the first byte, one
after another; and otherwise a raw deflate stream at the first byte (raw deflate has no header to know
it by, so any binary start is tried; what random bytes decode to is short noise). What is not: a stream
that starts later than the first byte (a zip after a self-extractor, an archive inside a tar), zip
members found only through the central directory, and other formats (bzip2, xz, zstd, brotli, 7z, rar,
encrypted zip members), whose bytes are read as they are.
"""

from __future__ import annotations

import struct
import zlib
from operator import itemgetter
from typing import NamedTuple

from proxy.wire.decoding import OverCapError, inflate

MAX_DEPTH = 3
"""Levels of compression opened inside one another (gzip inside zip inside gzip)."""
MAX_MEMBERS = 1024
"""Zip members opened from one archive; the rest are read as they are."""
_GZIP = b"\x1f\x8b"
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_HEADER = struct.Struct("<4sHHHHHIIIHH")
_DEFLATED = 8
_SIZE_IN_DESCRIPTOR = 0x08


class Opened(NamedTuple):
    contents: list[bytes]
    """What each stream decoded to, outermost first."""
    error: OverCapError | None
    """Decoding stopped at the cap, or at a ratio only a decompression bomb reaches: what came after it
    was not read."""


def opened(content: bytes, cap: int) -> Opened:
    """What the compressed streams at the start of ``content`` decode to, at most ``cap`` bytes in all
    (each stream also held to the bomb ratio)."""
    found: list[bytes] = []
    try:
        _open(content, cap, 1, found)
    except OverCapError as error:
        return Opened(found, error)
    return Opened(found, None)


def _open(content: bytes, cap: int, depth: int, found: list[bytes]) -> None:
    for stream in _streams(content, cap - sum(map(len, found)), raw=depth == 1):
        found.append(stream)
        if depth < MAX_DEPTH:
            _open(stream, cap, depth + 1, found)


def _streams(content: bytes, cap: int, *, raw: bool) -> list[bytes]:
    """The streams at the start of ``content``; with ``raw``, a raw deflate stream where no header names
    another format (not tried on what a stream decoded to, which is rarely raw deflate again)."""
    if content.startswith(_GZIP):
        return _gzip_members(content, cap)
    if content.startswith(_ZIP_LOCAL):
        return _zip_members(content, cap)
    if len(content) >= 2 and content[0] & 0x0F == 8 and (content[0] << 8 | content[1]) % 31 == 0:
        window_bits = zlib.MAX_WBITS
    elif raw and content:
        window_bits = -zlib.MAX_WBITS
    else:
        return []
    decoded = inflate(content, window_bits, cap).content
    return [decoded] if decoded else []


def _gzip_members(content: bytes, cap: int) -> list[bytes]:
    """Every gzip member one after another, as gzip readers read them."""
    members: list[bytes] = []
    rest = content
    while rest.startswith(_GZIP):
        inflated = inflate(rest, 16 + zlib.MAX_WBITS, cap - sum(map(len, members)))
        if inflated.content:
            members.append(inflated.content)
        if not inflated.ended:
            break
        rest = inflated.rest
    return members


def _zip_members(content: bytes, cap: int) -> list[bytes]:
    """The deflated members of a zip archive read from its local headers; a stored member's bytes are the
    archive's own, read as they are."""
    members: list[bytes] = []
    position = 0
    while len(members) < MAX_MEMBERS and content.startswith(_ZIP_LOCAL, position):
        if position + _ZIP_HEADER.size > len(content):
            break
        fields = _ZIP_HEADER.unpack_from(content, position)
        flags, method, compressed_size, name_length, extra_length = itemgetter(2, 3, 7, 9, 10)(fields)
        start = position + _ZIP_HEADER.size + name_length + extra_length
        if method == _DEFLATED:
            inflated = inflate(content[start:], -zlib.MAX_WBITS, cap - sum(map(len, members)))
            if inflated.content:
                members.append(inflated.content)
            end = len(content) - len(inflated.rest) if inflated.ended else len(content)
        else:
            end = start + compressed_size
        if flags & _SIZE_IN_DESCRIPTOR:
            # The sizes follow the data, in a descriptor: the next member starts at the next local header.
            following = content.find(_ZIP_LOCAL, end)
            end = following if following >= 0 else len(content)
        position = end
    return members
