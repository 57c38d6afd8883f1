"""Body data that one read brought reaches the HTTP layer as one piece, over HTTP/1
(``addons.wire.trailers.JoinedData``) and HTTP/2 (``JoinedFrames``)."""

from __future__ import annotations

from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest
from h11._readers import ChunkedReader
from mitmproxy import options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http._base import HttpEvent, ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
)
from mitmproxy.test import taddons, tflow, tutils

from addons.wire.trailers import JoinedHttp2Client, JoinedHttp2Server, TrailerClient, TrailerServer


def reading_response() -> TrailerClient:
    context = Context(tflow.tclient_conn(), options.Options())
    context.server = tflow.tserver_conn()
    client = TrailerClient(context)
    client.stream_id = 1
    client.request = tutils.treq()
    client.body_reader = ChunkedReader()
    return client


def read(connection: TrailerClient | TrailerServer, data: bytes) -> list[commands.Command]:
    connection.buf += data
    return list(connection.read_body(events.DataReceived(connection.conn, data)))


def received(sent: list[commands.Command]) -> list[HttpEvent]:
    """The events of ``sent``, each of which must hand one on."""
    assert all(isinstance(command, ReceiveHttp) for command in sent)
    return [command.event for command in sent if isinstance(command, ReceiveHttp)]


def test_chunks_of_one_read_are_handed_on_together_and_a_later_read_on_its_own() -> None:
    client = reading_response()
    events_sent = [b'data: {"n": %d}\n\n' % number for number in range(40)]
    burst = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events_sent)
    first = read(client, burst + b"5\r\nda")  # the last chunk only begun
    assert received(first) == [ResponseData(1, b"".join(events_sent) + b"da")]
    second = read(client, b"ta:\r\n0\r\n\r\n")
    assert [command.event for command in second if isinstance(command, ReceiveHttp)] == [
        ResponseData(1, b"ta:"),
        ResponseEndOfMessage(1),
    ]


def test_a_read_with_nothing_complete_hands_on_nothing() -> None:
    client = reading_response()
    assert read(client, b"1") == []
    assert received(read(client, b"0\r\n0123456789abcdef\r\n")) == [ResponseData(1, b"0123456789abcdef")]


def test_request_bodies_are_joined_the_same_way() -> None:
    context = Context(tflow.tclient_conn(), options.Options())
    server = TrailerServer(context)
    server.stream_id = 1
    server.body_reader = ChunkedReader()
    commands_sent = read(server, b"3\r\nabc\r\n3\r\ndef\r\n")
    assert received(commands_sent) == [RequestData(1, b"abcdef")]


@pytest.fixture
def h2_options() -> Iterator[options.Options]:
    """The options mitmproxy's HTTP/2 connections read (the proxy server addon defines them)."""
    with taddons.context(Proxyserver()) as context:
        yield context.options


def http_events(produced: Iterator[commands.Command]) -> list[object]:
    return [command.event for command in produced if isinstance(command, ReceiveHttp)]


def sent(produced: Iterator[commands.Command]) -> bytes:
    return b"".join(command.data for command in produced if isinstance(command, commands.SendData))


def h2_peer(*, client_side: bool) -> h2.connection.H2Connection:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side))
    peer.initiate_connection()
    return peer


REQUEST_HEADERS = [(":method", "POST"), (":scheme", "https"), (":authority", "example.com"), (":path", "/")]


def test_http2_data_frames_of_one_read_are_handed_on_together_per_stream(h2_options: options.Options) -> None:
    """Frames of one stream that arrive one after another are one piece; a frame of another stream
    between them ends it, and the end of a stream still comes after its data."""
    context = Context(tflow.tclient_conn(), h2_options)
    server = JoinedHttp2Server(context)
    list(server.handle_event(events.Start()))
    agent = h2_peer(client_side=True)
    agent.send_headers(1, REQUEST_HEADERS)
    for number in range(5):
        agent.send_data(1, b"data: %d\n\n" % number)
    agent.send_headers(3, REQUEST_HEADERS)
    agent.send_data(3, b"other")
    agent.send_data(1, b"more", end_stream=True)
    received = http_events(server.handle_event(events.DataReceived(context.client, agent.data_to_send())))
    assert [event for event in received if not isinstance(event, RequestHeaders)] == [
        RequestData(1, b"".join(b"data: %d\n\n" % number for number in range(5))),
        RequestData(3, b"other"),
        RequestData(1, b"more"),
        RequestEndOfMessage(1),
    ]


def test_http2_response_frames_of_one_read_are_one_piece_and_a_later_read_another(
    h2_options: options.Options,
) -> None:
    """An event stream the upstream sends in one DATA frame per event: what one read brought reaches the
    stream callable as one piece."""
    context = Context(tflow.tclient_conn(), h2_options)
    context.server = tflow.tserver_conn()
    client = JoinedHttp2Client(context)
    request = tutils.treq(http_version=b"HTTP/2.0", authority=b"example.com")
    to_upstream = sent(client.handle_event(events.Start()))
    to_upstream += sent(client.handle_event(RequestHeaders(1, request, end_stream=True)))
    upstream = h2_peer(client_side=False)
    (stream_id,) = [
        event.stream_id
        for event in upstream.receive_data(to_upstream)
        if isinstance(event, h2.events.RequestReceived)
    ]
    upstream.send_headers(stream_id, [(":status", "200"), ("content-type", "text/event-stream")])
    events_sent = [b'data: {"n": %d}\n\n' % number for number in range(40)]
    for event in events_sent:
        upstream.send_data(stream_id, event)
    first = http_events(client.handle_event(events.DataReceived(context.server, upstream.data_to_send())))
    assert [event for event in first if not isinstance(event, ResponseHeaders)] == [
        ResponseData(1, b"".join(events_sent))
    ]
    upstream.send_data(stream_id, b"data: last\n\n", end_stream=True)
    second = http_events(client.handle_event(events.DataReceived(context.server, upstream.data_to_send())))
    assert second == [ResponseData(1, b"data: last\n\n"), ResponseEndOfMessage(1)]
