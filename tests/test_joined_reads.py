"""Body data that one read brought reaches the HTTP layer as one piece (``addons.trailers.JoinedData``)."""

from __future__ import annotations

from h11._readers import ChunkedReader
from mitmproxy import options
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import RequestData, ResponseData, ResponseEndOfMessage
from mitmproxy.test import tflow

from addons.trailers import TrailerClient, TrailerServer


def reading_response() -> TrailerClient:
    context = Context(tflow.tclient_conn(), options.Options())
    context.server = tflow.tserver_conn()
    client = TrailerClient(context)
    client.stream_id = 1
    client.request = tflow.treq()
    client.body_reader = ChunkedReader()
    return client


def read(connection: TrailerClient | TrailerServer, data: bytes) -> list[commands.Command]:
    connection.buf += data
    return list(connection.read_body(events.DataReceived(connection.conn, data)))


def test_chunks_of_one_read_are_handed_on_together_and_a_later_read_on_its_own() -> None:
    client = reading_response()
    events_sent = [b'data: {"n": %d}\n\n' % number for number in range(40)]
    burst = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events_sent)
    first = read(client, burst + b"5\r\nda")  # the last chunk only begun
    assert all(isinstance(command, ReceiveHttp) for command in first)
    assert [command.event for command in first] == [ResponseData(1, b"".join(events_sent) + b"da")]
    second = read(client, b"ta:\r\n0\r\n\r\n")
    assert [command.event for command in second if isinstance(command, ReceiveHttp)] == [
        ResponseData(1, b"ta:"),
        ResponseEndOfMessage(1),
    ]


def test_a_read_with_nothing_complete_hands_on_nothing() -> None:
    client = reading_response()
    assert read(client, b"1") == []
    assert [command.event for command in read(client, b"0\r\n0123456789abcdef\r\n")] == [
        ResponseData(1, b"0123456789abcdef")
    ]


def test_request_bodies_are_joined_the_same_way() -> None:
    context = Context(tflow.tclient_conn(), options.Options())
    server = TrailerServer(context)
    server.stream_id = 1
    server.body_reader = ChunkedReader()
    commands_sent = read(server, b"3\r\nabc\r\n3\r\ndef\r\n")
    assert [command.event for command in commands_sent] == [RequestData(1, b"abcdef")]
