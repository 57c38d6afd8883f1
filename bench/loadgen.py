"""Agents and a model API that spend as little CPU per request as Python allows, for ``bench/throughput.py``.

On a machine whose cores the proxy shares with its load, a throughput figure is that of whichever process
runs out of CPU first. The SDK's httpx client spends about half a millisecond of CPU on each request and
the tests' threaded fake upstream about a fifth of one: on two cores, a large part of what the proxy would
otherwise have to itself. Here each side is one thread driving non-blocking TLS sockets with a selector
(OpenSSL does the cryptography), sending bytes built beforehand and reading each message by its framing
alone, so that the proxy between them is what runs out first.

The agents still speak as the SDK does: each opens its own connection to the proxy, asks it for a tunnel
with ``CONNECT`` and ``Proxy-Authorization`` as httpx asks, and sends, on that one keep-alive TLS
connection, the chat completion request the OpenAI SDK builds (its request line, headers and JSON, taken
once from the SDK itself), each request with a prompt of its own so that no verdict comes from a cache.
Each response must be a 200 whose JSON carries the expected reply; anything else is counted as an error,
not as throughput, and the agent goes on (on a new connection when its connection broke).

The upstream answers every chat completion with the OpenAI chat completion JSON of the tests' fake
upstream (``tests.upstream.openai_chat_json``), under a ``date`` header that changes every second as a
server's does.
"""

from __future__ import annotations

import base64
import email.utils
import itertools
import json
import selectors
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import httpx
import openai

from proxy.commands.localca import UpstreamPKI
from tests.upstream import Reply, openai_chat_json

CHAT_PATH = "/v1/chat/completions"
NUMBER_WIDTH = 12
"""The digits that make each prompt its own, in place of the prompt's first characters."""
READ_SIZE = 1 << 16


# -- HTTP/1.1 framing ----------------------------------------------------------------------------------


class Framing:
    """Takes HTTP/1.1 messages (head, body) off a byte stream, each framed by Content-Length or chunked."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def take(self) -> tuple[bytes, bytes] | None:
        """The next whole message, or None until more bytes come."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buffer[:head_end])
        length, chunked = _framing(head)
        start = head_end + 4
        if chunked:
            dechunked = _dechunk(self.buffer, start)
            if dechunked is None:
                return None
            body, end = dechunked
        else:
            end = start + length
            if len(self.buffer) < end:
                return None
            body = bytes(self.buffer[start:end])
        del self.buffer[:end]
        return head, body


def _framing(head: bytes) -> tuple[int, bool]:
    """A message head's Content-Length, and whether its body is chunked instead."""
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


def _dechunk(buffer: bytearray, position: int) -> tuple[bytes, int] | None:
    """The chunked body that starts at ``position`` and where its message ends; None while incomplete."""
    body = bytearray()
    while True:
        size_end = buffer.find(b"\r\n", position)
        if size_end < 0:
            return None
        size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
        position = size_end + 2
        if size == 0:  # trailer fields, if any, up to an empty line
            end = buffer.find(b"\r\n\r\n", position - 2)
            return None if end < 0 else (bytes(body), end + 4)
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


def status_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def status_of(head: bytes) -> int:
    return int(status_line(head).split(b" ", 2)[1])


# -- non-blocking TLS connections under one selector ---------------------------------------------------


class Endpoint:
    """One non-blocking TLS connection: what is written waits for the socket, what is read is split into
    messages for ``on_message``. A server's connection shakes hands without blocking; a client's has
    shaken hands before it comes here."""

    def __init__(self, selector: selectors.BaseSelector, sock: ssl.SSLSocket) -> None:
        self.selector = selector
        self.sock = sock
        self.framing = Framing()
        self.pending = memoryview(b"")
        self.handshaking = sock.server_side
        self.closed = False
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self)

    def on_message(self, head: bytes, body: bytes) -> None:
        raise NotImplementedError

    def on_broken(self, reason: str) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.pending = memoryview(bytes(self.pending) + data if self.pending else data)
        self.flush()

    def flush(self) -> None:
        try:
            while self.pending:
                self.pending = self.pending[self.sock.send(self.pending) :]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            self.selector.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
            return
        except OSError as error:
            self.on_broken(f"send: {error}")
            return
        self.selector.modify(self.sock, selectors.EVENT_READ, self)

    def ready(self, events: int) -> None:
        if self.handshaking:
            try:
                self.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as error:
                self.on_broken(f"handshake: {error}")
                return
            self.handshaking = False
        if events & selectors.EVENT_WRITE:
            self.flush()
        if not self.closed:
            self.read()

    def read(self) -> None:
        try:
            while True:
                data = self.sock.recv(READ_SIZE)
                if not data:
                    self.on_broken("the proxy closed the connection")
                    return
                self.framing.buffer += data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        except OSError as error:
            self.on_broken(f"recv: {error}")
            return
        while not self.closed and (message := self.framing.take()) is not None:
            self.on_message(*message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.selector.unregister(self.sock)
            self.sock.close()


def serve_until(selector: selectors.BaseSelector, until: float) -> None:
    """Serve every registered socket until ``until`` (``time.perf_counter``)."""
    while (left := until - time.perf_counter()) > 0:
        for key, events in selector.select(min(left, 0.5)):
            key.data.ready(events)


# -- the model API -------------------------------------------------------------------------------------


class Answers:
    """What the upstream answers: the chat completion, its ``date`` header made anew each second."""

    def __init__(self, reply: str) -> None:
        self.body = json.dumps(openai_chat_json(Reply(text=reply))).encode()
        self.second = 0
        self.chat = b""

    def chat_completion(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            date = email.utils.formatdate(second, usegmt=True)
            head = (
                f"HTTP/1.1 200 OK\r\nserver: bench-upstream\r\ndate: {date}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\n\r\n"
            )
            self.chat = head.encode() + self.body
        return self.chat


NO_SUCH_ROUTE = b'{"error": {"message": "no such route", "type": "invalid_request_error"}}'
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(NO_SUCH_ROUTE),
    NO_SUCH_ROUTE,
)


class UpstreamConnection(Endpoint):
    def __init__(self, selector: selectors.BaseSelector, sock: ssl.SSLSocket, answers: Answers) -> None:
        super().__init__(selector, sock)
        self.answers = answers

    def on_message(self, head: bytes, body: bytes) -> None:
        asks_chat = head.startswith(b"POST " + CHAT_PATH.encode() + b" ")
        self.send(self.answers.chat_completion() if asks_chat else NOT_FOUND)


class Listener:
    def __init__(
        self, selector: selectors.BaseSelector, sock: socket.socket, context: ssl.SSLContext
    ) -> None:
        self.selector = selector
        self.sock = sock
        self.context = context
        self.answers: Answers | None = None
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self)

    def ready(self, events: int) -> None:
        assert self.answers is not None
        try:
            while True:
                connection, _ = self.sock.accept()
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tls = self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
                UpstreamConnection(self.selector, tls, self.answers)
        except BlockingIOError:
            pass


def serve_upstream(pki: UpstreamPKI, reply: str, ready: Connection) -> None:
    """The model API on a free loopback port, forever (run it in a process of its own); sends
    ``https://localhost:<port>`` through ``ready`` once it listens."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    selector = selectors.DefaultSelector()
    sock = socket.create_server(("127.0.0.1", 0), backlog=512)
    listener = Listener(selector, sock, context)
    listener.answers = Answers(reply)
    ready.send(f"https://localhost:{sock.getsockname()[1]}")
    while True:
        serve_until(selector, time.perf_counter() + 3600)


# -- the agents ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """The bytes of the SDK's chat completion request, split where the prompt's number goes."""

    before: bytes
    after: bytes

    def numbered(self, number: int) -> bytes:
        return self.before + str(number).zfill(NUMBER_WIDTH).encode() + self.after


def sdk_chat_request(url: str, prompt: str, headers: dict[str, str]) -> ChatRequest:
    """What ``openai.OpenAI(base_url=url).chat.completions.create`` sends for ``prompt`` with ``headers``
    as default headers: taken from the SDK through httpx's mock transport, which sees the request as the
    SDK hands it to the network."""
    placeholder = "#" * NUMBER_WIDTH
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=openai_chat_json(Reply()))

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        client = openai.OpenAI(
            api_key="sk-test",
            base_url=f"{url}/v1",
            default_headers=headers,
            http_client=http,  # type: ignore[arg-type]  # annotated as httpx2's; an httpx client serves as well
            max_retries=0,
        )
        content = placeholder + prompt[NUMBER_WIDTH:]
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    request = sent[0]
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [name + b": " + value for name, value in request.headers.raw]
    message = b"\r\n".join(lines) + b"\r\n\r\n" + request.content
    before, found, after = message.partition(placeholder.encode())
    if not found or placeholder.encode() in after:
        raise ValueError("the prompt's placeholder is not in the SDK's request once")
    return ChatRequest(before, after)


@dataclass(frozen=True)
class Tunnel:
    """How an agent reaches the upstream: a CONNECT through the proxy, then TLS to the upstream's name."""

    proxy: tuple[str, int]
    target: str
    """host:port of the upstream"""
    context: ssl.SSLContext
    credentials: tuple[str, str] | None = None
    """agent id and token, sent as httpx sends a proxy URL's user and password"""

    def open(self) -> ssl.SSLSocket:
        sock = socket.create_connection(self.proxy, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"CONNECT {self.target} HTTP/1.1", f"Host: {self.target}", "Accept: */*"]
        if self.credentials is not None:
            basic = base64.b64encode(":".join(self.credentials).encode()).decode()
            lines.append(f"Proxy-Authorization: Basic {basic}")
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                if not (data := sock.recv(4096)):
                    raise ConnectionError("the proxy closed the connection before answering CONNECT")
                answer += data
            if status_of(answer) != 200:
                raise ConnectionError(f"CONNECT answered {status_line(answer).decode(errors='replace')}")
            return self.context.wrap_socket(sock, server_hostname=self.target.rpartition(":")[0])
        except BaseException:
            sock.close()
            raise


@dataclass
class Tally:
    """Each response's time of arrival and latency (``time.perf_counter``), and the errors by kind."""

    finished: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def within(self, start: float, end: float) -> list[float]:
        """The latencies of the responses that arrived between ``start`` and ``end``."""
        return [
            latency
            for finished, latency in zip(self.finished, self.latencies, strict=True)
            if start <= finished < end
        ]


class Agents:
    """``count`` agents, each sending the next request as soon as its last response is read."""

    def __init__(self, tunnel: Tunnel, request: ChatRequest, reply: str, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.tunnel = tunnel
        self.request = request
        self.reply = reply
        self.tally = Tally()
        self.numbers = itertools.count()
        self.stop_at = float("inf")
        self.agents = [Agent(self, tunnel.open()) for _ in range(count)]

    def run(self, warm_up_until: float, on_counting: Callable[[], None], until: float) -> None:
        """Send from now until ``until``; call ``on_counting()`` at ``warm_up_until`` and at ``until``."""
        self.stop_at = until
        for agent in self.agents:
            agent.ask()
        serve_until(self.selector, warm_up_until)
        on_counting()
        serve_until(self.selector, until)
        on_counting()

    def close(self) -> None:
        for agent in self.agents:
            agent.close()
        self.selector.close()

    def replace(self, broken: Agent) -> None:
        """Open a new connection for an agent whose connection broke (an error is counted if it cannot)."""
        index = self.agents.index(broken)
        try:
            self.agents[index] = Agent(self, self.tunnel.open())
        except OSError as error:
            self.tally.errors[f"reconnecting: {error}"] += 1
            return
        self.agents[index].ask()


class Agent(Endpoint):
    def __init__(self, agents: Agents, sock: ssl.SSLSocket) -> None:
        super().__init__(agents.selector, sock)
        self.agents = agents
        self.started = 0.0

    def ask(self) -> None:
        if time.perf_counter() < self.agents.stop_at:
            self.started = time.perf_counter()
            self.send(self.agents.request.numbered(next(self.agents.numbers)))

    def on_message(self, head: bytes, body: bytes) -> None:
        finished = time.perf_counter()
        tally = self.agents.tally
        if (problem := self.problem(head, body)) is None:
            tally.finished.append(finished)
            tally.latencies.append(finished - self.started)
        else:
            tally.errors[problem] += 1
        self.ask()

    def problem(self, head: bytes, body: bytes) -> str | None:
        """What is wrong with a response: anything but a 200 with the expected reply."""
        if status_of(head) != 200:
            return f"{status_line(head).decode(errors='replace')}: {body[:200].decode(errors='replace')}"
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            return f"not a chat completion: {body[:200].decode(errors='replace')}"
        return None if content == self.agents.reply else f"another reply: {str(content)[:200]}"

    def on_broken(self, reason: str) -> None:
        self.close()
        if time.perf_counter() < self.agents.stop_at:
            self.agents.tally.errors[reason] += 1
            self.agents.replace(self)
