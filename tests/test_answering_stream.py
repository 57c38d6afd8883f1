"""A finished HTTP stream and its flow are freed when the last reference to them goes, without waiting for
the garbage collector, and its states read as mitmproxy's do."""

from __future__ import annotations

import gc
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mitmproxy import connection, http, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import context
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.test import tflow

from addons.wire.early import AnsweringStream


@contextmanager
def collector_off() -> Iterator[None]:
    """Only reference counting frees anything meanwhile. What building a stream left in cycles (mitmproxy
    raises and catches errors as it checks a new message) is collected first."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def proxy_options() -> options.Options:
    """Options as a proxy has them, its server's included."""
    loaded = options.Options()
    Proxyserver().load(loaded)
    return loaded


OPTIONS = proxy_options()


def finished(stream_class: type[http_layer.HttpStream], status: int = 200) -> http_layer.HttpStream:
    """A stream of ``stream_class`` under an HTTP layer, through to its flow's end (``flow_done``)."""
    client = connection.Client(peername=("127.0.0.1", 5000), sockname=("127.0.0.1", 8080), timestamp_start=1)
    layer = http_layer.HttpLayer(context.Context(client, OPTIONS), http_layer.HTTPMode.regular)
    stream = stream_class(layer.context.fork(), 1)
    stream.flow = tflow.tflow(resp=http.Response.make(status))
    stream.client_state = stream.state_done
    stream.server_state = stream.state_done
    list(stream.flow_done())
    return stream


def test_a_finished_stream_and_its_flow_are_freed_at_once() -> None:
    stream = finished(AnsweringStream)
    assert stream not in stream.context.layers
    freed = weakref.ref(stream), weakref.ref(stream.flow)
    with collector_off():
        del stream
        assert [reference() for reference in freed] == [None, None]


def test_mitmproxy_stream_waits_for_the_collector() -> None:
    """What the test above rules out: mitmproxy's own stream is kept by its reference cycles."""
    stream = finished(http_layer.HttpStream)
    kept = weakref.ref(stream.flow)
    with collector_off():
        del stream
        assert kept() is not None
    gc.collect()
    assert kept() is None


def test_an_upgraded_stream_stays_among_its_layers() -> None:
    """A stream switched to another protocol (101) goes on as its child layer's parent: it stays."""
    stream = finished(AnsweringStream, status=101)
    assert stream in stream.context.layers


def test_states_read_back_as_the_methods_set() -> None:
    stream = finished(AnsweringStream)
    for state in (
        stream.state_wait_for_request_headers,
        stream.state_consume_request_body,
        stream.state_errored,
    ):
        stream.client_state = stream.server_state = state
        assert stream.client_state == state and stream.server_state == state
        assert isinstance(stream.client_state, types.MethodType) and isinstance(state, types.MethodType)
        assert stream.client_state.__self__ is stream and stream.client_state.__func__ is state.__func__
    assert stream.client_state != stream.state_done


def test_a_state_is_one_of_the_stream_own_methods() -> None:
    stream, other = finished(AnsweringStream), finished(AnsweringStream)
    with pytest.raises(TypeError):
        stream.client_state = other.state_done
    with pytest.raises(TypeError):
        stream.server_state = lambda event: iter(())


def test_a_state_not_yet_set_is_missing_as_an_attribute_is() -> None:
    stream = AnsweringStream.__new__(AnsweringStream)
    assert getattr(stream, "client_state", None) is None
    with pytest.raises(AttributeError, match="server_state"):
        stream.server_state  # noqa: B018
