"""Answers a request before its body has been read, without hanging the client.

mitmproxy relays a body over ``stream_large_bodies`` as it arrives, and cannot answer such a request:
an addon that sets ``flow.response`` in ``requestheaders`` (a 407, a refused egress, a body over the
inspection cap) makes it raise "Can't set a response and enable streaming at the same time", and the
client waits for an answer that never comes. A body of no announced length (chunked) is held until it
grows past the same size and hits the same error then, with no hook run at all.

``AnsweringStream`` is mitmproxy's HTTP stream with both cases handled: a request answered before its
body was read gets that answer at once; a body that grows past the cap while held runs the
``requestovercap`` hook first, where an addon may answer it before any byte of it has left. The rest of
the body is never read into memory: over HTTP/1 the connection is closed after the answer (the unread
bytes would otherwise be read as the next request); over HTTP/2 and HTTP/3 the rest of that stream is
read and dropped, and the connection keeps serving its other streams.

An answer of no announced length that grows past the cap while held is switched to streaming the same
way, after ``responseheaders`` saw it as one to hold: the ``responseovercap`` hook runs first, where an
addon reads it on its way or replaces it, before any byte of it has reached the client.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.proxy.layers.http._events import RequestEndOfMessage, ResponseEndOfMessage
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

CommandGenerator = Generator[commands.Command, Any, None]
State = Callable[[events.Event], CommandGenerator]


@dataclass
class RequestOverCapHook(commands.StartHook):
    """A request body of no announced length grew past ``stream_large_bodies`` while held: none of it has
    left yet. An addon may set ``flow.response`` to answer it instead of relaying it."""

    name = "requestovercap"
    flow: http.HTTPFlow


@dataclass
class ResponseOverCapHook(commands.StartHook):
    """A response body of no announced length grew past ``stream_large_bodies`` while held, after the
    ``responseheaders`` hook saw it as one to hold: it is relayed as it arrives from here on, and none of
    it has reached the client yet. An addon may set ``flow.response.stream`` to read it on its way, or
    replace the response."""

    name = "responseovercap"
    flow: http.HTTPFlow


class StateOfItsOwn:
    """A stream's state, one of its own methods (all mitmproxy makes a state of), kept as the method's
    function and bound to the stream when read: the same method, equal to the one set, without the
    reference from the stream to itself that a bound method kept on it is."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = f"_{name}_function"

    def __get__(self, stream: http_layer.HttpStream, owner: type | None = None) -> State:
        try:
            return types.MethodType(stream.__dict__[self.attribute], stream)
        except KeyError:
            raise AttributeError(self.attribute.removesuffix("_function").lstrip("_")) from None

    def __set__(self, stream: http_layer.HttpStream, state: State) -> None:
        if not isinstance(state, types.MethodType) or state.__self__ is not stream:
            raise TypeError(f"a stream's state is one of its own methods, not {state!r}")
        stream.__dict__[self.attribute] = state.__func__


class AnsweringStream(http_layer.HttpStream):
    """mitmproxy's HTTP stream, answering early, and freed as soon as it is done.

    mitmproxy keeps a stream's two states as the stream's own bound methods and the stream in its
    context's list of layers: two reference cycles, so every finished stream, with its flow (request,
    response, both bodies), waited for the garbage collector. Here the states are kept as functions and
    bound when read (``StateOfItsOwn``), and a stream that is done and not upgraded leaves its context's
    layers once the HTTP layer has dropped it: its flow is freed when the last reference to it goes."""

    client_state = StateOfItsOwn()
    server_state = StateOfItsOwn()

    def flow_done(self) -> CommandGenerator:
        yield from super().flow_done()
        if self._handle_event != self.passthrough and self in self.context.layers:
            self.mode  # noqa: B018  # mitmproxy reads it from the stream's place among the layers, once
            self.context.layers.remove(self)

    def start_request_stream(self) -> CommandGenerator:
        if self.flow.response is None and self.client_state == self.state_consume_request_body:
            yield RequestOverCapHook(self.flow)
            if (yield from self.check_killed(True)):
                return
        if self.flow.response is None:
            yield from super().start_request_stream()
        else:
            yield from self.answer_unread_request()

    def start_response_stream(self) -> CommandGenerator:
        if self.server_state == self.state_consume_response_body:
            yield ResponseOverCapHook(self.flow)
            if (yield from self.check_killed(True)):
                return
        yield from super().start_response_stream()

    def answer_unread_request(self) -> CommandGenerator:
        """The answer goes out now; what is left of the body is never read into memory."""
        assert self.flow.response is not None
        self.client_state = self.state_drop_request_body
        self.flow.request.stream = False
        http1 = self.flow.request.http_version.startswith("HTTP/1")
        if http1:
            self.flow.response.headers["connection"] = "close"
        self.flow.response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        yield from self.send_response()
        # mitmproxy sends the end of a response once the request has ended too: here it goes out now.
        yield http_layer.SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
        self.server_state = self.state_done
        if http1:
            yield commands.CloseConnection(self.context.client)
            self.client_state = self.server_state = self.state_errored
            self.flow.live = False

    def state_drop_request_body(self, event: events.Event) -> CommandGenerator:
        """Over HTTP/2 and HTTP/3: the rest of the stream's body is dropped as it arrives; its end ends
        the stream."""
        if isinstance(event, RequestEndOfMessage):
            self.client_state = self.state_done
            self.flow.live = False
            yield http_layer.DropStream(self.stream_id)


class EarlyAnswers:
    """Installs ``AnsweringStream`` as the stream mitmproxy's HTTP layer makes for each request, and
    closes a client connection mitmproxy was told to close but left open.

    mitmproxy closes a connection by cancelling the task that reads it; when that task is waiting to hand
    over what it read (a client still sending a body it was answered for), the cancellation skips the
    socket's close and the client blocks on a write nobody reads. The client's disconnection is still
    announced, and its socket is closed here.
    """

    def load(self, loader: object) -> None:
        http_layer.HttpStream = AnsweringStream  # type: ignore[misc]  # the layer looks its stream class up here

    def client_disconnected(self, client: connection.Client) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
        transport = handler.transports.get(client) if handler is not None else None
        if transport is not None and transport.writer is not None and not transport.writer.is_closing():
            transport.writer.close()
