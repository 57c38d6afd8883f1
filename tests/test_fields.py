"""Header fields read in one pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.http import Headers

from addons.fields import field_values

NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"X-Forwarded-Host",
    b"x-forwarded-host",
    b"Forwarded",
    b"Hostname",
    b"X-Host",
]
VALUES = [b"api.example.com", b"", b"evil.example:443, api.example.com", b"\xff\xfe", b"for=1;host=a.example"]


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))
def test_field_values_are_those_get_all_reads(fields: list[tuple[bytes, bytes]]) -> None:
    """Each name's values, in order, are what ``Headers.get_all`` reads, whatever the names' case, repeats,
    empty values and undecodable bytes."""
    headers = Headers(fields)
    found = field_values(headers, b"host", b"x-forwarded-host", b"forwarded")
    assert found == {
        name.encode(): headers.get_all(name) for name in ("host", "x-forwarded-host", "forwarded")
    }
