"""A small HTTP/1.1 server on asyncio for the admin listener: one request per connection, bounded head
and body, a deadline for slow clients. It runs on the proxy's event loop, so handlers see the same
state the addons do without locks of their own."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from proxy.config.policy import AdminTLS

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
DEADLINE_S = 10.0
MAX_CONNECTIONS = 64
"""Connections a listener holds open at once (``_connections``)."""
MAX_HEADERS = 100

log = structlog.get_logger("egressguard.admin")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Names lowercased."""
    body: bytes = b""
    query_string: str = ""
    """The query as sent, which ``query`` reads less its parameters without a value."""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is an empty object. Raises BadRequest otherwise."""
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(value, dict):
            raise BadRequest("the body must be a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncGenerator[bytes] | None = None
    """Sent after the head, chunk by chunk, until it ends or the client goes (server-sent events);
    ``body`` is then unused."""

    @classmethod
    def json(cls, status: int, value: Any, **headers: str) -> Response:
        body = json.dumps(value, indent=1, ensure_ascii=False, default=str).encode() + b"\n"
        return cls(status, body, "application/json", headers)

    @classmethod
    def error(cls, status: int, message: str, **headers: str) -> Response:
        return cls.json(status, {"error": {"status": status, "message": message}}, **headers)


class BadRequest(Exception):
    """The request cannot be served as sent (400 with the message)."""


Handler = Callable[[Request], Awaitable[Response]]


async def start(
    host: str, port: int, handler: Handler, tls: ssl.SSLContext | None = None, names: Iterable[str] = ()
) -> asyncio.Server:
    """Listen on ``host:port``, with HTTPS where ``tls`` is given (``server_context``), answering requests
    whose Host is an IP address, ``localhost`` or one of ``names`` (``admin.hosts``); raises OSError when
    the address cannot be bound. TLS is taken up once a connection is counted, so that connections that
    never finish their handshake are held to the same cap and deadline as those that never send a head."""
    return await asyncio.start_server(
        _connections(handler, tls, frozenset(_plain_name(name) for name in names)),
        host,
        port,
        limit=MAX_HEAD_BYTES,
    )


class CertificateError(Exception):
    """The admin listener's certificate or key cannot be used; the message names the files and why."""


def server_context(tls: AdminTLS) -> ssl.SSLContext:
    """TLS 1.2 or later with the certificate chain and key ``tls`` names."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # No password: OpenSSL would otherwise ask for an encrypted key's on the terminal, and wait.
        context.load_cert_chain(tls.cert_file, tls.key_file, password=b"")
    except OSError as error:
        reason = getattr(error, "reason", None) or error.strerror or str(error)
        raise CertificateError(
            f"the admin listener's certificate {tls.cert_file} and key {tls.key_file} cannot be used "
            f"(an unencrypted PEM key that matches the certificate's first entry): {reason}"
        ) from None
    return context


async def start_unix(path: Path, handler: Handler) -> asyncio.Server:
    """Listen on a Unix socket at ``path`` (a worker's admin API, for the host's admin listener), which
    only the proxy's user may connect to."""
    connections = _connections(handler, None, None)
    server = await asyncio.start_unix_server(connections, str(path), limit=MAX_HEAD_BYTES)
    path.chmod(0o600)
    return server


def _connections(
    handler: Handler, tls: ssl.SSLContext | None, names: frozenset[str] | None
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Serve each connection's one request. ``names``: the Host names answered besides IP addresses and
    localhost; None answers any (a Unix socket, which no browser reaches). At most ``MAX_CONNECTIONS``
    are open: one more closes the oldest that has not yet sent its whole request (a client opening
    connections and sending nothing, or a head a byte at a time, loses its own first), or is itself
    closed when every one is being answered."""
    open_connections: set[asyncio.StreamWriter] = set()
    unread: dict[asyncio.StreamWriter, None] = {}
    """Connections whose request is not read yet, oldest first."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(open_connections) >= MAX_CONNECTIONS:
            if not unread:
                writer.transport.abort()
                return
            oldest = next(iter(unread))
            del unread[oldest]
            open_connections.discard(oldest)
            oldest.transport.abort()
        open_connections.add(writer)
        unread[writer] = None
        try:
            await _answer(reader, writer, handler, tls, names, lambda: unread.pop(writer, None))
        finally:
            open_connections.discard(writer)
            unread.pop(writer, None)

    return connection


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    tls: ssl.SSLContext | None,
    names: frozenset[str] | None,
    read: Callable[[], object],
) -> None:
    """Read one request within the deadline (``read`` called once it is), answer it and close. A TLS
    handshake that fails or does not end in time gets no answer: none could be read."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    if tls is not None:
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(tls)
        except (TimeoutError, ssl.SSLError, OSError):
            writer.transport.abort()
            return

    async def serve() -> Response:
        request = await _read_request(reader)
        read()
        if names is not None and not _named(request.headers.get("host"), names):
            return Response.error(421, "this listener is not reached by that name; see admin.hosts")
        return await handler(request)

    try:
        async with asyncio.timeout_at(deadline):
            response = await serve()
    except TimeoutError:
        response = Response.error(408, "request not received in time")
    except BadRequest as error:
        response = Response.error(400, str(error))
    except Exception as error:  # a handler bug answers 500 and the listener goes on
        log.error("admin.handler_failed", error=f"{type(error).__name__}: {error}"[:300])
        response = Response.error(500, "internal error; see the proxy's log")
    with contextlib.suppress(OSError, asyncio.CancelledError):
        writer.write(_encode(response))
        await writer.drain()
        if response.stream is not None:
            await _relay(response.stream, reader, writer)
        writer.close()
        await writer.wait_closed()


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""RFC 9110's token: no white space in a header's name or before its colon, no line folded on."""


async def _read_request(reader: asyncio.StreamReader) -> Request:
    """One request's head and body. A header sent twice (two ``Authorization``, two ``Host``: which
    counts is a guess), a malformed name or a length that is not plain digits is a BadRequest."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError):
        raise BadRequest("the request head is incomplete or too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("not an HTTP/1.x request line")
    method, target, _ = parts
    fields = [line for line in lines[1:] if line]
    if len(fields) > MAX_HEADERS:
        raise BadRequest(f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in fields:
        name, separator, value = line.partition(":")
        if not separator or _HEADER_NAME.fullmatch(name) is None:
            raise BadRequest("a header line is not a name, a colon and a value")
        if name.lower() in headers:
            raise BadRequest(f"the {name} header is sent more than once")
        headers[name.lower()] = value.strip(" \t")
    if "transfer-encoding" in headers:
        raise BadRequest("send a body with content-length")
    length_text = headers.get("content-length", "0")
    if re.fullmatch(r"[0-9]{1,8}", length_text) is None or int(length_text) > MAX_BODY_BYTES:
        raise BadRequest(f"content-length must be a number up to {MAX_BODY_BYTES}")
    body = await reader.readexactly(int(length_text)) if int(length_text) else b""
    split = urlsplit(target)
    return Request(
        method=method.upper(),
        path=unquote(split.path),
        query=dict(parse_qsl(split.query)),
        headers=headers,
        body=body,
        query_string=split.query,
    )


def _plain_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _named(host: str | None, names: frozenset[str]) -> bool:
    """Whether a request's Host is the listener's: an IP address (which no other site's page can make
    the browser send for itself), ``localhost``, or one of ``names``. Any other name may be a page's own
    name made to resolve to the listener's address (DNS rebinding): to the browser, that page and the
    listener are then one origin."""
    if host is None:
        raise BadRequest("a Host header is required")
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::[0-9]+)?", host)
    name = bracketed.group(1) if bracketed else re.sub(r":[0-9]+\Z", "", host)
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return bracketed is not None or ":" not in name
    return bracketed is None and _plain_name(name) in names | {"localhost"}


async def _relay(
    stream: AsyncGenerator[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Write the stream's chunks until it ends or the client closes its side (which only a read notices
    while the stream is quiet)."""

    async def pump() -> None:
        async for chunk in stream:
            writer.write(chunk)
            await writer.drain()

    async def until_closed() -> None:
        while await reader.read(1024):
            pass  # a client has nothing more to say on this connection; whatever it sends is dropped

    pumping = asyncio.ensure_future(pump())
    closed = asyncio.ensure_future(until_closed())
    try:
        await asyncio.wait({pumping, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, closed):
            task.cancel()
        await asyncio.gather(pumping, closed, return_exceptions=True)
        await stream.aclose()


def _encode(response: Response) -> bytes:
    reason = HTTPStatus(response.status).phrase
    length = [] if response.stream is not None else [f"Content-Length: {len(response.body)}"]
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        *length,
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers.items()),
    ]
    body = response.body if response.stream is None else b""
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
