"""Decoding of a compressed body (``Content-Encoding``), whole or one chunk at a time, never unbounded.

An upstream may compress an event stream although the client asked for ``identity``; decoding it as it
arrives lets the stream still be read and filtered without waiting for its end. The decoded size is
capped, so a small compressed body that expands enormously (a decompression bomb) fails with
``OverCapError`` instead of exhausting memory; every decompressor is asked for at most the bytes left
under the cap, so the cap holds within a single chunk too. Every gzip member and zstd frame of a body is
decoded, as curl, browsers, Node and Python do, and each coding is read as leniently as the most lenient
common client reads it, so nothing a receiver decodes stays hidden from inspection.
"""

from __future__ import annotations

import codecs
import functools
import zlib
from collections.abc import Callable
from typing import NamedTuple, Protocol

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
from backports import zstd

_ALIASES = {"x-gzip": "gzip"}
_CODINGS = ("gzip", "deflate", "br", "zstd")
_GZIP_MAGIC = b"\x1f\x8b"


class DecodingError(ValueError):
    """The body cannot be decoded: unsupported coding, corrupt or truncated data, or over the cap."""


class UninspectableError(DecodingError):
    """No detector can read the body as its receiver may: where inspection is enforced it must not pass."""


class OverCapError(UninspectableError):
    """The body decodes to more bytes than the cap allows; decoding stopped at the cap."""


class BombError(OverCapError):
    """The body decodes to far more bytes than it was sent in, more than any real API answer does: a
    decompression bomb, stopped before its output (which every later reader would have to scan) grows."""


BOMB_FLOOR = 256 << 10
"""Decoded bytes a stage may always produce, whatever its ratio: small answers compress very well."""
BOMB_RATIO = 256
"""Past the floor, decoded bytes allowed per compressed byte given so far. Event streams of real API
answers compressed whole reach 100-150x (each event repeats the same JSON frame), JSON answers 3-15x;
a gzip bomb reaches 1032x, brotli and zstd bombs far more. A bomb is stopped in the chunk that crosses
the ratio, before any of that chunk's output is scanned, so at most ``BOMB_FLOOR`` bytes of it ever are."""


class UnsupportedCodingError(UninspectableError):
    """The body is in a coding this module cannot undo (``compress``, ``x-compress``, any unknown name, or
    a list holding one): its receiver may undo it and read what no detector saw."""

    def __init__(self, encoding: str) -> None:
        super().__init__(f"is in content-encoding {encoding!r}, which cannot be decoded")


def _codings(encoding: str) -> list[str]:
    """The codings a Content-Encoding value lists, in the order they were applied."""
    names = (name.strip().lower() for name in encoding.split(","))
    return [_ALIASES.get(name, name) for name in names if name and name != "identity"]


def supported(encoding: str) -> bool:
    """Whether ``StreamDecoder`` can undo every coding the Content-Encoding value lists."""
    return all(coding in _CODINGS for coding in _codings(encoding))


class _Budget:
    """The decoded bytes one stage may still produce: at most ``limit`` in all and, with ``ratio``, at
    most ``ratio`` per byte it was given once past ``BOMB_FLOOR``."""

    def __init__(self, limit: int, ratio: int | None) -> None:
        self.limit = limit
        self.ratio = ratio
        self.used = 0
        self.given = 0

    def give[Data: (bytes, memoryview)](self, data: Data) -> Data:
        self.given += len(data)
        return data

    @property
    def _allowed(self) -> int:
        if self.ratio is None:
            return self.limit
        return min(self.limit, max(BOMB_FLOOR, self.ratio * self.given))

    @property
    def request(self) -> int:
        """How much output to ask a decompressor for: one byte past the allowance reveals an overrun."""
        return self._allowed - self.used + 1

    def spend(self, output: bytes) -> bytes:
        self.used += len(output)
        if self.used > self.limit:
            raise OverCapError(f"decoded body exceeds the cap of {self.limit} bytes")
        if self.used > self._allowed:
            raise BombError(
                f"decodes to over {self.ratio} times its {self.given} compressed bytes (a decompression bomb)"
            )
        return output


class _Stage(Protocol):
    def feed(self, data: bytes, output: list[bytes]) -> None:
        """Append what ``data`` decodes to; what was appended stays there when it raises."""

    def flush(self) -> bytes: ...


class _ZlibStage:
    """gzip or deflate, any number of members, each gzip-, zlib-wrapped or raw as its header says: curl
    inflates zlib data labelled gzip, and servers send raw deflate labelled deflate."""

    def __init__(self, coding: str, budget: _Budget) -> None:
        self._gzip = coding == "gzip"
        self._budget = budget
        self._decompressor: zlib._Decompress | None = None
        self._head = b""  # the bytes seen of a member before the two that tell its wrapping apart

    def feed(self, data: bytes, output: list[bytes]) -> None:
        data = self._budget.give(data)
        while data:
            if self._decompressor is None:
                data = self._head + data
                if len(data) < 2:
                    self._head = data
                    break
                self._head = b""
                self._decompressor = zlib.decompressobj(self._window_bits(data))
            decompressor = self._decompressor
            try:
                output.append(self._budget.spend(decompressor.decompress(data, self._budget.request)))
            except zlib.error as error:
                raise DecodingError(f"corrupt {self._name} data: {error}") from None
            if decompressor.eof:
                # A body may hold several members one after another; each decodes on its own.
                self._decompressor = None
                data = decompressor.unused_data
            else:
                data = decompressor.unconsumed_tail

    def flush(self) -> bytes:
        decompressor = self._decompressor
        if decompressor is None:
            if self._head:
                raise DecodingError(f"{self._name} data ended early")
            return b""
        try:
            rest = self._budget.spend(decompressor.flush())
        except zlib.error as error:
            raise DecodingError(f"corrupt {self._name} data: {error}") from None
        if not decompressor.eof:
            raise DecodingError(f"{self._name} data ended early")
        return rest

    @property
    def _name(self) -> str:
        return "gzip" if self._gzip else "deflate"

    def _window_bits(self, start: bytes) -> int:
        if start.startswith(_GZIP_MAGIC):
            return 16 + zlib.MAX_WBITS
        # A zlib header names method 8 and makes its first two bytes a multiple of 31.
        if start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0:
            return zlib.MAX_WBITS
        if self._gzip:
            raise DecodingError("corrupt gzip data: neither a gzip nor a zlib header")
        return -zlib.MAX_WBITS


class _BrotliStage:
    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self._decompressor = brotli.Decompressor()

    def feed(self, data: bytes, output: list[bytes]) -> None:
        try:
            piece: bytes = self._decompressor.process(
                self._budget.give(data), output_buffer_limit=self._budget.request
            )
            output.append(self._budget.spend(piece))
            # Output held back by the limit comes out of further calls with no input.
            while not self._decompressor.can_accept_more_data():
                piece = self._decompressor.process(b"", output_buffer_limit=self._budget.request)
                output.append(self._budget.spend(piece))
        except brotli.error as error:
            raise DecodingError(f"corrupt br data: {error}") from None

    def flush(self) -> bytes:
        if not self._decompressor.is_finished():
            raise DecodingError("br data ended early")
        return b""


class _ZstdStage:
    """zstd, any number of frames one after another."""

    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self._decompressor = zstd.ZstdDecompressor()
        self._in_frame = False

    def feed(self, data: bytes, output: list[bytes]) -> None:
        data = self._budget.give(data)
        while data or (self._in_frame and not self._decompressor.needs_input):
            self._in_frame = True
            try:
                piece = self._decompressor.decompress(data, max_length=self._budget.request)
            except zstd.ZstdError as error:
                raise DecodingError(f"corrupt zstd data: {error}") from None
            output.append(self._budget.spend(piece))
            data = b""
            if self._decompressor.eof:
                data = self._decompressor.unused_data
                self._decompressor = zstd.ZstdDecompressor()
                self._in_frame = False

    def flush(self) -> bytes:
        if self._in_frame:
            raise DecodingError("zstd data ended early")
        return b""


def _stage(coding: str, budget: _Budget) -> _Stage:
    if coding == "br":
        return _BrotliStage(budget)
    if coding == "zstd":
        return _ZstdStage(budget)
    return _ZlibStage(coding, budget)


class StreamDecoder:
    """Decodes a body compressed with the codings of one Content-Encoding value (``gzip``, ``deflate``,
    ``br``, ``zstd``, ``x-gzip``, ``identity``, or a comma-separated list of them).

    ``feed`` returns the bytes decoded so far from each chunk; ``flush`` ends the body and returns what
    is left. Either raises ``OverCapError`` as soon as the decoded size would pass ``max_decoded_bytes``,
    or, with ``max_ratio``, ``BombError`` as soon as a stage's output passes ``BOMB_FLOOR`` and
    ``max_ratio`` times its input (so one chunk never decodes to more than that);
    ``flush`` raises ``DecodingError`` for corrupt data met on the way (``feed`` has returned what decoded
    before it, and nothing after it) and for a body that ends inside compressed data.
    """

    def __init__(self, encoding: str, max_decoded_bytes: int, *, max_ratio: int | None = None) -> None:
        if not supported(encoding):
            raise UnsupportedCodingError(encoding)
        # The codings were applied in the order listed, so they are undone last first; each stage
        # gets its own cap, so a bomb nested inside another coding is caught as well.
        self._stages = [
            _stage(coding, _Budget(max_decoded_bytes, max_ratio)) for coding in reversed(_codings(encoding))
        ]
        self._error: DecodingError | None = None

    def feed(self, chunk: bytes) -> bytes:
        return self._decode(chunk, end=False)

    def flush(self) -> bytes:
        return self._decode(b"", end=True)

    def _decode(self, data: bytes, *, end: bool) -> bytes:
        # Corrupt data is reported at the end, as receivers that read as they go notice it: what decoded
        # before it still passes through the later stages, and nothing after it is decoded.
        if self._error is not None and not end:
            return b""
        if self._error is None:
            for stage in self._stages:
                output: list[bytes] = []
                try:
                    stage.feed(data, output)
                    if end:
                        output.append(stage.flush())
                except OverCapError:
                    raise
                except DecodingError as error:
                    self._error = self._error or error
                data = b"".join(output)
        if end and self._error is not None:
            raise self._error
        return data


class Decoded(NamedTuple):
    content: bytes
    problem: str | None
    """Why the body did not decode to its end (it was truncated); ``content`` is the part that did."""


def decode_body(raw: bytes, encoding: str, cap: int) -> Decoded:
    """A whole body decoded, no stage ever holding more than ``cap`` decoded bytes.

    Raises ``OverCapError`` for a body that decodes past the cap, ``UnsupportedCodingError`` for a coding
    it cannot undo, and ``DecodingError`` for corrupt data. A body that ends inside compressed data
    decodes to the part before the end, which is what clients that read as they receive hand on.
    """
    if not _codings(encoding):
        return Decoded(raw, None)  # nothing to undo (``identity``): most bodies
    decoder = StreamDecoder(encoding, cap)
    content = decoder.feed(raw)
    try:
        return Decoded(content + decoder.flush(), None)
    except UninspectableError:
        raise
    except DecodingError as error:
        return Decoded(content, str(error))


class Inflated(NamedTuple):
    content: bytes
    used: int
    """The bytes of ``data`` the stream took, up to its end (all of them when it did not end)."""
    ended: bool
    """The stream reached its end; False when it broke off (corrupt or cut), ``content`` what came first."""


_INFLATE_CHUNK = 64 << 10


def inflate(data: bytes | memoryview, window_bits: int, cap: int, *, probe: int | None = None) -> Inflated:
    """The one gzip, zlib or raw deflate stream (as ``window_bits`` says, zlib's convention) at the start
    of ``data``, decoded under the limits a relayed body's decoder has: at most ``cap`` bytes, and at most
    ``BOMB_RATIO`` per compressed byte past ``BOMB_FLOOR`` (``OverCapError``, ``BombError``). Corrupt data
    ends it where it breaks, what decoded before kept, as a receiver reading as it goes keeps it. With
    ``probe``, data whose first ``probe`` bytes decode to nothing is taken for no stream (not ended)."""
    budget = _Budget(cap, BOMB_RATIO)
    decompressor = zlib.decompressobj(window_bits)
    output: list[bytes] = []
    position, pending = 0, memoryview(b"")
    view = memoryview(data)
    while pending or position < len(data):
        if not pending:
            if probe is not None and position >= probe and not any(output):
                return Inflated(b"", len(data), ended=False)
            # Given a chunk at a time, so the ratio is checked against what was read so far.
            size = _INFLATE_CHUNK if probe is None or position >= probe else probe
            pending = budget.give(view[position : position + size])
            position += size
        try:
            output.append(budget.spend(decompressor.decompress(pending, budget.request)))
        except zlib.error:
            return Inflated(b"".join(output), len(data), ended=False)
        if decompressor.eof:
            used = min(position, len(data)) - len(decompressor.unused_data)
            return Inflated(b"".join(output), used, ended=True)
        pending = memoryview(decompressor.unconsumed_tail)
    return Inflated(b"".join(output), len(data), ended=False)


class Unpacker(Protocol):
    """A decompressor of the interface bzip2's, xz's and zstd's share: it keeps what it was given and not
    yet decoded, and says when it needs more."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


def unpack(
    data: bytes | memoryview, decompressor: Unpacker, errors: tuple[type[Exception], ...], cap: int
) -> Inflated:
    """The one stream at the start of ``data`` that ``decompressor`` reads (bzip2, xz, zstd), decoded under
    the limits ``inflate`` keeps; corrupt data (one of ``errors``) ends it where it breaks, what decoded
    before kept."""
    budget = _Budget(cap, BOMB_RATIO)
    output: list[bytes] = []
    position = 0
    view = memoryview(data)
    while not decompressor.eof:
        chunk = b""
        if decompressor.needs_input:
            if position >= len(data):
                break
            # Given a chunk at a time, so the ratio is checked against what was read so far.
            chunk = bytes(budget.give(view[position : position + _INFLATE_CHUNK]))
            position += len(chunk)
        try:
            output.append(budget.spend(decompressor.decompress(chunk, budget.request)))
        except errors:
            return Inflated(b"".join(output), len(data), ended=False)
    if decompressor.eof:
        return Inflated(b"".join(output), position - len(decompressor.unused_data), ended=True)
    return Inflated(b"".join(output), len(data), ended=False)


def unbrotli(data: bytes, cap: int) -> bytes:
    """What ``data`` decodes to as one brotli stream, under the limits ``inflate`` keeps; corrupt data
    ends it where it breaks, what decoded before kept (random bytes decode to short noise at most)."""
    output: list[bytes] = []
    try:
        _BrotliStage(_Budget(cap, BOMB_RATIO)).feed(data, output)
    except (OverCapError, BombError):
        raise
    except DecodingError:
        pass
    return b"".join(output)


class CappedDecoders(dict[str, Callable[[bytes], bytes | str]]):
    """A table of whole-body decoders by name, each HTTP coding capped at ``cap`` decoded bytes.

    A Content-Encoding this module supports decodes through ``decode_body`` and raises ``DecodingError``
    when over the cap, corrupt or truncated; a text charset (the same table decodes ``.text``) decodes
    to ``str`` as usual; any other name, bytes-to-bytes codecs such as ``bz2`` included, raises.
    """

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def __missing__(self, name: str) -> Callable[[bytes], bytes | str]:
        if supported(name):
            return functools.partial(self._decode, name)
        try:
            text_encoding = getattr(codecs.lookup(name), "_is_text_encoding", False)
        except LookupError:
            text_encoding = False
        if text_encoding:
            return functools.partial(codecs.decode, encoding=name)
        return functools.partial(self._refuse, name)

    def _decode(self, name: str, raw: bytes) -> bytes:
        decoded = decode_body(raw, name, self.cap)
        if decoded.problem is not None:
            raise DecodingError(decoded.problem)
        return decoded.content

    @staticmethod
    def _refuse(name: str, raw: bytes) -> bytes:
        raise UnsupportedCodingError(name)
