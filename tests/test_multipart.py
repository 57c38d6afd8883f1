"""Locating the parts of a multipart body, and replacing the content of some of them."""

from __future__ import annotations

import pytest

from proxy.wire.multipart import part_spans, replace_parts

BODY = (
    b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x00\x01binary\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello there\r\n'
    b"--xyz--\r\n"
)


def test_parts_are_located_after_their_headers() -> None:
    """Each span is a part's content alone: no headers, no delimiter."""
    assert [BODY[start:end] for start, end in part_spans(BODY) or []] == [b"\x00\x01binary", b"hello there"]


@pytest.mark.parametrize("body", [b"", b"plain text", b'{"json": 1}', b"--\r\n"])
def test_a_body_without_a_boundary_line_is_not_multipart(body: bytes) -> None:
    """Only a body that begins with a boundary line is read as parts."""
    assert part_spans(body) is None


def test_a_cut_body_keeps_the_parts_it_has() -> None:
    """A body that ends inside a part still yields that part, up to the end."""
    cut = BODY[: BODY.index(b"there") + 3]
    assert [cut[start:end] for start, end in part_spans(cut) or []] == [b"\x00\x01binary", b"hello the"]


def test_replacing_a_part_leaves_the_others_and_the_framing() -> None:
    """Only the numbered part's content changes."""
    replaced = replace_parts(BODY, {1: b"[REDACTED]"})
    assert replaced == BODY.replace(b"hello there", b"[REDACTED]")
