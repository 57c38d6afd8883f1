"""Incremental decoding of a compressed response body (``Content-Encoding``), one chunk at a time.

An upstream may compress an event stream although the client asked for ``identity``; decoding it as it
arrives lets the stream still be read and filtered without waiting for its end. The decoded size is
capped, so a small compressed body that expands enormously (a decompression bomb) fails with a
``DecodingError`` instead of exhausting memory; every decompressor is asked for at most the bytes left
under the cap, so the cap holds within a single chunk too.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
from backports import zstd

DEFAULT_MAX_DECODED_BYTES = 64 << 20
_ALIASES = {"x-gzip": "gzip"}
_CODINGS = ("gzip", "deflate", "br", "zstd")


class DecodingError(ValueError):
    """The body cannot be decoded: unsupported coding, corrupt or truncated data, or over the cap."""


def _codings(encoding: str) -> list[str]:
    """The codings a Content-Encoding value lists, in the order they were applied."""
    names = (name.strip().lower() for name in encoding.split(","))
    return [_ALIASES.get(name, name) for name in names if name and name != "identity"]


def supported(encoding: str) -> bool:
    """Whether ``StreamDecoder`` can undo every coding the Content-Encoding value lists."""
    return all(coding in _CODINGS for coding in _codings(encoding))


class _Budget:
    """The decoded bytes one stage may still produce."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def request(self) -> int:
        """How much output to ask a decompressor for: one byte past the cap reveals an overrun."""
        return self.limit - self.used + 1

    def spend(self, output: bytes) -> bytes:
        self.used += len(output)
        if self.used > self.limit:
            raise DecodingError(f"decoded body exceeds {self.limit} bytes")
        return output


class _Stage(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _ZlibStage:
    """gzip (any number of members) or deflate (zlib-wrapped or raw, told apart by the header)."""

    def __init__(self, coding: str, budget: _Budget) -> None:
        self._gzip = coding == "gzip"
        self._budget = budget
        self._decompressor: zlib._Decompress | None = None
        self._head = b""  # deflate: the bytes seen before the two that tell the wrapping apart
        self._ended = False

    def feed(self, data: bytes) -> bytes:
        output: list[bytes] = []
        while data:
            if self._decompressor is None:
                if self._ended and not self._gzip:
                    raise DecodingError("data after the end of the deflate stream")
                data = self._head + data
                if not self._gzip and len(data) < 2:
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
                # A gzip body may hold several members one after another; each decodes on its own.
                self._decompressor = None
                self._ended = True
                data = decompressor.unused_data
            else:
                data = decompressor.unconsumed_tail
        return b"".join(output)

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
        if self._gzip:
            return 16 + zlib.MAX_WBITS
        # RFC 9110 deflate is zlib-wrapped, but servers also send raw deflate; a zlib header names
        # method 8 and makes its first two bytes a multiple of 31.
        wrapped = start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


class _BrotliStage:
    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self._decompressor = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        output: list[bytes] = []
        try:
            piece: bytes = self._decompressor.process(data, output_buffer_limit=self._budget.request)
            output.append(self._budget.spend(piece))
            # Output held back by the limit comes out of further calls with no input.
            while not self._decompressor.can_accept_more_data():
                piece = self._decompressor.process(b"", output_buffer_limit=self._budget.request)
                output.append(self._budget.spend(piece))
        except brotli.error as error:
            raise DecodingError(f"corrupt br data: {error}") from None
        return b"".join(output)

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

    def feed(self, data: bytes) -> bytes:
        output: list[bytes] = []
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
        return b"".join(output)

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
    is left. Both raise ``DecodingError`` on corrupt data, on a body that ends inside compressed data,
    and when the decoded size would pass ``max_decoded_bytes``.
    """

    def __init__(self, encoding: str, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        if not supported(encoding):
            raise DecodingError(f"unsupported content-encoding {encoding!r}")
        # The codings were applied in the order listed, so they are undone last first; each stage
        # gets its own cap, so a bomb nested inside another coding is caught as well.
        self._stages = [_stage(coding, _Budget(max_decoded_bytes)) for coding in reversed(_codings(encoding))]

    def feed(self, chunk: bytes) -> bytes:
        data = chunk
        for stage in self._stages:
            data = stage.feed(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for stage in self._stages:
            data = stage.feed(data) + stage.flush()
        return data
