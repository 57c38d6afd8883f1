"""A small HTTP/1.1 server on asyncio for the admin listener: one request per connection, bounded head
and body, a deadline for slow clients. It runs on the proxy's event loop, so handlers see the same
state the addons do without locks of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable
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

log = structlog.get_logger("egressguard.admin")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Names lowercased."""
    body: bytes = b""

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


async def start(host: str, port: int, handler: Handler, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen on ``host:port``, with HTTPS where ``tls`` is given (``server_context``); raises OSError
    when the address cannot be bound."""
    return await asyncio.start_server(
        _connections(handler),
        host,
        port,
        limit=MAX_HEAD_BYTES,
        ssl=tls,
        ssl_handshake_timeout=DEADLINE_S if tls else None,
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
    server = await asyncio.start_unix_server(_connections(handler), str(path), limit=MAX_HEAD_BYTES)
    path.chmod(0o600)
    return server


def _connections(handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response = await asyncio.wait_for(_serve_one(reader, handler), DEADLINE_S)
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

    return connection


async def _serve_one(reader: asyncio.StreamReader, handler: Handler) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError):
        raise BadRequest("the request head is incomplete or too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("not an HTTP/1.x request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, separator, value = line.partition(":")
            if not separator:
                raise BadRequest("a header line has no colon")
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest("send a body with content-length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
        raise BadRequest(f"content-length must be a number up to {MAX_BODY_BYTES}")
    body = await reader.readexactly(int(length_text)) if int(length_text) else b""
    split = urlsplit(target)
    return await handler(
        Request(
            method=method.upper(),
            path=unquote(split.path),
            query=dict(parse_qsl(split.query)),
            headers=headers,
            body=body,
        )
    )


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
