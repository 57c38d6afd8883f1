"""Where the parts of a ``multipart/*`` body (a file upload beside form fields) sit, read from the body.

A body with a binary part (a file) is binary as a whole, yet its text fields are text that leaves: each
part is located so that the text ones can be inspected, and rewritten, on their own. The boundary is the
one the Content-Type names where the caller has it; else the first boundary line whose closing delimiter
follows it, read from the body. Lines end in CRLF or a bare LF (receivers take either), and whatever comes
before the first boundary (the preamble, which receivers skip) is part of the frame.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value

_BOUNDARY_LINE = re.compile(rb"(?:^|\n)--([^\r\n]{1,200}?)[ \t]*\r?\n")
"""A line that opens a part: ``--`` and the boundary, transport padding, then CRLF or LF."""
_LINE_BREAK = re.compile(rb"\r?\n")
_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_NO_HEADERS = re.compile(rb"\r?\n")
MAX_CANDIDATES = 16
"""Boundary lines tried, when the Content-Type names none, for the one whose closing delimiter follows."""


def part_spans(body: bytes, boundary: bytes | None = None) -> list[tuple[int, int]] | None:
    """The (start, end) offsets of each part's content, after its headers; None when the body holds no
    multipart boundary line."""
    found = _parts(body, boundary)
    return None if found is None else [(start, end) for _, start, end in found]


def part_headers(body: bytes, boundary: bytes | None = None) -> list[tuple[dict[str, str], int, int]] | None:
    """Each part's headers (names in lower case; the last of a repeated name) with the offsets of its
    content; None when the body holds no multipart boundary line."""
    found = _parts(body, boundary)
    if found is None:
        return None
    return [(_headers(body[head:start]), start, end) for head, start, end in found]


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary a multipart Content-Type names, as its receiver reads the parameter."""
    if not content_type or not content_type.strip().lower().startswith("multipart/"):
        return None
    message = Message()
    try:
        message["content-type"] = content_type
        boundary = message.get_param("boundary")
    except (ValueError, LookupError):
        return None
    if not isinstance(boundary, str | tuple) or not boundary:
        return None
    return collapse_rfc2231_value(boundary).encode("utf-8", "surrogateescape")


def frame_text(body: bytes, boundary: bytes | None = None) -> str | None:
    """What a multipart body sends around its parts' contents, one line of text each, to be scanned
    together: the preamble before the first boundary, the boundary, every line of each part's headers (a
    file's name, a field's name: a receiver keeps them, OpenAI lists an uploaded file by its name), each
    header's parameters as receivers read them (RFC 2231 continuations ``filename*0``, ``filename*1``
    joined and percent-decoded), and whatever follows the closing boundary. None when the body holds no
    boundary line."""
    first = _first_boundary(body, boundary)
    if first is None:
        # A receiver that looks for the boundary its Content-Type names reads all of it as the preamble.
        return _text(body) if boundary is not None else None
    found = _parts(body, boundary) or []
    lines = [_text(body[: first.start()]), _text(first.group(1))]
    for head, start, _ in found:
        for line in _LINE_BREAK.split(body[head:start]):
            if line.strip():
                lines.append(_text(line))
                lines += _parameters(_text(line))
    last_end = found[-1][2] if found else first.end()
    closing = _closing(first.group(1)).match(body, last_end)
    if closing is not None:
        lines.append(_text(body[closing.end() :]))
    return "\n".join(line for line in lines if line)


def framed_otherwise(body: bytes, boundary: bytes) -> bool:
    """Whether a body whose Content-Type names ``boundary`` opens with another boundary line: a receiver
    frames its parts by the one named, a reader that takes the body's first boundary line by that one,
    so the two read different parts."""
    guessed = _first_boundary(body, None)
    return guessed is not None and guessed.group(1) != boundary


def _first_boundary(body: bytes, boundary: bytes | None) -> re.Match[bytes] | None:
    """The line that opens the first part: of ``boundary`` where given; else the first boundary line whose
    closing delimiter follows it (a preamble's own ``--`` line closes nothing), or the first of all."""
    # A line start is no literal a regular expression's search skips ahead to: without this test it
    # would try each byte of every body, JSON ones too (0.1 ms for 8 KB, at every reading of a body).
    opening = b"--" + (boundary or b"")
    if not (body.startswith(opening) or b"\n" + opening in body):
        return None
    if boundary is not None:
        return re.compile(rb"(?:^|\n)--(" + re.escape(boundary) + rb")[ \t]*\r?\n").search(body)
    first = None
    for _, line in zip(range(MAX_CANDIDATES), _BOUNDARY_LINE.finditer(body), strict=False):
        if _closing(line.group(1)).search(body, line.end()):
            return line
        first = first or line
    return first


def _closing(boundary: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"\r?\n--" + re.escape(boundary) + rb"--")


def _parameters(line: str) -> list[str]:
    """The values of a header line's parameters that a receiver reads otherwise than they are written:
    in pieces or encoded (``name*=``, ``name*0=``)."""
    name, _, value = line.partition(":")
    if "*" not in value:
        return []
    message = Message()
    try:
        message[name.strip() or "x"] = value
        parameters = message.get_params(header=name.strip() or "x") or []
    except (ValueError, LookupError):
        return []
    return [collapse_rfc2231_value(parameter) for _, parameter in parameters[1:]]


def _text(raw: bytes) -> str:
    """Header bytes as a receiver may read them: UTF-8 (what browsers and SDKs send for a non-ASCII file
    name), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in _LINE_BREAK.split(block):
        name, colon, value = _text(line).partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parts(body: bytes, boundary: bytes | None = None) -> list[tuple[int, int, int]] | None:
    """(start of its headers, start of its content, end) of each part."""
    first = _first_boundary(body, boundary)
    if first is None:
        return None
    delimiter = re.compile(rb"\r?\n--" + re.escape(first.group(1)) + rb"(--)?[ \t]*(?:\r?\n)?")
    parts: list[tuple[int, int, int]] = []
    position = first.end()
    while True:
        headers_end = _NO_HEADERS.match(body, position) or _HEADERS_END.search(body, position)
        if headers_end is None:
            return parts
        start = headers_end.end()
        end = delimiter.search(body, start)
        if end is None:
            parts.append((position, start, len(body)))
            return parts
        parts.append((position, start, end.start()))
        if end.group(1):
            return parts
        position = end.end()


def replace_parts(body: bytes, contents: dict[int, bytes]) -> bytes:
    """``body`` with the content of each part numbered in ``contents`` replaced."""
    spans = part_spans(body) or []
    pieces, position = [], 0
    for index, (start, end) in enumerate(spans):
        if index in contents:
            pieces += [body[position:start], contents[index]]
            position = end
    return b"".join([*pieces, body[position:]])
