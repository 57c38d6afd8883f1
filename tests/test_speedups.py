"""mitmproxy's general code paths and their direct equivalents give the same results for every input."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import connection, hooks, http, optmanager
from mitmproxy.coretypes.multidict import _MultiDict
from mitmproxy.test import tflow
from mitmproxy.utils import typecheck

from addons.process.speedups import (
    _check_message_fields,
    _connection_equal,
    accepted_classes,
    connection_equal,
    drop_named_fields,
    has_header,
    header_count,
    header_value,
    header_values,
    hook_args,
    install_speedups,
    option_current,
    option_value,
)

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


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speedups installed for one test, mitmproxy's own code put back after it: the other tests of
    this process use mitmproxy too."""
    monkeypatch.setattr(http.MessageData, "__post_init__", http.MessageData.__post_init__)
    for name in ("get_all", "get", "__contains__", "__len__"):
        monkeypatch.setattr(http.Headers, name, getattr(http.Headers, name))
    monkeypatch.setattr(optmanager._Option, "current", optmanager._Option.current)
    monkeypatch.setattr(optmanager.OptManager, "__getattr__", optmanager.OptManager.__getattr__)
    monkeypatch.setattr(hooks.Hook, "args", hooks.Hook.args)
    monkeypatch.setattr(connection.Connection, "__eq__", connection.Connection.__eq__)
    install_speedups()


@pytest.mark.usefixtures("installed")
def test_a_wrong_field_raises_mitmproxy_error() -> None:
    """Once installed, building a message with a field of the wrong type raises mitmproxy's TypeError."""
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


def mitmproxy_get_all(headers: http.Headers, name: str | bytes) -> list[str]:
    """mitmproxy's ``Headers.get_all``, from the generic multidict it is built on."""
    return [http._native(value) for value in _MultiDict.get_all(headers, http._always_bytes(name))]


def mitmproxy_get(headers: http.Headers, name: str | bytes, default: object) -> object:
    """mitmproxy's ``Headers.get`` (the mapping's: ``self[name]``, a ``KeyError`` meaning the default)."""
    values = mitmproxy_get_all(headers, name)
    return http.Headers._reduce_values(values) if values else default


NAMES = [
    "Host",
    "host",
    "HOST",
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "X-Ünï",
    "x-ünï",
    "a",
]
header_field = st.tuples(
    st.sampled_from(NAMES).map(http._always_bytes) | st.binary(max_size=6),
    st.binary(max_size=8) | st.sampled_from([b"", b"chunked", b"\xff\xfe", b"gzip, br"]),
)
header_fields = st.lists(header_field, max_size=8)
asked = st.sampled_from(NAMES) | st.sampled_from(NAMES).map(http._always_bytes) | st.text(max_size=5)


@given(header_fields, asked)
def test_header_lookups_answer_as_mitmproxy(fields_: list[tuple[bytes, bytes]], name: str | bytes) -> None:
    """Values, folded value and presence of any name, in any case, str or bytes, among fields of any
    bytes (values that are not UTF-8 included), are mitmproxy's."""
    headers = http.Headers(fields_)
    assert header_values(headers, name) == mitmproxy_get_all(headers, name)
    assert header_value(headers, name, "absent") == mitmproxy_get(headers, name, "absent")
    assert header_value(headers, name) == mitmproxy_get(headers, name, None)
    assert has_header(headers, name) == bool(mitmproxy_get_all(headers, name))
    assert header_count(headers) == _MultiDict.__len__(headers)


changes = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(NAMES), st.lists(st.binary(max_size=4), max_size=2)),
        st.tuples(st.just("add"), st.sampled_from(NAMES), st.binary(max_size=4)),
        st.tuples(st.just("insert"), st.integers(0, 8), header_field),
        st.tuples(st.just("delete"), st.sampled_from(NAMES)),
        st.tuples(st.just("fields"), st.lists(header_field, max_size=6), st.booleans()),
        st.tuples(st.just("append to list"), header_field),
        st.tuples(
            st.just("drop"),
            st.sets(st.sampled_from(NAMES).map(lambda name: http._always_bytes(name).lower())),
        ),
    ),
    max_size=8,
)


def change(headers: http.Headers, step: tuple[Any, ...]) -> None:
    """One change to ``headers`` made through mitmproxy's own multidict (which keeps its fields a tuple), by
    giving it new fields (a list of them changed in place), or by dropping names (``drop_named_fields``)."""
    if step[0] == "drop":
        drop_named_fields(headers, step[1])
        return
    if isinstance(headers.fields, list) and step[0] != "fields":
        if step[0] == "append to list":
            headers.fields.append(step[1])
        return
    match step:
        case ("set", name, values):
            _MultiDict.set_all(headers, http._always_bytes(name), values)
        case ("add", name, value):
            _MultiDict.add(headers, http._always_bytes(name), value)
        case ("insert", index, (name, value)):
            _MultiDict.insert(headers, index, name, value)
        case ("delete", name):
            if mitmproxy_get_all(headers, name):
                _MultiDict.__delitem__(headers, http._always_bytes(name))
        case ("fields", new_fields, as_list):
            headers.fields = [*new_fields] if as_list else tuple(new_fields)  # type: ignore[assignment]


@given(header_fields, changes)
def test_header_lookups_follow_every_change_as_mitmproxy(
    fields_: list[tuple[bytes, bytes]], steps: list[tuple[Any, ...]]
) -> None:
    """Looked up before and after each change (new fields, set, added, inserted, removed or dropped ones, a
    list of fields changed in place), the headers answer every name as mitmproxy does at that moment."""
    headers = http.Headers(fields_)
    for step in [None, *steps]:
        if step is not None:
            change(headers, step)
        names: list[str | bytes] = [*NAMES, b"", "x-\udcff"]
        for name in names:
            assert header_values(headers, name) == mitmproxy_get_all(headers, name)
            assert has_header(headers, name) == bool(mitmproxy_get_all(headers, name))
        assert header_count(headers) == _MultiDict.__len__(headers)


@pytest.mark.usefixtures("installed")
def test_installed_header_lookups_serve_mitmproxy_callers() -> None:
    """Once installed, the headers' own methods (which mitmproxy's HTTP layers call) are the equivalents."""
    headers = http.Headers([(b"Content-Length", b"12"), (b"x-a", b"1"), (b"X-A", b"2")])
    assert headers.get_all("x-a") == ["1", "2"]
    assert headers.get("X-A") == "1, 2"
    assert headers["content-length"] == "12"
    assert headers.get("transfer-encoding") is None
    assert "CONTENT-LENGTH" in headers and "transfer-encoding" not in headers
    assert len(headers) == 2 and headers and not http.Headers()
    assert headers.pop("x-a") == "1, 2" and "x-a" not in headers
    with pytest.raises(KeyError):
        headers["transfer-encoding"]


class Level(int):
    """An int subclass: ``copy.deepcopy`` copies it rather than return it as it is."""


OPTION_SAMPLES: list[Any] = [None, True, False, 0, 7, 1.5, "", "regular", b"x", Level(3), ["a"], ("a",), {}]
"""Option values of every kind: the unchangeable ones, a subclass of one, and containers."""


def options_with(value: Any, default: Any) -> optmanager.OptManager:
    options = optmanager.OptManager()
    options.add_option("sample", Any, default, "A sample option.")
    if value is not optmanager.unset:
        options._options["sample"].value = value
    return options


@pytest.mark.parametrize("default", OPTION_SAMPLES)
@pytest.mark.parametrize("value", [optmanager.unset, *OPTION_SAMPLES])
def test_option_reads_answer_as_mitmproxy(value: Any, default: Any) -> None:
    """A set or default value of every kind reads as mitmproxy's read gives it: equal, of the same class,
    the very object where mitmproxy's copy gives it (an unchangeable one), a copy where it copies."""
    options = options_with(value, default)
    option = options._options["sample"]
    theirs = optmanager._Option.current(option)
    for ours in (option_current(option), option_value(options, "sample")):
        assert ours == theirs and type(ours) is type(theirs)
        assert (ours is option._default or ours is option.value) == (
            theirs is option._default or theirs is option.value
        )


def test_an_unknown_option_raises_mitmproxy_error() -> None:
    with pytest.raises(AttributeError, match="No such option: absent"):
        option_value(options_with(optmanager.unset, 1), "absent")


@pytest.mark.usefixtures("installed")
def test_installed_option_reads_serve_mitmproxy_callers() -> None:
    """Once installed, options read through attributes give the value, and a list read is a copy."""
    options = options_with(["regular"], [])
    options.add_option("flag", bool, False, "A flag.")
    options.update(flag=True)
    assert options.flag is True and options.sample == ["regular"]
    options.sample.append("changed")
    assert options.sample == ["regular"]


def test_every_hook_gives_mitmproxy_arguments() -> None:
    """Every hook mitmproxy and egressguard define, given a distinct value for each field, gives its
    handlers the arguments mitmproxy's ``Hook.args`` gives, in order, twice over (the names once kept)."""
    import addons.process.server  # noqa: F401  # egressguard's own hooks register as it is imported

    for kind in hooks.all_hooks.values():
        hook = kind.__new__(kind)
        for position, field in enumerate(fields(kind)):  # type: ignore[arg-type]
            setattr(hook, field.name, (position, field.name))
        assert hook_args(hook) == hooks.Hook.args(hook) == hook_args(hook)


@pytest.mark.usefixtures("installed")
def test_installed_hook_arguments_serve_mitmproxy_callers() -> None:
    flow = tflow.tflow()
    assert hooks.all_hooks["request"](flow).args() == [flow]


class OtherConnection(connection.Client):
    """A connection of a class of its own, which mitmproxy's check answers."""


def test_connections_compare_as_mitmproxy_compares_them() -> None:
    """Clients and servers, the same or another with the same id, of mitmproxy's classes or one of their
    own, and other objects, compare as mitmproxy's own ``__eq__`` compares them."""
    client = tflow.tclient_conn()
    server = tflow.tserver_conn()
    same_id = tflow.tserver_conn()
    same_id.id = client.id
    other = OtherConnection(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2))
    other_same_id = OtherConnection(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2))
    other_same_id.id = server.id
    samples: list[object] = [client, server, same_id, other, other_same_id, None, client.id, object()]
    for left in (client, server, same_id, other, other_same_id):
        for right in samples:
            assert connection_equal(left, right) == _connection_equal(left, right)


@pytest.mark.usefixtures("installed")
def test_installed_connection_comparisons_serve_mitmproxy_callers() -> None:
    client, server = tflow.tclient_conn(), tflow.tserver_conn()
    assert client == client and client != server and server != None  # noqa: E711
    assert {client: 1}[client] == 1
