"""Locating the parts of a multipart body, replacing the content of some of them, and reading a body or
a part in the charset and transfer encoding it declares."""

from __future__ import annotations

import pytest

from proxy.wire.charsets import UnreadableEncodingError, declared_charsets, part_readings, read_in
from proxy.wire.multipart import frame_text, part_spans, replace_parts

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


def test_the_frame_is_every_header_line_the_boundary_and_the_epilogue() -> None:
    """What leaves around the parts' contents, a line each: the boundary, each header line of each part as
    sent (UTF-8 where it reads so), its parameters as receivers read them (RFC 2231 pieces joined and
    percent-decoded), and what follows the closing boundary."""
    body = (
        b'--b0und\r\nContent-Disposition: form-data; name="file"; '
        b"filename*0*=UTF-8''r%C3%A9s; filename*1=um.txt\r\n"
        b"X-Note: caf\xc3\xa9\r\n\r\ncontent\r\n--b0und--\r\ntrailing words\r\n"
    )
    assert frame_text(body) == "\n".join(
        [
            "b0und",
            "Content-Disposition: form-data; name=\"file\"; filename*0*=UTF-8''r%C3%A9s; filename*1=um.txt",
            "file",
            "résum.txt",
            "X-Note: café",
            "\r\ntrailing words\r\n",
        ]
    )
    assert frame_text(BODY) == "\n".join(
        [
            "xyz",
            'Content-Disposition: form-data; name="file"',
            'Content-Disposition: form-data; name="note"',
            "\r\n",
        ]
    )
    assert frame_text(b"plain text") is None


def test_replacing_a_part_leaves_the_others_and_the_framing() -> None:
    """Only the numbered part's content changes."""
    replaced = replace_parts(BODY, {1: b"[REDACTED]"})
    assert replaced == BODY.replace(b"hello there", b"[REDACTED]")


def test_declared_charsets_are_read_however_the_parameter_is_spelled() -> None:
    """Every charset parameter, quoted or not, in any case, with spaces about its ``=``, and each of two."""
    assert declared_charsets("text/plain; charset=utf-7") == ["utf-7"]
    assert declared_charsets('text/plain;CHARSET="cp500"') == ["cp500"]
    assert declared_charsets("text/plain; format=flowed; charset = 'IBM037' ") == ["IBM037"]
    assert declared_charsets("text/plain; charset=utf-8; charset=utf-16") == ["utf-8", "utf-16"]
    assert declared_charsets("text/plain; xcharset=utf-7") == []
    assert declared_charsets(None) == [] and declared_charsets("text/plain") == []


def test_a_utf16_body_without_a_byte_order_mark_is_read_in_both_orders() -> None:
    """Receivers disagree on the order of UTF-16 or UTF-32 without a mark: both readings are made."""
    readings = read_in("hi".encode("utf-16-be"), "UTF-16")
    assert "hi" in readings and len(readings) == 2
    assert read_in("hi".encode("utf-16"), "utf-16") == ["hi"]
    assert read_in(b"plain", "UTF8") == [] and read_in(b"plain", "us-ascii") == []


@pytest.mark.parametrize("charset", ["x-unknown", "base64", "rot13", "undefined", ""])
def test_a_charset_no_codec_reads_is_unreadable(charset: str) -> None:
    with pytest.raises(UnreadableEncodingError):
        read_in(b"hello", charset)


def form(*parts: tuple[str, bytes]) -> bytes:
    body = b"".join(
        b"--b\r\n" + headers.encode() + b"\r\n\r\n" + content + b"\r\n" for headers, content in parts
    )
    return body + b"--b--\r\n"


def test_a_part_is_read_as_its_transfer_encoding_and_charset_say() -> None:
    """Each encoded part is decoded in place; parts that read as they are stay as sent."""
    body = form(
        ("Content-Disposition: form-data; name=a", b"plain"),
        ("Content-Transfer-Encoding: BASE64", b"c2Vj\r\ncmV0"),
        ("content-transfer-encoding: quoted-printable", b"=73=65=63"),
        ("Content-Type: text/plain; charset=cp500", "ebcdic".encode("cp500")),
    )
    (reading,) = part_readings(body) or []
    spans = part_spans(reading) or []
    assert [reading[start:end] for start, end in spans] == [b"plain", b"secret", b"sec", b"ebcdic"]
    assert part_readings(form(("Content-Transfer-Encoding: 8bit", b"plain"))) is None
    assert part_readings(b"not multipart") is None


@pytest.mark.parametrize("coding", ["x-uuencode", "gzip", "base32"])
def test_a_part_encoding_no_decoder_undoes_is_unreadable(coding: str) -> None:
    with pytest.raises(UnreadableEncodingError):
        part_readings(form((f"Content-Transfer-Encoding: {coding}", b"data")))
