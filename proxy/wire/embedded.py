"""What a binary body or part holds compressed inside it, opened as a receiver that unpacks it would.

A file sent whole (an upload's part, an ``application/octet-stream`` body) may be compressed, or hold
compressed files: gzip, a zlib or raw deflate stream, a zip archive, a tar of gzip'd files. Its printable
runs (``proxy.wire.printable``) show nothing of the text inside, so its streams are decoded, under the
limits a relayed body's decoder has (``proxy.wire.decoding.inflate``), and what they decode to is read
too, opened again where it holds compressed streams itself (a ``.tar.gz`` inside a zip), ``MAX_DEPTH``
levels deep.

What is opened: at the first byte, a zlib stream or, where no header names a format, a raw deflate stream
and a brotli one (neither has a header to know it by, so any binary start is tried; what random bytes
decode to is short noise); and wherever they start, found by their magic bytes, every gzip member, every
zip member read from its local header (a deflated one decoded, a stored one read on as the bytes it is,
so a gzip inside it is found too), a zlib stream after a PDF's ``stream`` keyword, and every bzip2, xz
and zstd stream. What is not: raw deflate or zlib elsewhere (nothing marks where it starts), zip members
found only through the central directory, brotli anywhere but at the first byte (nothing marks where it
starts either), and other formats (7z, rar, encrypted zip members), whose bytes are read as they are.
Past ``MAX_STARTS`` places where magic bytes occur, nothing more is opened, and that is an error: a file
crafted with that many (decoys before the one that matters) cannot be read through.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import NamedTuple

from backports import zstd

from proxy.wire.decoding import Inflated, OverCapError, Unpacker, inflate, unbrotli, unpack

MAX_DEPTH = 3
"""Levels of compression opened inside one another (gzip inside zip inside gzip)."""
MAX_STARTS = 1 << 14
"""Places where a stream's magic bytes occur, read in one body, part or message (every level of it): each
costs a look, and a stream opened or a probe that finds none some tens of microseconds."""
_GZIP = b"\x1f\x8b\x08"
"""A gzip member's magic and its one method, deflate."""
_ZIP_LOCAL = b"PK\x03\x04"
_PDF_STREAM = b"stream"
"""A PDF keyword a stream's data follows, on the next line: zlib where its filter is FlateDecode."""
_LINE_END = re.compile(rb"\r?\n")
_BZIP2 = b"BZh"
_BZIP2_BLOCK = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")
"""bzip2's magic, its block size, and the magic of its first block (or of its end, for an empty one)."""
_UNPACKERS: dict[bytes, tuple[Callable[[], Unpacker], tuple[type[Exception], ...]]] = {
    b"\xfd7zXZ\x00": (lzma.LZMADecompressor, (lzma.LZMAError, EOFError)),
    b"\x28\xb5\x2f\xfd": (zstd.ZstdDecompressor, (zstd.ZstdError, EOFError)),
    _BZIP2: (bz2.BZ2Decompressor, (OSError, EOFError)),
}
"""The formats read through ``unpack``, by their magic bytes, with their decompressor and its errors."""
PROBE_BYTES = 4 << 10
"""A stream that decodes to nothing from this much of it is not one (a gzip header whose name never
ends reads to the end of the content): trying one costs at most this."""
_ZIP_HEADER = struct.Struct("<4sHHHHHIIIHH")
_DEFLATED = 8


class Opened(NamedTuple):
    contents: list[bytes]
    """What each stream decoded to, outermost first."""
    error: OverCapError | None
    """Decoding stopped at the cap, at a ratio only a decompression bomb reaches, or past ``MAX_STARTS``:
    what came after it was not read."""


class _Opening:
    """What the streams of one content decoded to so far, held to one cap over all of them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.found: list[bytes] = []
        self.decoded = 0
        self.starts = 0

    @property
    def left(self) -> int:
        return self.cap - self.decoded

    def add(self, content: bytes) -> None:
        self.found.append(content)
        self.decoded += len(content)

    def count_start(self) -> None:
        self.starts += 1
        if self.starts > MAX_STARTS:
            raise OverCapError(f"holds over {MAX_STARTS} places where a compressed stream may start")


def opened(content: bytes, cap: int) -> Opened:
    """What the compressed streams in ``content`` decode to, at most ``cap`` bytes in all (each stream
    also held to the bomb ratio)."""
    opening = _Opening(cap)
    try:
        _open(content, opening, 1)
    except OverCapError as error:
        return Opened(opening.found, error)
    return Opened(opening.found, None)


def _open(content: bytes, opening: _Opening, depth: int) -> None:
    for stream in _streams(content, opening, raw=depth == 1):
        opening.add(stream)
        if depth < MAX_DEPTH:
            _open(stream, opening, depth + 1)


def _streams(content: bytes, opening: _Opening, *, raw: bool) -> Iterator[bytes]:
    """The streams of ``content``, first to last; with ``raw``, a raw deflate stream at the first byte
    where no header names another format (not tried on what a stream decoded to, which is rarely raw
    deflate again)."""
    view = memoryview(content)
    position = 0
    if not content.startswith((_GZIP, _ZIP_LOCAL, *_UNPACKERS)) and (_is_zlib(content) or (raw and content)):
        first = inflate(view, zlib.MAX_WBITS if _is_zlib(content) else -zlib.MAX_WBITS, opening.left)
        if first.content:
            yield first.content
        if first.ended:
            position = first.used
        # Random bytes may read as a short raw deflate stream that ends: brotli is tried regardless.
        if raw and (brotli := unbrotli(content, opening.left)):
            yield brotli
    starts = _Starts(content)
    while (start := starts.after(position)) >= 0:
        opening.count_start()
        # Past its magic, where nothing was decoded: what follows a broken stream, or a stored zip
        # member's bytes, may hold another; past a stream's end where it ended.
        position = start + 1
        inflated, data = _stream_at(view, start, opening.left)
        if inflated is None:
            continue
        if inflated.content:
            yield inflated.content
        if inflated.ended:
            position = max(position, data + inflated.used)


class _Starts:
    """Where the magic bytes of a stream next occur, each kind looked for again only once passed."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.ahead = dict.fromkeys((_GZIP, _ZIP_LOCAL, _PDF_STREAM, *_UNPACKERS), -2)
        """Per magic, where it next occurs (-1: nowhere further; -2: not looked for yet)."""

    def after(self, position: int) -> int:
        """The first place at or after ``position`` where a magic occurs, or -1."""
        for magic, found in self.ahead.items():
            if found == -2 or 0 <= found < position:
                self.ahead[magic] = self.content.find(magic, position)
        return min((found for found in self.ahead.values() if found >= 0), default=-1)


def _is_zlib(content: bytes | memoryview, start: int = 0) -> bool:
    """A zlib header (deflate, its check bits right) at ``start``."""
    head = content[start : start + 2]
    return len(head) == 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


def _stream_at(view: memoryview, start: int, cap: int) -> tuple[Inflated | None, int]:
    """The stream whose magic bytes are at ``start`` decoded (None where they start none that is tried:
    a stored zip member, read on as the bytes it is, or a PDF stream that is not zlib), and where its
    compressed data begins."""
    for magic, (decompressor, errors) in _UNPACKERS.items():
        if view[start : start + len(magic)] == magic:
            if magic == _BZIP2 and _BZIP2_BLOCK.match(view, start) is None:
                return None, start
            return unpack(view[start:], decompressor(), errors, cap), start
    if view[start : start + 4] == _ZIP_LOCAL:
        if start + _ZIP_HEADER.size > len(view):
            return None, start
        fields = _ZIP_HEADER.unpack_from(view, start)
        method, name_length, extra_length = itemgetter(3, 9, 10)(fields)
        if method != _DEFLATED:
            return None, start
        window_bits, start = -zlib.MAX_WBITS, start + _ZIP_HEADER.size + name_length + extra_length
    elif view[start : start + 3] == _GZIP:
        window_bits = 16 + zlib.MAX_WBITS
    else:
        line_end = _LINE_END.match(view, start + len(_PDF_STREAM))
        if line_end is None or not _is_zlib(view, line_end.end()):
            return None, start
        window_bits, start = zlib.MAX_WBITS, line_end.end()
    return inflate(view[start:], window_bits, cap, probe=PROBE_BYTES), start
