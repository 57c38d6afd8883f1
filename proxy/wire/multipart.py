"""Where the parts of a ``multipart/*`` body (a file upload beside form fields) sit, read from the body.

A body with a binary part (a file) is binary as a whole, yet its text fields are text that leaves: each
part is located so that the text ones can be inspected, and rewritten, on their own. The boundary is read
from the body's first line, as a receiver finds the parts, not from the Content-Type parameter.
"""

from __future__ import annotations

import re

_FIRST_LINE = re.compile(rb"--([^\r\n]{1,200})\r\n")


def part_spans(body: bytes) -> list[tuple[int, int]] | None:
    """The (start, end) offsets of each part's content, after its headers; None when the body does not
    begin with a multipart boundary line."""
    first = _FIRST_LINE.match(body)
    if first is None:
        return None
    delimiter = b"\r\n--" + first.group(1)
    spans: list[tuple[int, int]] = []
    position = first.end()
    while True:
        headers_end = body.find(b"\r\n\r\n", position)
        if headers_end < 0:
            return spans
        start = headers_end + 4
        end = body.find(delimiter, start)
        if end < 0:
            spans.append((start, len(body)))
            return spans
        spans.append((start, end))
        position = end + len(delimiter)
        if body[position : position + 2] == b"--":
            return spans
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
