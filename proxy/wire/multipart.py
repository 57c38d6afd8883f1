"""Where the parts of a ``multipart/*`` body (a file upload beside form fields) sit, read from the body.

A body with a binary part (a file) is binary as a whole, yet its text fields are text that leaves: each
part is located so that the text ones can be inspected, and rewritten, on their own. The boundary is read
from the body's first line, where every client puts the one its Content-Type names.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value

_FIRST_LINE = re.compile(rb"--([^\r\n]{1,200})\r\n")


def part_spans(body: bytes) -> list[tuple[int, int]] | None:
    """The (start, end) offsets of each part's content, after its headers; None when the body does not
    begin with a multipart boundary line."""
    found = _parts(body)
    return None if found is None else [(start, end) for _, start, end in found]


def part_headers(body: bytes) -> list[tuple[dict[str, str], int, int]] | None:
    """Each part's headers (names in lower case; the last of a repeated name) with the offsets of its
    content; None when the body does not begin with a multipart boundary line."""
    found = _parts(body)
    if found is None:
        return None
    return [(_headers(body[head:start]), start, end) for head, start, end in found]


def frame_text(body: bytes) -> str | None:
    """What a multipart body sends around its parts' contents, one line of text each, to be scanned
    together: the boundary, every line of each part's headers (a file's name, a field's name: a receiver
    keeps them, OpenAI lists an uploaded file by its name), each header's parameters as receivers read
    them (RFC 2231 continuations ``filename*0``, ``filename*1`` joined and percent-decoded), and whatever
    follows the closing boundary. None when the body does not begin with a boundary line."""
    first = _FIRST_LINE.match(body)
    if first is None:
        return None
    found = _parts(body) or []
    lines = [_text(first.group(1))]
    for head, start, _ in found:
        for line in _text(body[head : max(head, start - 4)]).split("\r\n"):
            if line.strip():
                lines.append(line)
                lines += _parameters(line)
    closing = b"\r\n--" + first.group(1) + b"--"
    last_end = found[-1][2] if found else first.end()
    if body.startswith(closing, last_end):
        lines.append(_text(body[last_end + len(closing) :]))
    return "\n".join(lines)


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
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parts(body: bytes) -> list[tuple[int, int, int]] | None:
    """(start of its headers, start of its content, end) of each part."""
    first = _FIRST_LINE.match(body)
    if first is None:
        return None
    delimiter = b"\r\n--" + first.group(1)
    parts: list[tuple[int, int, int]] = []
    position = first.end()
    while True:
        headers_end = body.find(b"\r\n\r\n", position)
        if headers_end < 0:
            return parts
        start = headers_end + 4
        end = body.find(delimiter, start)
        if end < 0:
            parts.append((position, start, len(body)))
            return parts
        parts.append((position, start, end))
        position = end + len(delimiter)
        if body[position : position + 2] == b"--":
            return parts
        position += 2  # the CRLF after the boundary


def replace_parts(body: bytes, contents: dict[int, bytes]) -> bytes:
    """``body`` with the content of each part numbered in ``contents`` replaced."""
    spans = part_spans(body) or []
    pieces, position = [], 0
    for index, (start, end) in enumerate(spans):
        if index in contents:
            pieces += [body[position:start], contents[index]]
            position = end
    return b"".join([*pieces, body[position:]])
