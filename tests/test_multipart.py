"""Locating the parts of a multipart body, replacing the content of some of them, and reading a body or
a part in the charset and transfer encoding it declares."""

from __future__ import annotations

from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import HTTP

import httpx
import pytest

from proxy.dialects.generic import assembled_parts
from proxy.wire.charsets import UnreadableEncodingError, declared_charsets, part_readings, read_in
from proxy.wire.multipart import (
    boundary_of,
    frame_text,
    framing_doubt,
    loose_delimiters,
    part_headers,
    part_spans,
    replace_parts,
)

BODY = (
    b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x00\x01binary\r\n'
    b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello there\r\n'
    b"--xyz--\r\n"
)


def test_parts_are_located_after_their_headers() -> None:
    """Each span is a part's content alone: no headers, no delimiter."""
    assert [BODY[start:end] for start, end in part_spans(BODY, b"xyz") or []] == [
        b"\x00\x01binary",
        b"hello there",
    ]


@pytest.mark.parametrize("body", [b"", b"plain text", b'{"json": 1}', b"--\r\n"])
def test_a_body_without_a_boundary_line_is_not_multipart(body: bytes) -> None:
    """Only a body that begins with a boundary line is read as parts."""
    assert part_spans(body, b"xyz") is None


def test_a_cut_body_keeps_the_parts_it_has() -> None:
    """A body that ends inside a part still yields that part, up to the end."""
    cut = BODY[: BODY.index(b"there") + 3]
    assert [cut[start:end] for start, end in part_spans(cut, b"xyz") or []] == [
        b"\x00\x01binary",
        b"hello the",
    ]


def test_the_frame_is_every_header_line_the_boundary_and_the_epilogue() -> None:
    """What leaves around the parts' contents, a line each: the boundary, each header line of each part as
    sent (UTF-8 where it reads so), its parameters as receivers read them (RFC 2231 pieces joined and
    percent-decoded), and what follows the closing boundary."""
    body = (
        b'--b0und\r\nContent-Disposition: form-data; name="file"; '
        b"filename*0*=UTF-8''r%C3%A9s; filename*1=um.txt\r\n"
        b"X-Note: caf\xc3\xa9\r\n\r\ncontent\r\n--b0und--\r\ntrailing words\r\n"
    )
    assert frame_text(body, b"b0und") == "\n".join(
        [
            "b0und",
            "Content-Disposition: form-data; name=\"file\"; filename*0*=UTF-8''r%C3%A9s; filename*1=um.txt",
            "file",
            "résum.txt",
            "X-Note: café",
            "\r\ntrailing words\r\n",
        ]
    )
    assert frame_text(BODY, b"xyz") == "\n".join(
        [
            "xyz",
            'Content-Disposition: form-data; name="file"',
            'Content-Disposition: form-data; name="note"',
            "\r\n",
        ]
    )
    assert frame_text(b"plain text", None) is None


def test_replacing_a_part_leaves_the_others_and_the_framing() -> None:
    """Only the numbered part's content changes."""
    replaced = replace_parts(BODY, b"xyz", {1: b"[REDACTED]"})
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
    (reading,) = part_readings(body, b"b") or []
    spans = part_spans(reading, b"b") or []
    assert [reading[start:end] for start, end in spans] == [b"plain", b"secret", b"sec", b"ebcdic"]
    assert part_readings(form(("Content-Transfer-Encoding: 8bit", b"plain")), b"b") is None
    assert part_readings(b"not multipart", b"b") is None


@pytest.mark.parametrize("coding", ["x-uuencode", "gzip", "base32"])
def test_a_part_encoding_no_decoder_undoes_is_unreadable(coding: str) -> None:
    with pytest.raises(UnreadableEncodingError):
        part_readings(form((f"Content-Transfer-Encoding: {coding}", b"data")), b"b")


def contents(body: bytes, boundary: bytes | None) -> list[bytes] | None:
    spans = part_spans(body, boundary)
    return None if spans is None else [body[start:end] for start, end in spans]


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=xyz", b"xyz"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data; BOUNDARY=xyz; charset=utf-8", b"xyz"),
        ("Multipart/Mixed;boundary=xyz", b"xyz"),
        ("multipart/form-data; boundary*0=x; boundary*1=yz", b"xyz"),
        ("multipart/form-data; boundary*=utf-8''x%79z", b"xyz"),
        ("multipart/form-data; boundary=xyz; boundary=xyz", b"xyz"),
    ],
)
def test_the_boundary_is_the_one_the_content_type_names_however_written(
    content_type: str, boundary: bytes
) -> None:
    assert boundary_of(content_type) == boundary
    assert framing_doubt(content_type) is None


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=a; boundary=b",
        "multipart/form-data; boundary=a; BOUNDARY=b",
        # Two Content-Type headers, joined as HTTP joins a repeated field.
        "multipart/form-data; boundary=a, multipart/form-data; boundary=b",
    ],
)
def test_a_multipart_content_type_naming_no_boundary_or_two_is_in_doubt(content_type: str) -> None:
    """Receivers refuse such a body, guess its boundary, or take another of two: none is the one."""
    assert framing_doubt(content_type) is not None


@pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain; boundary=a"])
def test_a_body_of_no_multipart_content_type_has_neither_boundary_nor_doubt(content_type: str | None) -> None:
    assert boundary_of(content_type) is None and framing_doubt(content_type) is None
    assert part_spans(BODY, boundary_of(content_type)) is None
    assert frame_text(BODY, boundary_of(content_type)) is None


def sdk_bodies() -> list[tuple[bytes, bytes]]:
    """Bodies as clients build them: httpx (the OpenAI and Anthropic SDKs' transport) with a file and a
    field, Python's email with a preamble and an epilogue (in CRLF, and in LF with its own headers before
    it), a browser's and curl's boundaries of hyphens."""
    request = httpx.Request(
        "POST", "https://x/v1/files", files={"file": ("a.bin", b"\x00--\x01")}, data={"p": "b"}
    )
    httpx_boundary = boundary_of(request.headers["content-type"])
    assert httpx_boundary is not None
    mail = MIMEMultipart(boundary="===============1234==")
    mail.preamble = "This is a multi-part message in MIME format."
    mail.epilogue = ""
    mail.attach(MIMEText("see the file --=== below", "plain"))
    mail.attach(MIMEApplication(b"\x00\x01-----"))
    browser = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    curl = b"------------------------d74496d66958873e"
    return [
        (httpx_boundary, request.read()),
        (b"===============1234==", mail.as_bytes(policy=HTTP)),
        # As Google's API client sends a multipart/related upload: the message flattened, lines ending in LF.
        (b"===============1234==", mail.as_bytes()),
        *[
            (b, b"--" + b + b"\r\nContent-Disposition: form-data; name=f\r\n\r\n--x--\r\n--" + b + b"--\r\n")
            for b in (browser, curl)
        ],
    ]


@pytest.mark.parametrize(
    ("boundary", "body"), sdk_bodies(), ids=["httpx", "email", "email LF", "browser", "curl"]
)
def test_bodies_as_clients_build_them_are_read_alike_by_every_receiver(boundary: bytes, body: bytes) -> None:
    assert contents(body, boundary)
    assert not loose_delimiters(body, boundary)


def test_a_crlf_body_is_delimited_by_crlf_lines_alone() -> None:
    """In a body whose first delimiter ends in CRLF, Go and python-multipart end a part only at CRLF, ``--B``
    and CRLF (or ``--``): a bare LF, padding, another line end after it, a CR alone or ``--B`` in mid-line
    (where Django and Werkzeug would split) leave the bytes in the part, read as its content."""
    head = b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\nbefore'
    hidden = b'Content-Disposition: form-data; name="g"\r\n\r\njohn.doe@example.com'
    for inner in (
        b"\n--B\n",
        b"\n--B\r\n",
        b"\r\n--B \r\n",
        b"\r\n--B\t\r\n",
        b"\r\n--B\n",
        b"\r--B\r",
        b" --B\r\n",
    ):
        body = head + inner + hidden + b"\r\n--B--\r\n"
        (content,) = contents(body, b"B") or [b""]
        assert content == b"before" + inner + hidden, inner
        assert loose_delimiters(body, b"B"), inner
        assert "john.doe" not in (frame_text(body, b"B") or "")


def test_an_lf_body_is_delimited_by_lf_lines_as_go_reads_it() -> None:
    """A body whose first delimiter ends in a bare LF is one whose lines all end so (Go's reader switches
    to LF, Werkzeug and Python's email take either): its parts end at LF, ``--B``, padding and LF. A CRLF
    delimiter in it is one Go takes and python-multipart does not: content, and a loose delimiter."""
    body = b"--B\nX: 1\n\none\n--B \t\nX: 2\n\ntwo\n--B--\n"
    assert contents(body, b"B") == [b"one", b"two"]
    assert not loose_delimiters(body, b"B")
    mixed = b"--B\nX: 1\n\none\r\n--B\r\nX: 2\r\n\r\ntwo\n--B--\n"
    assert contents(mixed, b"B") == [b"one\r\n--B\r\nX: 2\r\n\r\ntwo"]
    assert loose_delimiters(mixed, b"B")


def test_the_first_delimiter_is_the_named_boundarys_at_a_line_start_with_padding() -> None:
    """A preamble is skipped up to the first line that is ``--B``, padding and a line end; a line of
    another boundary (a decoy) or ``--B`` in mid-line is preamble."""
    body = b"--decoy\r\nnote --B\r\n--B \r\nX: 1\r\n\r\none\r\n--B--"
    assert contents(body, b"B") == [b"one"]
    assert (frame_text(body, b"B") or "").startswith("--decoy\r\nnote --B\r\n")
    assert loose_delimiters(body, b"B")  # Django splits at the preamble's ``--B``
    assert contents(b"--decoy\r\n\r\nx\r\n--decoy--", b"B") is None
    assert frame_text(b"--decoy\r\n\r\nx\r\n--decoy--", b"B") == "--decoy\r\n\r\nx\r\n--decoy--"


def test_parts_after_the_closing_delimiter_are_epilogue_and_loose() -> None:
    """Go and python-multipart stop at ``--B--``; Django reads on: what follows is the epilogue, read with
    the frame, and the body is one its receivers read apart."""
    body = b"--B\r\nX: 1\r\n\r\none\r\n--B--\r\n--B\r\nX: 2\r\n\r\nAKIAQWERTY234567ABCD\r\n--B--\r\n"
    assert contents(body, b"B") == [b"one"]
    assert "AKIAQWERTY234567ABCD" in (frame_text(body, b"B") or "")
    assert loose_delimiters(body, b"B")


def test_a_body_without_its_closing_delimiter_runs_its_last_part_to_its_end() -> None:
    body = b"--B\r\nX: 1\r\n\r\none\r\n--B\r\nX: 2\r\n\r\ntwo and the rest"
    assert contents(body, b"B") == [b"one", b"two and the rest"]
    assert not loose_delimiters(body, b"B")


def test_a_part_without_a_blank_line_keeps_to_itself() -> None:
    """Headers end at the first blank line of their own part, CRLF or LF: a part with none is all headers,
    and the next part is read as its own."""
    body = b"--B\r\nX: 1\r\n--B\r\nX: 2\nY: 3\n\ntwo\r\n--B--"
    assert contents(body, b"B") == [b"", b"two"]
    assert [headers for headers, _, _ in part_headers(body, b"B") or []] == [{"x": "1"}, {"x": "2", "y": "3"}]


def test_a_boundary_that_prefixes_another_is_no_delimiter_of_it() -> None:
    """``--Bx`` opens no part of ``B`` to Go or python-multipart; Django's search for ``--B`` finds it."""
    body = b"--B\r\nX: 1\r\n\r\none\r\n--Bx\r\nX: 2\r\n\r\ntwo\r\n--B--"
    assert contents(body, b"B") == [b"one\r\n--Bx\r\nX: 2\r\n\r\ntwo"]
    assert loose_delimiters(body, b"B")


def _ranges(*parts: tuple[str | None, bytes]) -> bytes:
    """A ``multipart/byteranges`` body of boundary AAA, each part with its Content-Range where given."""
    body = b""
    for content_range, content in parts:
        head = b"Content-Type: text/plain\r\n"
        if content_range is not None:
            head += f"Content-Range: bytes {content_range}\r\n".encode()
        body += b"--AAA\r\n" + head + b"\r\n" + content + b"\r\n"
    return body + b"--AAA--\r\n"


@pytest.mark.parametrize(
    ("body", "order"),
    [
        pytest.param(_ranges(("0-3/8", b"abcd"), ("4-7/8", b"efgh")), ["abcd", "efgh"], id="in order"),
        pytest.param(_ranges(("4-7/8", b"efgh"), ("0-3/8", b"abcd")), ["abcd", "efgh"], id="sent backwards"),
        pytest.param(_ranges(("4-7/8", b"efgh"), (None, b"abcd")), ["efgh", "abcd"], id="one unranged"),
        pytest.param(_ranges(("4-7/8", b"efgh"), ("0-3/8", b"\xff\xfe")), ["efgh"], id="a binary range"),
    ],
)
def test_a_multiparts_texts_are_assembled_by_their_ranges(body: bytes, order: list[str]) -> None:
    """Byte ranges are joined by the first byte each names, as a client assembles the file; a body in
    which a part names none is joined as it stands; a part that is no text is left out."""
    assert [segment.text for segment in assembled_parts(body, b"AAA")] == order
