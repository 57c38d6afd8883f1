"""The proxy checks the fields of each request and response mitmproxy builds as mitmproxy does, cheaply."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.utils import typecheck

from addons.server import _check_message_fields, accepted_classes, install_message_checks

SAMPLES: list[Any] = [b"", b"x", "", "x", 0, 7, 1.5, True, None, http.Headers(), [], (), {}, object()]
"""Values of every kind a message field may be given, right or wrong."""


def mitmproxy_accepts(name: str, value: Any, declared: Any) -> bool:
    try:
        typecheck.check_option_type(name, value, declared)
    except TypeError:
        return False
    return True


def ours_accepts(message: http.MessageData) -> bool:
    try:
        _check_message_fields(message)
    except TypeError:
        return False
    return True


def messages_with_one_field_set() -> Iterator[tuple[http.MessageData, str, Any]]:
    """A valid request and response, each with one field replaced by each sample value in turn."""
    request = http.Request.make("POST", "https://api.example.com/v1/chat/completions", b"{}").data
    response = http.Response.make(200, b"{}", {"content-type": "application/json"}).data
    for message in (request, response):
        for field in fields(message):
            for value in SAMPLES:
                changed = type(message).__new__(type(message))
                changed.__dict__.update(vars(message))
                setattr(changed, field.name, value)
                yield changed, field.name, value


def test_accepted_classes_of_plain_and_optional_types() -> None:
    """A class, an optional class, and a float (which takes an int too) become the classes to test."""
    assert accepted_classes(bytes) == (bytes,)
    assert accepted_classes(bytes | None) == (bytes, type(None))
    assert accepted_classes(typing.Optional[http.Headers]) == (http.Headers, type(None))  # noqa: UP045 (the old spelling is read too)
    assert accepted_classes(float) == (float, int)
    assert accepted_classes(float | None) == (float, int, type(None))


@pytest.mark.parametrize(
    "declared", [typing.Any, tuple[int, int], Sequence[str], typing.TextIO, list[str], str | tuple[int, int]]
)
def test_other_types_are_left_to_mitmproxy(declared: Any) -> None:
    """A type whose check is more than an isinstance is always handed to mitmproxy's checker."""
    assert accepted_classes(declared) is None


def test_every_field_and_value_is_judged_as_mitmproxy_judges_it() -> None:
    """For each field of a request and a response and values of every kind, the check passes exactly where
    mitmproxy's passes, and fails with mitmproxy's own error."""
    judged = 0
    for message, name, value in messages_with_one_field_set():
        declared = next(field.type for field in fields(message) if field.name == name)
        assert ours_accepts(message) == mitmproxy_accepts(name, value, declared), (name, value)
        judged += 1
    assert judged == len(SAMPLES) * (len(fields(http.RequestData)) + len(fields(http.ResponseData)))


def test_a_wrong_field_raises_mitmproxy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once installed, building a message with a field of the wrong type raises mitmproxy's TypeError."""
    # Put mitmproxy's own check back afterwards: the other tests of this process build messages too.
    monkeypatch.setattr(http.MessageData, "__post_init__", http.MessageData.__post_init__)
    install_message_checks()
    assert http.MessageData.__post_init__ is _check_message_fields
    with pytest.raises(TypeError, match=r"Expected .* for timestamp_end"):
        http.Request(
            "example.com",
            443,
            b"GET",
            b"https",
            b"",
            b"/",
            b"HTTP/1.1",
            http.Headers(),
            b"",
            None,
            0.0,
            "soon",  # type: ignore[arg-type]
        )
    built = http.Response.make(204)
    assert built.data.content == b"" and built.data.trailers is None
