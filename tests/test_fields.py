"""Header fields read in one pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.http import Headers

from addons.wire.fields import drop_fields, field_values, take_fields

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


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8), st.booleans())
def test_field_values_are_those_get_all_reads(fields: list[tuple[bytes, bytes]], as_list: bool) -> None:
    """Each name's values, in order, are what ``Headers.get_all`` reads, whatever the names' case, repeats,
    empty values and undecodable bytes, and whether the fields are a tuple (looked up in their index) or a
    list (walked)."""
    headers = Headers(fields)
    if as_list:
        headers.fields = list(headers.fields)  # type: ignore[assignment]
    found = field_values(headers, b"host", b"x-forwarded-host", b"forwarded")
    assert found == {
        name.encode(): headers.get_all(name) for name in ("host", "x-forwarded-host", "forwarded")
    }


@given(
    st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8),
    st.sets(st.sampled_from([b"host", b"x-forwarded-host", b"forwarded"])),
)
def test_dropped_fields_are_those_del_removes(fields: list[tuple[bytes, bytes]], names: set[bytes]) -> None:
    """Dropping names in one rewrite leaves the fields ``del headers[name]`` for each leaves, in order."""
    dropped, deleted = Headers(fields), Headers(fields)
    drop_fields(dropped, names)
    for name in names:
        if name.decode() in deleted:
            del deleted[name.decode()]
    assert dropped.fields == deleted.fields


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))
def test_taken_fields_are_what_pop_returns_and_leaves(fields: list[tuple[bytes, bytes]]) -> None:
    """Taking names gives each name's values (joined, what ``Headers.pop`` returns; none where it returns
    its default) and leaves the fields that popping each leaves."""
    taken, popped = Headers(fields), Headers(fields)
    found = take_fields(taken, b"host", b"forwarded")
    for name in ("host", "forwarded"):
        values = found[name.encode()]
        assert (", ".join(values) if values else None) == popped.pop(name, None)
    assert taken.fields == popped.fields
