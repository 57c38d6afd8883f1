"""The one encoding other than UTF-8 that every receiver reads a body in: the body is inspected as UTF-8
and what is sent goes back in that encoding, its Content-Type still true."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from addons.inspect import declared_readings
from proxy.wire.charsets import ReadEveryWay, TextEncoding, labelled_utf8, reads_unknowably, text_encoding

TEXT = "Grüße aus Köln, señor: the key is AKIAQWERTY234567ABCD. Ça va?"
DOCUMENT = json.dumps({"note": TEXT}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain; charset=iso-8859-1", TEXT.encode("latin-1")),
        ("text/plain; charset=latin1", TEXT.encode("latin-1")),
        ('application/json; charset="windows-1252"', DOCUMENT.encode("cp1252")),
        ("text/plain; charset=cp500", TEXT.encode("cp500")),
        ("application/json; charset=utf-16", DOCUMENT.encode("utf-16")),
        ("application/json; charset=UTF-16", DOCUMENT.encode("utf-16-be").join([b"\xfe\xff", b""])),
        ("application/json; charset=utf-16le", DOCUMENT.encode("utf-16-le")),
        ("application/json; charset=utf-32be", DOCUMENT.encode("utf-32-be")),
        ("application/json", DOCUMENT.encode("utf-16-le")),
        ("application/json", DOCUMENT.encode("utf-16")),
        (None, DOCUMENT.encode("utf-32-be")),
    ],
)
def test_a_body_every_receiver_reads_in_one_encoding_is_read_and_written_back_in_it(
    content_type: str | None, body: bytes
) -> None:
    encoding = text_encoding(body, content_type)
    assert encoding is not None
    text = encoding.to_utf8(body).decode("utf-8")
    assert TEXT in text or TEXT in json.loads(text)["note"]
    assert encoding.from_utf8(encoding.to_utf8(body)) == body
    redacted = encoding.to_utf8(body).replace(b"AKIAQWERTY234567ABCD", b"[REDACTED:aws-access-key-id]")
    written = encoding.from_utf8(redacted)
    assert written is not None and text_encoding(written, content_type) == encoding
    assert b"[REDACTED:aws-access-key-id]" in encoding.to_utf8(written)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", TEXT.encode()),
        ("text/plain; charset=utf-8", TEXT.encode()),
        ("text/plain; charset=us-ascii", b"plain"),
        # Receivers disagree on these: each reading is inspected (``read_in``), none is chosen.
        ("text/plain; charset=utf-7", b"the key is +AEEASwBJAEE-QWERTY"),
        ("text/plain; charset=utf-16", TEXT.encode("utf-16-le")),
        ("text/plain; charset=latin-1; charset=utf-8", TEXT.encode("latin-1")),
        ("text/plain; charset=latin-1", TEXT.encode("utf-8")),
        ("text/plain; charset=utf-16le", b"odd"),
        ("text/plain; charset=x-unknown", b"bytes"),
        ("text/plain", TEXT.encode("utf-16-le")),
        # JSON readers handed the bytes detect UTF-16 and UTF-32 and ignore the label.
        ("application/json; charset=iso-8859-1", DOCUMENT.encode("utf-16")),
        ("application/json; charset=windows-1252", DOCUMENT.encode("utf-32")),
    ],
)
def test_a_body_receivers_may_read_otherwise_has_no_one_encoding(content_type: str, body: bytes) -> None:
    assert text_encoding(body, content_type) is None


def test_text_the_encoding_cannot_hold_is_not_written_in_it() -> None:
    encoding = TextEncoding("latin-1")
    assert encoding.from_utf8("withheld — 🔒".encode()) is None
    assert (
        labelled_utf8('text/plain; charset="latin-1"; format=flowed')
        == "text/plain; format=flowed; charset=utf-8"
    )


@pytest.mark.parametrize("charset", ["utf-7", "UTF7", "unicode-1-1-utf-7", "x-no-such-charset"])
def test_charsets_whose_readings_are_not_known_are_named(charset: str) -> None:
    assert reads_unknowably(charset)


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "utf-16", "cp500", "windows-1252"])
def test_charsets_read_every_way_are_not(charset: str) -> None:
    assert not reads_unknowably(charset)


def _message(content_type: str) -> http.Message:
    return http.Request.make("POST", "https://example.com/", b"", http.Headers(content_type=content_type))


@pytest.mark.parametrize(
    ("content_type", "body", "every_way"),
    [
        ("text/plain; charset=iso-8859-1", "Grüße".encode(), True),
        ("text/plain; charset=utf-16", "Grüße".encode("utf-16-le"), True),
        ("text/plain; charset=utf-7", b"Gr+APw-", False),
    ],
)
def test_a_body_read_otherwise_is_read_every_way_unless_its_decoders_differ(
    content_type: str, body: bytes, every_way: bool
) -> None:
    readings, error = declared_readings(_message(content_type), body)
    assert readings and error is not None
    assert isinstance(error, ReadEveryWay) is every_way
