"""What a peer sends and HTTP/1 has not yet parsed has a size limit, so no peer can fill the proxy's
memory with it.

mitmproxy's HTTP/1 connections buffer what a peer sends until a line ends, with no bound ("FIXME: protect
against header size DoS"): the head before its blank line, a chunk's size line, the trailer fields, and
the bytes a client sends while its last answer is still coming. A client, before it has authenticated,
or an upstream could send one endless line and have the proxy hold it all (300 MB sent made it 1 GB).
``HeadLimits`` installs HTTP/1 connections that stop reading a peer once more than ``MAX_UNPARSED_BYTES``
wait unparsed: an agent's head is answered 431, an agent's body that stops parsing ends its request, an
upstream's answer ends as a 502 to the agent, and the connection is closed. Body data itself is handed on
as it arrives and never waits here. These are subclasses of ``addons.wire.trailers``' connections, so
``HeadLimits`` comes after ``Http1Trailers`` in the chain.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping

from mitmproxy import connection, http
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    HttpEvent,
    RequestHeaders,
    RequestProtocolError,
    ResponseHeaders,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._http1 import Http1Connection, make_error_response

from addons.gate.turns import turn_of
from addons.wire.trailers import CommandGenerator, TrailerClient, TrailerServer, unread_request

OVERSIZE_HEAD = "request head over"
"""How the protocol error of a head over the limit starts: answered 431."""
UNREAD_HEAD = "request head unreadable:"
"""How the protocol error of a head mitmproxy could not parse starts: answered 400."""
MAX_UNPARSED_BYTES = 1 << 20
"""A head's limit in Go's net/http (``DefaultMaxHeaderBytes``); nginx and Node refuse far less."""


class BoundedBuffer(Http1Connection):
    def _handle_event(self, event: events.Event) -> CommandGenerator:
        # Only data can grow the buffer, and parsing only takes from it: an event that cannot take it over
        # the limit is handled as mitmproxy handles it, without a generator around its commands (some 25
        # events a request).
        if isinstance(event, events.DataReceived) and len(self.buf) + len(event.data) > MAX_UNPARSED_BYTES:
            return self._bounded(event)
        return super()._handle_event(event)

    def _bounded(self, event: events.Event) -> CommandGenerator:
        yield from super()._handle_event(event)
        if self.state not in (self.passthrough, self.done) and len(self.buf) > MAX_UNPARSED_BYTES:
            state, self.state = self.state, self.done
            yield from self.overflowed(
                reading_head=state == self.read_headers, in_message=state == self.read_body
            )

    def overflowed(self, *, reading_head: bool, in_message: bool) -> CommandGenerator:
        raise NotImplementedError


class BoundedServer(BoundedBuffer, TrailerServer):
    def overflowed(self, *, reading_head: bool, in_message: bool) -> CommandGenerator:
        if reading_head:
            message = f"{OVERSIZE_HEAD} {MAX_UNPARSED_BYTES} bytes sent without a line end"
            yield commands.SendData(self.conn, make_error_response(431, message))
            yield commands.CloseConnection(self.conn)
            yield from self.unread_request(message)
            return
        yield commands.CloseConnection(self.conn)
        if in_message and self.stream_id is not None:
            message = f"over {MAX_UNPARSED_BYTES} bytes sent without a line end"
            yield ReceiveHttp(RequestProtocolError(self.stream_id, message, ErrorCode.GENERIC_CLIENT_ERROR))

    def read_headers(self, event: events.ConnectionEvent) -> CommandGenerator:
        """A head mitmproxy cannot read (a bad request line) is answered 400 and the connection closed,
        with no flow, so no record: it is handed on as a request of no method or path that failed, which
        the audit records as the protocol error it is."""
        refused = None
        for command in super().read_headers(event):
            if isinstance(command, commands.Log) and self.request is None:
                refused = command.message.rpartition(": ")[2] or command.message
            yield command
        if refused is not None and self.state == self.done:
            yield from self.unread_request(f"{UNREAD_HEAD} {refused}")

    def unread_request(self, message: str) -> CommandGenerator:
        """The request a head that could not be read stands for, in a tunnel (``unread_request``): its
        headers, then the protocol error that ended it."""
        request = unread_request(self.context, b"HTTP/1.1")
        if request is not None:
            yield ReceiveHttp(RequestHeaders(self.stream_id, request, False))
            yield ReceiveHttp(RequestProtocolError(self.stream_id, message, ErrorCode.GENERIC_CLIENT_ERROR))


SWITCHING_PROTOCOLS = 101
INTERIM: MutableMapping[connection.Connection, dict[int, int]] = weakref.WeakKeyDictionary()
"""By upstream connection, the interim answers it sent before the answer it is sending now: per status,
how many. Cleared as each request is sent on it, so an exchange that failed after one is not followed
by a record of interim answers its successor never got."""


class BoundedClient(BoundedBuffer, TrailerClient):
    def send(self, event: HttpEvent) -> CommandGenerator:
        if isinstance(event, RequestHeaders):
            INTERIM.pop(self.conn, None)
        yield from super().send(event)

    def overflowed(self, *, reading_head: bool, in_message: bool) -> CommandGenerator:
        yield commands.CloseConnection(self.conn)
        if self.stream_id is not None:
            message = f"the upstream sent over {MAX_UNPARSED_BYTES} bytes without a line end"
            yield ReceiveHttp(ResponseProtocolError(self.stream_id, message, ErrorCode.GENERIC_SERVER_ERROR))

    def read_headers(self, event: events.ConnectionEvent) -> CommandGenerator:
        """An interim answer (``103 Early Hints``, ``102 Processing``, a ``100 Continue`` the proxy did not
        ask for) is not relayed, and the answer after it is read as the request's: mitmproxy took the
        first head for the answer, its bodiless end for the exchange's, so the agent waited on an answer
        never sent and the real one was left unread on the connection. Each is noted (``INTERIM``); a
        ``101`` is the answer it is (an upgrade)."""
        while True:
            reading = super().read_headers(event)
            interim = None
            for command in reading:
                if isinstance(command, ReceiveHttp) and isinstance(command.event, ResponseHeaders):
                    status = command.event.response.status_code
                    if 100 <= status < 200 and status != SWITCHING_PROTOCOLS:
                        # Taken before mitmproxy reads a body of it: the next head is read as the answer.
                        reading.close()
                        interim = status
                        break
                yield command
            if interim is None:
                return
            self.response = None
            seen = INTERIM.setdefault(self.conn, {})
            seen[interim] = seen.get(interim, 0) + 1


class HeadLimits:
    """Installs ``BoundedServer`` and ``BoundedClient`` as the HTTP/1 connections mitmproxy's HTTP layer
    makes."""

    def load(self, loader: object) -> None:
        http_layer.Http1Server = BoundedServer  # type: ignore[attr-defined]
        http_layer.Http1Client = BoundedClient  # type: ignore[attr-defined]

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """The turn records the interim answers the upstream sent before this answer, not relayed."""
        seen = INTERIM.pop(flow.server_conn, None)
        turn = turn_of(flow)
        if seen and turn is not None:
            statuses = ", ".join(
                f"{status}" if count == 1 else f"{status} ({count} times)" for status, count in seen.items()
            )
            turn.errors.append(f"response: the upstream's interim answers {statuses} were not relayed")
