"""Error pages mitmproxy writes itself keep the error and drop what they quote."""

from __future__ import annotations

import pytest

from addons.wire.errorpages import LAYERS, QuietErrorPages, format_error
from proxy.wire.errorpages import unquoted

TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            f"Cannot parse HTTP response: Bad HTTP response line: b'HTTP/1.1 200 {TOKEN}'",
            "Bad HTTP response line: …",
        ),
        (f"Invalid content-length header: ['{TOKEN}']", "Invalid content-length header: […]"),
        (f'unexpected server response: b"it\'s {TOKEN}"', "unexpected server response: …"),
        (f"unexpected server response: b'it\\'s {TOKEN}'", "unexpected server response: …"),
        (f"Invalid header line: b'{TOKEN}", "Invalid header line: …"),  # a quotation cut short
        (f"HTTP/2 protocol error: Received header b'x-a' with b'{TOKEN}\\n'", "Received header … with …"),
        ("Connect call failed ('127.0.0.1', 8443)", "Connect call failed (…, 8443)"),
        ("server closed connection", "server closed connection"),
        ("the upstream can't be reached", "the upstream can't be reached"),
    ],
)
def test_quotations_are_dropped_and_the_error_kept(message: str, kept: str) -> None:
    assert kept in unquoted(message)
    assert TOKEN not in unquoted(message)


def test_every_http_layer_writes_its_error_pages_unquoted() -> None:
    QuietErrorPages().load(None)  # type: ignore[arg-type]  # it declares no option
    for layer in LAYERS:
        assert layer.format_error is format_error
    page = format_error(502, f"Bad HTTP response line: b'{TOKEN}'")
    assert TOKEN.encode() not in page and b"502 Bad Gateway" in page
