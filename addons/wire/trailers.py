"""HTTP/1 trailer fields read and written, so a chunked body that ends with them neither hangs its
receiver nor slips past inspection.

mitmproxy's HTTP/1 layer raises "HTTP trailers are not implemented yet" when a chunked body (request or
response) ends with trailer fields, and the other side waits for a body that never ends; it cannot write
trailers to an HTTP/1 peer either. ``Http1Trailers`` installs HTTP/1 connections that hand the fields on
as the trailer events HTTP/2 already uses (so the inspect addon scans them like headers) and write them
after the last chunk. Where the body goes on with a fixed length instead of chunked, there is no place for
them and they are dropped.

The same connections hand on the body data that one read brought as one piece (``JoinedData``), and so do
the HTTP/2 connections ``Http2JoinedData`` installs (``JoinedFrames``); and the HTTP/1 client side frames
an HTTP/2 or HTTP/3 request's body, which may come with no length (``frame_for_http1``). The HTTP/2
connection to an upstream names the upstream's stream resets as its own (``UPSTREAM_RESET``) and drops a
request its agent reset while it waited for a free stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import h2.errors
import h2.events
import h11
from h11._readers import ChunkedReader
from mitmproxy import http
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    HttpEvent,
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    RequestProtocolError,
    RequestTrailers,
    ResponseData,
    ResponseEndOfMessage,
    ResponseProtocolError,
    ResponseTrailers,
)
from mitmproxy.proxy.layers.http._http1 import Http1Client, Http1Connection, Http1Server
from mitmproxy.proxy.layers.http._http2 import Http2Client, Http2Connection, Http2Server, StreamState

from addons.wire.sent import mark_sent

CommandGenerator = Generator[commands.Command, Any, None]
PEER_RESET = "stream reset by client"
"""How mitmproxy's HTTP/2 connections name a RST_STREAM from either peer."""
UPSTREAM_RESET = "stream reset by upstream"
"""How a flow's error starts when its upstream reset its stream."""


def unread_request(context: Context, http_version: bytes) -> http.Request | None:
    """The request a head the HTTP layer could not read stands for, so that the flow it makes is recorded
    as the protocol error it is: no method, path or header, bound for the tunnel's destination; None
    outside a tunnel, where only the head that could not be read named one."""
    address = context.server.address
    if address is None:
        return None
    return http.Request(
        host=address[0],
        port=address[1],
        method=b"",
        scheme=b"https" if context.client.tls else b"http",
        authority=b"",
        path=b"",
        http_version=http_version,
        headers=http.Headers(),
        content=None,
        trailers=None,
        timestamp_start=time.time(),
        timestamp_end=None,
    )


class TrailerReader:
    """Wraps h11's reader of a chunked body: trailer fields at its end are handed to ``found`` and the end
    is reported without them, which is what mitmproxy accepts."""

    def __init__(self, reader: Any, found: Callable[[http.Headers], None]) -> None:
        self.reader = reader
        self.found = found

    def __call__(self, buffer: Any) -> Any:
        event = self.reader(buffer)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            self.found(http.Headers(list(event.headers.raw_items())))
            return h11.EndOfMessage()
        return event

    def read_eof(self) -> Any:
        return self.reader.read_eof()


def reads_chunks(reader: object) -> bool:
    """Whether a body's reader can bring more than one piece of data from one read, or trailer fields: a
    chunked body's only. A body with a length, or read to the connection's close, brings what one read
    holds as one piece and ends without fields, so what its reading yields needs no joining or watch."""
    return isinstance(reader, (ChunkedReader, TrailerReader))


def is_chunked(message: http.Message | None) -> bool:
    return message is not None and "chunked" in message.headers.get("transfer-encoding", "").lower()


def joined_data(
    commands: CommandGenerator,
    receive: type[RequestData | ResponseData],
    before: Callable[[commands.Command], HttpEvent | None] | None = None,
) -> CommandGenerator:
    """``commands`` with the body data they hand on for one stream one after another (``receive``
    events) joined into one piece; anything else passes in its place, in order, after what ``before``
    hands on ahead of it, and what the layer sends back for a command reaches ``commands``."""
    joined: list[bytes] = []
    stream_id = 0
    reply: Any = None
    while True:
        try:
            command = commands.send(reply)
        except StopIteration:
            break
        reply = None
        data = (
            command.event if isinstance(command, ReceiveHttp) and isinstance(command.event, receive) else None
        )
        if joined and (data is None or data.stream_id != stream_id):
            yield ReceiveHttp(receive(stream_id, b"".join(joined)))
            joined = []
        if data is not None:
            joined.append(data.data)
            stream_id = data.stream_id
            continue
        ahead = None if before is None else before(command)
        if ahead is not None:
            yield ReceiveHttp(ahead)
        reply = yield command
    if joined:
        yield ReceiveHttp(receive(stream_id, b"".join(joined)))


class JoinedData(Http1Connection):
    """Hands on the body data of one read as one piece. mitmproxy hands on each HTTP/1 chunk on its own,
    and an event stream's server sends one event per chunk, so every event of a burst went through the
    HTTP layer, the stream callable and a socket write of its own. What arrived together is joined into
    one piece instead (never more than the read brought): a body read as it arrives sees the same bytes
    in fewer, larger pieces, and nothing waits for data that has not come."""

    def read_body(self, event: events.Event) -> CommandGenerator:
        if reads_chunks(self.body_reader):
            return joined_data(super().read_body(event), self.ReceiveData, self.handed_before)
        return super().read_body(event)

    def handed_before(self, command: commands.Command) -> HttpEvent | None:
        """What to hand on ahead of ``command``, of those a chunked body's reading yields: the joining
        generator asks, so that a read goes through one generator around mitmproxy's, not one per
        addition."""
        return None


class JoinedFrames(Http2Connection):
    """``JoinedData`` for HTTP/2: the DATA frames of one stream that one read brought reach the HTTP layer
    as one piece (mitmproxy hands on each frame on its own; a server sends one event per frame)."""

    def _handle_event(self, event: events.Event) -> CommandGenerator:
        if isinstance(event, events.DataReceived):
            yield from joined_data(super()._handle_event(event), self.ReceiveData)
        else:
            yield from super()._handle_event(event)


class JoinedHttp2Server(JoinedFrames, Http2Server):
    def protocol_error(
        self, message: str, error_code: int = h2.errors.ErrorCodes.PROTOCOL_ERROR
    ) -> CommandGenerator:
        """A frame that ends the connection (a header block with a bad pseudo-header or an upper-case name)
        may have opened a stream mitmproxy never took for a request, which no record would then name: it
        is handed on as a request of no method or path, and ends with the others."""
        opened = self.h2_conn.highest_inbound_stream_id
        request = unread_request(self.context, b"HTTP/2.0") if opened and opened not in self.streams else None
        if request is not None:
            yield ReceiveHttp(RequestHeaders(opened, request, False))
            self.streams[opened] = StreamState.HEADERS_RECEIVED
        yield from super().protocol_error(message, error_code)


class JoinedHttp2Client(JoinedFrames, Http2Client):
    def _handle_event(self, event: events.Event) -> CommandGenerator:
        if isinstance(event, RequestProtocolError) and event.stream_id in self.stream_queue:
            # Its agent reset a request still waiting for a stream the upstream has free: mitmproxy would
            # send it whole once one is, after its record said it was not forwarded.
            del self.stream_queue[event.stream_id]
            return
        yield from super()._handle_event(event)

    def _handle_event2(self, event: events.Event) -> CommandGenerator:
        # Here and not in ``_handle_event``, which holds a request back while the upstream has no stream
        # free for it: marked as its head is written, not as it waits.
        if isinstance(event, HttpEvent):
            mark_sent(event)
        yield from super()._handle_event2(event)

    def handle_h2_event(self, event: h2.events.Event) -> Generator[commands.Command, Any, bool]:
        produced = super().handle_h2_event(event)
        if not isinstance(event, h2.events.StreamReset):
            return (yield from produced)
        return (yield from reset_by_upstream(produced))


def reset_by_upstream(
    produced: Generator[commands.Command, Any, bool],
) -> Generator[commands.Command, Any, bool]:
    """``produced`` with the stream error an upstream's RST_STREAM hands on named as the upstream's:
    mitmproxy's HTTP/2 connections name either peer's reset "stream reset by client", and the record would
    take the upstream's for the agent's leaving."""
    reply: Any = None
    while True:
        try:
            command = produced.send(reply)
        except StopIteration as stop:
            return bool(stop.value)
        event = command.event if isinstance(command, ReceiveHttp) else None
        if isinstance(event, ResponseProtocolError) and event.message.startswith(PEER_RESET):
            event.message = UPSTREAM_RESET + event.message.removeprefix(PEER_RESET)
        reply = yield command


class Http2JoinedData:
    """Installs ``JoinedHttp2Server`` and ``JoinedHttp2Client`` as the HTTP/2 connections mitmproxy's HTTP
    layer makes."""

    def load(self, loader: object) -> None:
        http_layer.Http2Server = JoinedHttp2Server  # type: ignore[attr-defined]
        http_layer.Http2Client = JoinedHttp2Client  # type: ignore[attr-defined]


class TrailerFields(JoinedData):
    """What reading and writing trailers adds to either end of an HTTP/1 connection."""

    ReceiveTrailers: type[RequestTrailers | ResponseTrailers]
    SendTrailers: type[RequestTrailers | ResponseTrailers]
    SendEndOfMessage: type[RequestEndOfMessage | ResponseEndOfMessage]
    received_trailers: http.Headers | None = None
    trailers_to_send: http.Headers | None = None

    @property  # type: ignore[override]  # the base declares a plain attribute, assigned per message
    def body_reader(self) -> TrailerReader:
        return self._body_reader

    @body_reader.setter
    def body_reader(self, reader: Any) -> None:
        self._body_reader = TrailerReader(reader, self._note_trailers) if reads_chunks(reader) else reader

    def _note_trailers(self, trailers: http.Headers) -> None:
        self.received_trailers = trailers

    def handed_before(self, command: commands.Command) -> HttpEvent | None:
        """The trailer fields the body ended with, ahead of its end."""
        if (
            isinstance(command, ReceiveHttp)
            and isinstance(command.event, self.ReceiveEndOfMessage)
            and self.received_trailers is not None
        ):
            assert self.stream_id is not None
            trailers, self.received_trailers = self.received_trailers, None
            return self.ReceiveTrailers(self.stream_id, trailers)
        return None

    def send(self, event: HttpEvent) -> CommandGenerator:
        if isinstance(event, self.SendTrailers) or (
            self.trailers_to_send is not None and isinstance(event, self.SendEndOfMessage)
        ):
            return self._send_trailers(event)
        return super().send(event)

    def _send_trailers(self, event: HttpEvent) -> CommandGenerator:
        if isinstance(event, self.SendTrailers):
            self.trailers_to_send = event.trailers
            return
        assert self.trailers_to_send is not None
        trailers, self.trailers_to_send = self.trailers_to_send, None
        if is_chunked(self.outgoing()):
            yield commands.SendData(self.conn, b"0\r\n" + bytes(trailers) + b"\r\n")
            yield from self.mark_done(**{self.done_flag: True})
            return
        yield from super().send(event)

    def outgoing(self) -> http.Message | None:
        raise NotImplementedError

    done_flag: str


class TrailerServer(TrailerFields, Http1Server):
    ReceiveTrailers = RequestTrailers
    SendTrailers = ResponseTrailers
    SendEndOfMessage = ResponseEndOfMessage
    done_flag = "response"

    def outgoing(self) -> http.Message | None:
        bodyless = self.request is not None and self.request.method.upper() == "HEAD"
        return None if bodyless else self.response


class TrailerClient(TrailerFields, Http1Client):
    ReceiveTrailers = ResponseTrailers
    SendTrailers = RequestTrailers
    SendEndOfMessage = RequestEndOfMessage
    done_flag = "request"

    def send(self, event: HttpEvent) -> CommandGenerator:
        if isinstance(event, RequestHeaders):
            frame_for_http1(event)
        mark_sent(event)
        return super().send(event)

    def outgoing(self) -> http.Message | None:
        return self.request


def frame_for_http1(event: RequestHeaders) -> None:
    """Give an HTTP/2 or HTTP/3 request with a body the framing HTTP/1 needs to find its end: a length
    where the body is whole (and has no trailers), else chunked. Those protocols end a body by their own
    frames, so such a request may announce no length; mitmproxy's HTTP/1 side then sent it without one,
    an HTTP/1 server read it as having no body, and read the body as a request of its own, which nothing
    here had judged (another path, another host, a refused tool call)."""
    request = event.request
    if event.end_stream or not (request.is_http2 or request.is_http3):
        return
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        return
    if request.raw_content is not None and not request.trailers:
        request.headers["content-length"] = str(len(request.raw_content))
    else:
        request.headers["transfer-encoding"] = "chunked"


class Http1Trailers:
    """Installs ``TrailerServer`` and ``TrailerClient`` as the HTTP/1 connections mitmproxy's HTTP layer
    makes."""

    def load(self, loader: object) -> None:
        # The layer looks its classes up in its module, which does not list them as exported.
        http_layer.Http1Server = TrailerServer  # type: ignore[attr-defined]
        http_layer.Http1Client = TrailerClient  # type: ignore[attr-defined]
