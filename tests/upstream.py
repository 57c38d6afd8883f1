"""A fake model API over TLS that answers in the real OpenAI and Anthropic formats, JSON and SSE.

Tests set ``upstream.reply`` to say what the model answers next and read ``upstream.received`` to see
what actually reached the upstream through the proxy.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from proxy.commands.localca import UpstreamPKI

SHUTDOWN_POLL_S = 0.05
"""How often a test's HTTP server looks whether it was asked to stop: ``serve_forever``'s own 0.5 s is
waited out, half of it on average, at every stop."""


@dataclass
class ToolCallReply:
    name: str
    arguments: dict[str, Any]
    id: str = "call_0001"


@dataclass
class Reply:
    """What the fake model says next. Streams send ``text`` in pieces of ``piece_size`` characters."""

    text: str = "Hello from the upstream model."
    tool_calls: list[ToolCallReply] = field(default_factory=list)
    model: str = "gpt-4o-mini-2024-07-18"
    tokens_in: int = 21
    tokens_out: int = 7
    piece_size: int = 4
    pause_after_first_event: float = 0.0
    pause_between_events: float = 0.0
    """How long a stream waits after each event: a model that writes slower than the proxy reads."""
    think_seconds: float = 0.0
    """How long the model takes before it starts answering."""
    cut_after_events: int | None = None
    """Drop the connection in the middle of this event (a stream that breaks mid-event)."""
    gzip_stream: bool = False
    """Compress a stream with gzip even though the client asked for it plain."""
    content_type: str | None = None
    """Overrides the content type the reply is labelled with (an event stream labelled JSON, say)."""
    hold_after_first_event: threading.Event | None = None
    """When set, a stream stops after its first event until the test sets this event (or 10 s pass)."""
    mcp_tools: list[dict[str, Any]] = field(default_factory=list)
    """What an MCP ``tools/list`` answers, when not the default tools."""
    body: bytes | None = None
    """A crafted answer sent as it is, whatever the route (JSON unless ``content_type`` says otherwise)."""
    status: int = 200
    """The status a crafted ``body`` is sent with."""
    events: list[bytes] | None = None
    """A crafted event stream: each item sent as it is, as one chunk."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers."""
    encoded_body: tuple[str, bytes] | None = None
    """A body sent as it is under this content-encoding instead of the reply, JSON or stream."""
    trailers: dict[str, str] = field(default_factory=dict)
    """Trailer fields sent after the last chunk of a stream."""
    gzip_transfer: bool = False
    """Send the answer, JSON or stream, with ``Transfer-Encoding: gzip, chunked``: compressed as a
    transfer coding, which only some clients (curl) undo."""
    reason: str | None = None
    """The reason phrase of the status line, when not the status code's own."""
    informational: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Interim answers (``103 Early Hints``, ``102 Processing``) sent before the answer, each a status
    and its header fields."""


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def pieces_of(body: bytes, size: int) -> list[bytes]:
    return [body[start : start + size] for start in range(0, len(body), size)]


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def openai_chat_json(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-test0001",
        "object": "chat.completion",
        "created": 1_732_000_000,
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.tokens_in,
            "completion_tokens": reply.tokens_out,
            "total_tokens": reply.tokens_in + reply.tokens_out,
        },
    }


def openai_chat_events(reply: Reply) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        return sse(
            {
                "id": "chatcmpl-test0001",
                "object": "chat.completion.chunk",
                "created": 1_732_000_000,
                "model": reply.model,
                "choices": []
                if usage
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    for piece in pieces(reply.text, reply.piece_size) if reply.text else []:
        yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in pieces(json.dumps(call.arguments), reply.piece_size):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, finish="tool_calls" if reply.tool_calls else "stop")
    yield chunk(
        {},
        usage={
            "prompt_tokens": reply.tokens_in,
            "completion_tokens": reply.tokens_out,
            "total_tokens": reply.tokens_in + reply.tokens_out,
        },
    )
    yield sse("[DONE]")


def anthropic_json(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in reply.tool_calls
    ]
    return {
        "id": "msg_test0001",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.tokens_in, "output_tokens": reply.tokens_out},
    }


def anthropic_events(reply: Reply) -> Iterator[bytes]:
    message = {
        **anthropic_json(reply),
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": reply.tokens_in, "output_tokens": 1},
    }
    yield sse({"type": "message_start", "message": message}, "message_start")
    index = 0
    if reply.text:
        yield sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        )
        yield sse({"type": "ping"}, "ping")
        for piece in pieces(reply.text, reply.piece_size):
            yield sse(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                "content_block_delta",
            )
        yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        index = 1
    for offset, call in enumerate(reply.tool_calls):
        block = index + offset
        yield sse(
            {
                "type": "content_block_start",
                "index": block,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
            },
            "content_block_start",
        )
        for piece in pieces(json.dumps(call.arguments), reply.piece_size):
            yield sse(
                {
                    "type": "content_block_delta",
                    "index": block,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
                "content_block_delta",
            )
        yield sse({"type": "content_block_stop", "index": block}, "content_block_stop")
    yield sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": reply.tokens_out},
        },
        "message_delta",
    )
    yield sse({"type": "message_stop"}, "message_stop")


def responses_json(reply: Reply) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.text:
        output.append(
            {
                "type": "message",
                "id": "msg_test0001",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    output += [
        {
            "type": "function_call",
            "id": f"fc_{call.id}",
            "call_id": call.id,
            "name": call.name,
            "arguments": json.dumps(call.arguments),
            "status": "completed",
        }
        for call in reply.tool_calls
    ]
    return {
        "id": "resp_test0001",
        "object": "response",
        "created_at": 1_732_000_000,
        "status": "completed",
        "model": reply.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": {
            "input_tokens": reply.tokens_in,
            "output_tokens": reply.tokens_out,
            "total_tokens": reply.tokens_in + reply.tokens_out,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def responses_events(reply: Reply) -> Iterator[bytes]:
    final = responses_json(reply)
    sequence = iter(range(1_000_000))

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(sequence), **data}, kind)

    yield event("response.created", response={**final, "status": "in_progress", "output": [], "usage": None})
    for output_index, item in enumerate(final["output"]):
        if item["type"] == "message":
            yield event(
                "response.output_item.added",
                output_index=output_index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            yield event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=output_index,
                content_index=0,
                part=part,
            )
            for piece in pieces(reply.text, reply.piece_size):
                yield event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=output_index,
                    content_index=0,
                    delta=piece,
                )
            yield event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=output_index,
                content_index=0,
                text=reply.text,
            )
            yield event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=output_index,
                content_index=0,
                part={**part, "text": reply.text},
            )
        else:
            yield event(
                "response.output_item.added",
                output_index=output_index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in pieces(item["arguments"], reply.piece_size):
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=output_index,
                    delta=piece,
                )
            yield event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=output_index,
                arguments=item["arguments"],
            )
        yield event("response.output_item.done", output_index=output_index, item=item)
    yield event("response.completed", response=final)


def gemini_json(reply: Reply) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": reply.text}] if reply.text else []
    parts += [{"functionCall": {"name": call.name, "args": call.arguments}} for call in reply.tool_calls]
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": reply.tokens_in,
            "candidatesTokenCount": reply.tokens_out,
            "totalTokenCount": reply.tokens_in + reply.tokens_out,
        },
        "modelVersion": reply.model,
        "responseId": "resp-test0001",
    }


def gemini_events(reply: Reply) -> Iterator[bytes]:
    final = gemini_json(reply)
    texts = pieces(reply.text, reply.piece_size) if reply.text else []
    for piece in texts:
        yield sse(
            {
                **final,
                "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                "usageMetadata": None,
            }
        )
    calls = [{"functionCall": {"name": call.name, "args": call.arguments}} for call in reply.tool_calls]
    yield sse(
        {
            **final,
            "candidates": [
                {"content": {"parts": calls, "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
        }
    )


MCP_TOOLS = [
    {
        "name": "search_docs",
        "description": "Search the product documentation.",
        "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]


def mcp_json(reply: Reply, request: Any) -> dict[str, Any]:
    """A JSON-RPC answer in MCP's shape for the methods a client's session uses."""
    method = request.get("method")
    result: dict[str, Any]
    if method == "initialize":
        result = {
            "protocolVersion": (request.get("params") or {}).get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake-upstream", "version": "1.0.0"},
        }
    elif method == "tools/list":
        result = {"tools": reply.mcp_tools or MCP_TOOLS}
    else:
        result = {"content": [{"type": "text", "text": reply.text}], "isError": False}
    return {"jsonrpc": "2.0", "id": request.get("id"), "result": result}


def _gzipped(events: Iterator[bytes]) -> Iterator[bytes]:
    """Each event compressed and flushed on its own, as a server compressing a live stream sends it."""
    compressor = zlib.compressobj(wbits=31)
    for event in events:
        yield compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


ROUTES = {
    "/v1/chat/completions": (openai_chat_json, openai_chat_events),
    "/v1/messages": (anthropic_json, anthropic_events),
    "/v1/responses": (responses_json, responses_events),
}


class _ServerNamedByItsAddress(ThreadingHTTPServer):
    """HTTPServer looks the name of the address it binds up, which where no name server answers (a
    network namespace with no way to one) waits out the resolver, 10 s; the server answers the same
    without it."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class FakeUpstream:
    """Over TLS with ``pki``'s server certificate; over plain HTTP when ``pki`` is None."""

    def __init__(self, pki: UpstreamPKI | None, host: str = "127.0.0.1") -> None:
        self.reply = Reply()
        self.answer: Callable[[Received], Reply] | None = None
        """Where set, what the model says next is chosen for each POST or PUT from what it received: a
        protocol of several steps (a resumable upload) answers each step its own way."""
        self.received: list[Received] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read ``received`` instead."""

            def do_GET(self) -> None:
                """A crafted event stream where the reply holds one (a server's stream of MCP's HTTP+SSE
                transport), or a crafted answer (a run or a thread's messages read back); else no
                server-initiated stream: MCP clients are told so with 405, as the spec allows."""
                if upstream.reply.events is None and upstream.reply.body is None:
                    self._send(405, b"")
                    return
                upstream.received.append(Received("GET", self.path, dict(self.headers.items()), b""))
                if upstream.reply.events is None:
                    self._send(upstream.reply.status, upstream.reply.body or b"")
                    return
                self._stream(iter(upstream.reply.events), upstream.reply)

            def do_DELETE(self) -> None:
                """An MCP client ending its session."""
                self._send(200, b"")

            def do_POST(self) -> None:
                body = self._read_body()
                path = self.path.split("?", 1)[0]
                received = Received(self.command, self.path, dict(self.headers.items()), body)
                upstream.received.append(received)
                if upstream.answer is not None:
                    upstream.reply = upstream.answer(received)
                if upstream.reply.events is not None:
                    self._stream(iter(upstream.reply.events), upstream.reply)
                    return
                if upstream.reply.body is not None:
                    self._send(upstream.reply.status, upstream.reply.body)
                    return
                if path == "/mcp":
                    request = json.loads(body)
                    if "id" not in request:  # a notification: accepted, nothing to answer
                        self._send(202, b"")
                        return
                    message = mcp_json(upstream.reply, request)
                    if "text/event-stream" in self.headers.get("accept", ""):
                        self._stream(iter([sse(message, "message")]), upstream.reply)
                    else:
                        self._send(200, json.dumps(message).encode())
                    return
                if ":generateContent" in path or ":streamGenerateContent" in path:
                    if "alt=sse" in self.path:
                        self._stream(gemini_events(upstream.reply), upstream.reply)
                    else:
                        self._send(200, json.dumps(gemini_json(upstream.reply)).encode())
                    return
                route = ROUTES.get(path)
                if route is None:
                    self._send(
                        404, b'{"error": {"message": "no such route", "type": "invalid_request_error"}}'
                    )
                    return
                as_json, as_events = route
                reply = upstream.reply
                time.sleep(reply.think_seconds)
                try:
                    wants_stream = bool(json.loads(body or b"{}").get("stream"))
                except ValueError:
                    self._send(
                        400, b'{"error": {"message": "invalid JSON", "type": "invalid_request_error"}}'
                    )
                    return
                if wants_stream:
                    self._stream(as_events(reply), reply)
                else:
                    self._send(200, json.dumps(as_json(reply)).encode())

            do_PUT = do_POST

            def _read_body(self) -> bytes:
                if "chunked" not in self.headers.get("transfer-encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body

            def _send_informational(self, reply: Reply) -> None:
                for status, headers in reply.informational:
                    self.send_response_only(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.flush()

            def _send(self, status: int, body: bytes) -> None:
                if upstream.reply.gzip_transfer or upstream.reply.trailers:
                    self._stream(
                        iter([body]), upstream.reply, upstream.reply.content_type or "application/json"
                    )
                    return
                self._send_informational(upstream.reply)
                self.send_response(status, upstream.reply.reason)
                self.send_header("content-type", upstream.reply.content_type or "application/json")
                if upstream.reply.encoded_body is not None:
                    encoding, body = upstream.reply.encoded_body
                    self.send_header("content-encoding", encoding)
                self.send_header("content-length", str(len(body)))
                for name, value in upstream.reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, events: Iterator[bytes], reply: Reply, content_type: str | None = None) -> None:
                self._send_informational(reply)
                self.send_response(200, reply.reason)
                self.send_header("content-type", content_type or reply.content_type or "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "gzip, chunked" if reply.gzip_transfer else "chunked")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.gzip_stream:
                    self.send_header("content-encoding", "gzip")
                    events = _gzipped(events)
                if reply.gzip_transfer:
                    events = _gzipped(events)
                if reply.encoded_body is not None:
                    encoding, body = reply.encoded_body
                    self.send_header("content-encoding", encoding)
                    events = iter(pieces_of(body, 64 << 10))
                self.end_headers()
                for number, event in enumerate(events):
                    if number == reply.cut_after_events:
                        half = event[: len(event) // 2]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    if number == 0 and reply.pause_after_first_event:
                        time.sleep(reply.pause_after_first_event)
                    if reply.pause_between_events:
                        time.sleep(reply.pause_between_events)
                    if number == 0 and reply.hold_after_first_event is not None:
                        reply.hold_after_first_event.wait(10)
                trailers = "".join(f"{name}: {value}\r\n" for name, value in reply.trailers.items())
                self.wfile.write(b"0\r\n" + trailers.encode() + b"\r\n")
                self.wfile.flush()

        self.server = _ServerNamedByItsAddress((host, 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if pki is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(pki.server_cert, pki.server_key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://localhost:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
