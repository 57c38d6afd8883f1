"""The inspect addon with mitmproxy's test flows: WebSocket messages (realtime APIs), and a response body
read whole as the event stream it is."""

from __future__ import annotations

import asyncio
import gzip
import json
import textwrap
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.http import Headers
from mitmproxy.test import taddons, tflow, tutils
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.gate.turns import METADATA_KEY
from addons.inspect import (
    PENDING_KEY,
    SLOW_AGENT_SECONDS,
    SLOW_ON_LOOP_SECONDS,
    Inspect,
    SlowAgents,
    Substitute,
    codings,
    request_inspected,
    stream_session,
    transfer_codings,
)
from addons.process.speedups import header_value, header_values
from addons.wire.wsclose import CLOSE_REASONS, CLOSING, POLICY_VIOLATION
from proxy.config.policy import parse_policy
from proxy.dialects import OpenAIChat, StreamFilters
from proxy.inspection import MAX_MESSAGE_DEPTH, TOO_DEEP_RULE
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

AWS_KEY = "AKIAQWERTY234567ABCD"


def inspect_addon(mode: str, extra: str = "") -> Inspect:
    """The addon under a policy of one agent allowed to reach api.openai.com, in ``mode``."""
    policy = parse_policy(
        textwrap.dedent(f"""\
            mode: {mode}
            {extra}
            agents:
              bot: {{token: t, role: r}}
            roles:
              r: {{egress: {{allow: [api.openai.com]}}}}
            """),
        "p.yaml",
        environ={},
    )
    return Inspect(Runtime(policy, SqliteStateStore(None)))


def chat_flow(body: dict[str, Any]) -> http.HTTPFlow:
    """A chat-completion request to api.openai.com carrying ``body``."""
    flow = tflow.tflow()
    flow.request.host, flow.request.path, flow.request.method = (
        "api.openai.com",
        "/v1/chat/completions",
        "POST",
    )
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(body).encode()
    return flow


def inspected_websocket(mode: str) -> tuple[Inspect, http.HTTPFlow]:
    addon = inspect_addon(mode)
    flow = tflow.twebsocketflow()
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    upgrade, flow.response = flow.response, None  # the request hook runs before the upstream answers
    asyncio.run(addon.request(flow))
    flow.response = upgrade
    return addon, flow


def server_says(flow: http.HTTPFlow, text: str) -> WebSocketMessage:
    assert flow.websocket is not None
    message = WebSocketMessage(Opcode.TEXT, False, text.encode())
    flow.websocket.messages.append(message)
    return message


def test_secret_in_server_message_redacted_in_enforce_mode() -> None:
    """A key in a realtime API's message is redacted before the agent reads it."""
    addon, flow = inspected_websocket("enforce")
    with taddons.context(addon):
        message = server_says(flow, f'{{"delta": "your key is {AWS_KEY}"}}')
        addon.websocket_message(flow)
    assert message.text == '{"delta": "your key is [REDACTED:aws-access-key-id]"}'
    turn = flow.metadata[METADATA_KEY]
    assert [
        (finding.where, finding.enforced) for finding in turn.findings if finding.rule == "aws-access-key-id"
    ] == [("websocket[3]", True)]
    assert turn.decision == "redacted"


def test_observe_mode_leaves_messages_alone() -> None:
    """Observe mode records the finding and forwards the message untouched."""
    addon, flow = inspected_websocket("observe")
    with taddons.context(addon):
        message = server_says(flow, f"key {AWS_KEY}")
        addon.websocket_message(flow)
    assert message.text == f"key {AWS_KEY}"
    turn = flow.metadata[METADATA_KEY]
    assert [finding.enforced for finding in turn.findings if finding.rule == "aws-access-key-id"] == [False]
    assert turn.decision == "allowed"


CARD_RUN = "card " + "4111 1111 1111 1112 " * 20_000
"""400 KB the payment-card rule reads whole in about half a second (no card: the checksum fails)."""


def streamed_chat(
    mode: str, response: http.Response, *, no_time: bool = False, whole: bool = True
) -> tuple[http.HTTPFlow, Turn]:
    """A streamed chat completion answered with ``response``, through the addon's hooks (up to its
    headers unless ``whole``); ``no_time``: secret rules have 1 ms and their budget 20 ms, which the
    payment-card rule spends on ``CARD_RUN`` and then runs out of time on."""
    addon = inspect_addon(mode)
    if no_time:
        addon.runtime.detectors.sensitive.timeout_s, addon.runtime.detectors.sensitive.rescan_s = 0.001, 0.02
    flow = chat_flow({"model": "gpt-4o", "stream": True, "messages": []})
    turn = Turn(TurnContext(agent_id="bot", role="r"))
    flow.metadata[METADATA_KEY] = turn
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
        flow.response = response
        asyncio.run(addon.responseheaders(flow))
        if whole:
            asyncio.run(addon.response(flow))
    return flow, turn


def stream_labelled_json(mode: str, body: bytes, *, no_time: bool = False) -> tuple[http.HTTPFlow, Turn]:
    """A chat completion answered with an event stream labelled as JSON."""
    return streamed_chat(
        mode, tutils.tresp(content=body, headers=Headers(content_type="application/json")), no_time=no_time
    )


def chat_event(content: str, extra: str = "") -> bytes:
    envelope = f'"id":"c","object":"chat.completion.chunk","created":1,"model":"m"{extra}'
    choice = f'{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}'
    return f'data: {{{envelope},"choices":[{choice}]}}\n\n'.encode()


def test_an_unlabelled_stream_that_cannot_be_read_does_not_pass_in_enforce_mode() -> None:
    """A stream read whole because it did not say it was one: where reading it stops (a text-only event
    nested past what its scan can walk, read ahead in a burst), the body does not pass unread."""
    deep = "[" * 1200 + "]" * 1200  # JSON reads it (its parser nests to 1,500), the residual scan cannot
    body = chat_event(f"key {AWS_KEY} ") + chat_event("hello") + chat_event("there", f',"x":{deep}')
    flow, turn = stream_labelled_json("enforce", body)
    assert flow.response is not None and flow.response.content is not None
    assert AWS_KEY.encode() not in flow.response.content
    assert flow.response.status_code == 502
    assert any("reading the stream" in error for error in turn.errors)
    observed, _ = stream_labelled_json("observe", body)
    assert observed.response is not None and observed.response.content == body


def server_sends_binary(flow: http.HTTPFlow, content: bytes) -> WebSocketMessage:
    assert flow.websocket is not None
    message = WebSocketMessage(Opcode.BINARY, False, content)
    flow.websocket.messages.append(message)
    return message


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_binary_message_that_is_text_is_read_as_text(mode: str) -> None:
    """A binary frame carrying text (a client that decodes it reads a key) is inspected as a text frame is,
    and redacted in enforce mode, still a binary frame."""
    addon, flow = inspected_websocket(mode)
    with taddons.context(addon):
        message = server_sends_binary(flow, f'{{"delta": "your key is {AWS_KEY}"}}'.encode())
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    enforcing = mode == "enforce"
    assert [f.enforced for f in turn.findings if f.rule == "aws-access-key-id"] == [enforcing]
    assert (AWS_KEY.encode() in message.content) is not enforcing
    assert not message.is_text


def test_a_binary_message_without_a_secret_is_read_and_delivered() -> None:
    addon, flow = inspected_websocket("enforce")
    with taddons.context(addon):
        message = server_sends_binary(flow, bytes(range(256)) * 4)
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    assert message.content == bytes(range(256)) * 4 and not message.dropped
    assert [f for f in turn.findings if f.where.startswith("websocket")] == []


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01" + AWS_KEY.encode() + b"\xff" * 40,
        b"\x08\x96\x01" + f"key={AWS_KEY}".encode("utf-16-le") + b"\x00\x00\x80",
        gzip.compress(f"key={AWS_KEY}".encode(), mtime=0),
        zlib.compress(f'{{"delta": "{AWS_KEY}"}}'.encode()),
    ],
    # Named, not shown: every test process must collect the same ids.
    ids=["protobuf", "utf-16", "gzip", "zlib"],
)
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_secret_in_a_binary_message_drops_it_where_enforced(content: bytes, mode: str) -> None:
    """A binary message that is not text (protobuf, UTF-16, compressed) is read in its printable runs and
    what its compressed start decodes to: it cannot be rewritten, so where enforced it is not delivered,
    and the connection (no realtime API's) closes with the refusal as its reason."""
    addon, flow = inspected_websocket(mode)
    with taddons.context(addon, Proxyserver()):
        message = server_sends_binary(flow, content)
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    enforcing = mode == "enforce"
    assert [f.enforced for f in turn.findings if f.rule == "aws-access-key-id"] == [enforcing]
    assert message.dropped is enforcing and message.content == content
    reason = f"egressguard blocked: audit event {turn.event_id}; data_exfiltration (aws-access-key-id)"
    assert CLOSE_REASONS.get(flow.client_conn) == (reason if enforcing else None)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_secret_in_request_trailers_is_treated_as_in_a_header(mode: str) -> None:
    """Request trailers (HTTP/2, or chunked HTTP/1) carry data as headers do: a key there is recorded, and
    redacted where requests are redacted."""
    addon = inspect_addon(mode, "redaction: {requests: true}")
    flow = tflow.tflow()
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    flow.request.trailers = Headers([(b"x-checksum", f"key {AWS_KEY}".encode())])
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
        asyncio.run(request_inspected(flow))  # observe mode inspects alongside the request
    turn = flow.metadata[METADATA_KEY]
    enforcing = mode == "enforce"
    assert [f.enforced for f in turn.findings if f.rule == "aws-access-key-id"] == [enforcing]
    assert flow.request.trailers is not None
    assert (AWS_KEY in flow.request.trailers["x-checksum"]) is not enforcing


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("PRIVATE-TOKEN", True),
        ("X-Auth-Token", True),
        ("DD-API-KEY", True),
        ("X-Vault-Token", True),
        ("apikey", True),
        ("X-Shopify-Access-Token", True),
        ("x-client-secret", True),
        ("X-Debug", False),
        ("X-Author", False),
        ("X-Keyboard-Layout", False),
        ("x-request-id", False),
    ],
)
def test_a_request_header_named_as_a_credential_is_the_agents_own_and_left_alone(
    name: str, credential: bool
) -> None:
    """Tool APIs name their credential headers each their own way; an agent sends its key in one on every
    call, so such a header is not data it sends, while any other header holding a key is."""
    addon = inspect_addon("enforce", "redaction: {requests: true}")
    flow = tflow.tflow()
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    flow.request.headers[name] = AWS_KEY
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
    turn = flow.metadata[METADATA_KEY]
    assert (flow.request.headers[name] == AWS_KEY) is credential
    assert any(f.rule == "aws-access-key-id" for f in turn.findings) is not credential


GOOGLE_KEY = "AIzaSyD3mQ7v9XkLp2Rw8TnB4cYhJ6sUe1fGa0Z"


def test_a_key_a_repeated_key_shadows_in_a_redacted_request_is_found_and_never_leaves() -> None:
    """A prompt's key is redacted, so what leaves is the body rewritten: a key in a value a repeated key
    shadows in the body as it came (which a reader keeping first values reads) is found too, and the
    request leaves with the one value inspected."""
    addon = inspect_addon("enforce", "redaction: {requests: true}")
    flow = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": f"Deploy with {AWS_KEY}"}]})
    assert flow.request.content is not None
    flow.request.content = flow.request.content.replace(
        b'"model"', f'"user": "key {GOOGLE_KEY}", "user": "u-1", "model"'.encode()
    )
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
    turn = flow.metadata[METADATA_KEY]
    found = {finding.rule: finding for finding in turn.findings}
    assert found["aws-access-key-id"].enforced and found["gcp-api-key"].enforced
    assert found["gcp-api-key"].where.startswith("shadowed by a repeated key")
    sent = flow.request.text
    assert sent is not None and AWS_KEY not in sent and GOOGLE_KEY not in sent
    assert json.loads(sent)["user"] == "u-1" and sent.count('"user":') == 1


def request_to(host: str, path: str, redaction: str = "") -> tuple[http.HTTPFlow, Turn]:
    """A request to ``host`` and ``path`` through the addon in enforce mode (``redaction``: that section's
    settings): the flow and its turn."""
    addon = inspect_addon("enforce", f"redaction: {{{redaction}}}" if redaction else "")
    flow = tflow.tflow()
    flow.request.host, flow.request.path = host, path
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
    return flow, flow.metadata[METADATA_KEY]


@pytest.mark.parametrize(
    ("host", "parameter", "value"),
    [
        ("generativelanguage.googleapis.com", "key", GOOGLE_KEY),
        ("tool.example", "api_key", "tool-7f3a9c2b1d0e4f56a7b8"),
        ("tool.example", "access_token", "tool-7f3a9c2b1d0e4f56a7b8"),
        ("tool.example", "apikey", "tool-7f3a9c2b1d0e4f56a7b8"),
    ],
)
def test_the_agents_own_key_in_a_query_parameter_named_as_a_credential_is_left_alone(
    host: str, parameter: str, value: str
) -> None:
    """Google's REST APIs take their key as ``?key=``, a tool its own opaque key: the agent's own credential
    for the API, as in a header; a key in any other parameter, or in the path, is data the agent sends and
    is redacted."""
    flow, turn = request_to(
        host, f"/v1/items/{AWS_KEY}?{parameter}={value}&note={AWS_KEY}%20x", "requests: true"
    )
    assert f"{parameter}={value}&" in flow.request.path
    assert AWS_KEY not in flow.request.path
    assert {f.rule for f in turn.findings if f.enforced} == {"aws-access-key-id"}


@pytest.mark.parametrize(
    ("host", "parameter", "value"),
    [
        ("tool.example", "key", GOOGLE_KEY),
        ("generativelanguage.googleapis.com", "access_token", GOOGLE_KEY),
        ("generativelanguage.googleapis.com", "key", AWS_KEY),
        ("api.openai.com", "api_key", GOOGLE_KEY),
    ],
)
def test_a_providers_key_a_destination_does_not_take_in_a_credential_parameter_refuses_the_request(
    host: str, parameter: str, value: str
) -> None:
    """A key of a provider's format in a parameter named as a credential where the destination takes no
    such key there is a ``credential.unexpected`` finding, refused in enforce mode with nothing sent."""
    flow, turn = request_to(host, f"/v1/items?{parameter}={value}")
    assert flow.response is not None and flow.response.status_code == 403
    (finding,) = [f for f in turn.findings if f.rule == "credential.unexpected"]
    assert finding.enforced and finding.threat == "credential_theft" and finding.where == f"url ?{parameter}"
    assert value not in json.dumps([finding.signal, finding.where, finding.extra])


CODING_FIELD_NAMES = [
    b"Content-Encoding",
    b"content-encoding",
    b"CONTENT-encoding",
    b"Transfer-Encoding",
    b"transfer-encoding",
    b"Content-Type",
    b"X-Content-Encoding",
]
CODING_FIELD_VALUES = [b"gzip", b"", b"br, chunked", b"identity", b"chunked", b"GZip , deflate", b"\xff\xfe"]


@given(
    st.lists(
        st.tuples(st.sampled_from(CODING_FIELD_NAMES), st.sampled_from(CODING_FIELD_VALUES)), max_size=6
    ),
    st.booleans(),
)
def test_codings_are_those_of_every_field_named_in_any_case(
    fields: list[tuple[bytes, bytes]], speedups: bool
) -> None:
    """The codings read are those of every field whose name is the header's in any case, in order, joined
    as ``Headers.get`` joins them, whatever the repeats, empty values and undecodable bytes, with
    mitmproxy's header lookups and with the indexed ones the proxy installs."""

    def named(name: bytes) -> list[str]:
        return [value.decode("utf-8", "surrogateescape") for field, value in fields if field.lower() == name]

    listed = (coding.strip().lower() for coding in ", ".join(named(b"transfer-encoding")).split(","))
    transfer = [coding for coding in listed if coding not in ("", "chunked", "identity")]
    content = ", ".join(named(b"content-encoding")) if named(b"content-encoding") else "identity"
    with pytest.MonkeyPatch.context() as patch:
        if speedups:
            patch.setattr(Headers, "get_all", header_values)
            patch.setattr(Headers, "get", header_value)
        message = tflow.tflow(resp=True).response
        assert message is not None
        message.headers = Headers(fields)
        for _ in range(2):  # the second time from the index the first built
            assert transfer_codings(message) == transfer
            assert codings(message) == ", ".join([content, *transfer])


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_stream_whose_headers_a_rule_ran_out_of_time_on_is_answered_502_where_enforced(mode: str) -> None:
    """A relayed answer leaves with its headers: where a rule ran out of time on them and that is
    enforced, the agent gets a 502 in its API's shape instead and none of the upstream's bytes; observe
    mode relays it and records the finding, not enforced."""
    response = tutils.tresp(
        content=chat_event("hello"),
        headers=Headers(content_type="text/event-stream", x_note=CARD_RUN),
    )
    flow, turn = streamed_chat(mode, response, no_time=True, whole=False)
    timeouts = [finding for finding in turn.findings if finding.rule == "inspection.scan_timeout"]
    assert timeouts and all(finding.enforced is (mode == "enforce") for finding in timeouts)
    assert flow.response is not None and (flow.response.status_code == 502) is (mode == "enforce")
    if mode == "enforce":
        assert isinstance(flow.response.stream, Substitute) and turn.decision == "blocked"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_unlabelled_stream_a_rule_ran_out_of_time_on_is_refused_where_enforced(mode: str) -> None:
    """A stream read whole because it did not say it was one, whose text a secret rule runs out of time
    on: a 502 where enforced, its finding enforced; observe mode hands it on and records the finding."""
    body = chat_event(CARD_RUN) + chat_event("done")
    flow, turn = stream_labelled_json(mode, body, no_time=True)
    assert flow.response is not None and (flow.response.status_code == 502) is (mode == "enforce")
    timeouts = [finding for finding in turn.findings if finding.rule == "inspection.scan_timeout"]
    assert timeouts and all(finding.enforced is (mode == "enforce") for finding in timeouts)
    assert (turn.decision == "blocked") is (mode == "enforce")


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_answer_whose_trailers_a_rule_ran_out_of_time_on_is_refused_where_enforced(mode: str) -> None:
    """Trailers come after the body and reach the agent after the response hook: a rule out of time on
    them refuses a JSON answer read whole (502) where enforced, its finding enforced; observe mode hands
    it on and records the finding."""
    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        ],
    }
    response = tutils.tresp(
        content=json.dumps(completion).encode(), headers=Headers(content_type="application/json")
    )
    response.trailers = Headers([(b"x-note", CARD_RUN.encode())])
    flow, turn = streamed_chat(mode, response, no_time=True)
    assert flow.response is not None and (flow.response.status_code == 502) is (mode == "enforce")
    timeouts = [finding for finding in turn.findings if finding.rule == "inspection.scan_timeout"]
    assert timeouts and all(finding.enforced is (mode == "enforce") for finding in timeouts)
    assert (turn.decision == "blocked") is (mode == "enforce")


def test_a_session_that_only_reads_reads_events_up_to_the_inspection_cap() -> None:
    """Observe mode sends the upstream's bytes as they came: its session may hold an event to the cap.
    One that filters holds what it has not sent: it reads events of 1 MiB at most."""
    policy = inspect_addon("observe", "inspection: {max_body_bytes: 4MiB}").runtime.policy
    event = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"a " * (1 << 20) + b'k"}}]}\n\n'
    chunks = [event[start : start + 65536] for start in range(0, len(event), 65536)]
    reading = stream_session(OpenAIChat(), StreamFilters(), policy)
    for chunk in chunks:
        reading.feed(chunk)
    reading.finish()
    assert reading.unread_events == 0 and reading.completion.text[0].text.endswith("a k")
    gate = StreamFilters(tool_gate=lambda call, complete: "release")
    filtering = stream_session(OpenAIChat(), gate, policy)
    for chunk in chunks:
        filtering.feed(chunk)
    filtering.finish()
    assert filtering.unread_events == 1 and filtering.completion.text == []


@pytest.mark.parametrize(("strings", "off_loop"), [(3000, True), (30, False)])
def test_a_json_body_of_many_short_strings_is_inspected_in_a_worker_thread(
    strings: int, off_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each string of a JSON body that no dialect reads is scanned with up to 256 characters of what its
    field carried before: a body of many short strings costs what one many times its size does, so it is
    inspected off the event loop as a large one is (the same code, so the same verdict: a key among the
    strings is redacted). A body of few strings stays on the loop."""
    addon = inspect_addon("enforce", "redaction: {requests: true}")
    numbers = [f"{number:05d}" for number in range(strings)]
    flow = chat_flow({"model": "gpt-4o", "messages": [], "metadata": [*numbers, f"key {AWS_KEY}"]})
    assert flow.request.content is not None and len(flow.request.content) < 64 << 10
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    inspected_in: list[threading.Thread] = []
    inspect_request = addon.inspect_request

    def inspect_and_note_the_thread(inspected: http.HTTPFlow) -> None:
        inspected_in.append(threading.current_thread())
        inspect_request(inspected)

    monkeypatch.setattr(addon, "inspect_request", inspect_and_note_the_thread)
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
    assert (inspected_in != [threading.main_thread()]) is off_loop
    assert json.loads(flow.request.content)["metadata"][:-1] == numbers
    assert flow.request.text is not None and AWS_KEY not in flow.request.text


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_large_bodies_are_inspected_one_at_a_time_in_a_thread_of_their_own(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inspection holds the GIL: each thread inspecting at once lengthens the event loop's every wait
    for it, so however many large bodies arrive together, one is inspected at a time, beside the loop,
    in enforce mode and alongside an observed request alike. A small body's stays where it was."""
    addon = inspect_addon(mode)
    running: list[str] = []
    overlapped: list[bool] = []
    seen_in: set[str] = set()
    lock = threading.Lock()

    def note_while_inspecting(inspect: Callable[..., None]) -> Callable[..., None]:
        def noting(*arguments: Any) -> None:
            name = threading.current_thread().name
            with lock:
                running.append(name)
                overlapped.append(len(running) > 1)
                seen_in.add(name.rsplit("_", 1)[0])
            time.sleep(0.05)  # long enough for a second thread, were there one, to start meanwhile
            try:
                inspect(*arguments)
            finally:
                with lock:
                    running.remove(name)

        return noting

    monkeypatch.setattr(addon, "inspect_request", note_while_inspecting(addon.inspect_request))
    monkeypatch.setattr(addon, "_inspect_concurrently", note_while_inspecting(addon._inspect_concurrently))

    def flow_of(prompt: str) -> http.HTTPFlow:
        flow = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
        flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
        return flow

    async def send(flows: list[http.HTTPFlow]) -> None:
        await asyncio.gather(*(addon.request(flow) for flow in flows))
        await asyncio.gather(*(request_inspected(flow) for flow in flows))

    large = [flow_of(f"{number} " + "the quarterly figures, " * 12_000) for number in range(4)]
    try:
        with taddons.context(addon):
            asyncio.run(send(large))
            assert len(overlapped) == 4 and not any(overlapped)
            assert seen_in == {"egressguard-inspect-large"}
            seen_in.clear()
            asyncio.run(send([flow_of("hello")]))
    finally:
        addon.done()
    assert seen_in == ({"MainThread"} if mode == "enforce" else {"egressguard-inspect"})


def test_an_agent_whose_body_was_slow_to_inspect_on_the_loop_is_inspected_off_it_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Some texts are slow to read at any size: once one of an agent's bodies has held the event loop,
    that agent's next ones are inspected in a thread of their own, and every other agent's stay on the
    loop."""
    addon = inspect_addon("enforce")
    inspected_in: list[str] = []
    inspect_request = addon.inspect_request

    def inspect_noting_the_thread(flow: http.HTTPFlow) -> None:
        inspected_in.append(threading.current_thread().name.rsplit("_", 1)[0])
        if flow.metadata.get("slow"):
            started = time.thread_time()
            while time.thread_time() - started < SLOW_ON_LOOP_SECONDS:
                pass
        inspect_request(flow)

    monkeypatch.setattr(addon, "inspect_request", inspect_noting_the_thread)

    def flow_from(agent: str, slow: bool = False) -> http.HTTPFlow:
        flow = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
        flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id=agent, role="r"))
        flow.metadata["slow"] = slow
        return flow

    try:
        with taddons.context(addon):
            # The first request loads the detectors, as the proxy does when it starts.
            asyncio.run(addon.request(flow_from("first")))
            inspected_in.clear()
            for flow in (
                flow_from("quick"),
                flow_from("slow", slow=True),
                flow_from("slow"),
                flow_from("quick"),
            ):
                asyncio.run(addon.request(flow))
    finally:
        addon.done()
    assert inspected_in == ["MainThread", "MainThread", "egressguard-inspect-slow", "MainThread"]


def test_an_agent_is_slow_for_a_while_and_the_marks_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    agents = SlowAgents(clock=lambda: now[0])
    agents.took("quick", SLOW_ON_LOOP_SECONDS / 2)
    agents.took("slow", SLOW_ON_LOOP_SECONDS)
    assert not agents.slow("quick") and agents.slow("slow")
    now[0] = SLOW_AGENT_SECONDS - 1
    assert agents.slow("slow")
    now[0] = SLOW_AGENT_SECONDS
    assert not agents.slow("slow")
    monkeypatch.setattr("addons.inspect.SLOW_AGENTS_KEPT", 3)
    for name in ("a", "b", "c", "d"):
        agents.took(name, 1.0)
        now[0] += 1
    # The expired mark went first, then the earliest one still in force.
    assert [agents.slow(name) for name in ("slow", "a", "b", "c", "d")] == [False, False, True, True, True]


def test_a_small_compressed_body_is_inspected_off_the_loop_without_waiting_for_large_ones() -> None:
    """A compressed body may decode to the inspection cap, so it leaves the event loop; most answers
    come compressed, so it is inspected beside observed requests, not behind large bodies."""
    addon = inspect_addon("enforce")
    small = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    small.request.headers["content-encoding"] = "gzip"
    small.request.raw_content = gzip.compress(small.request.raw_content or b"")
    large = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": "x " * (200 << 10)}]})
    plain = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    try:
        threads = [addon._threads_for(flow.request) for flow in (small, large, plain)]
        assert threads == [addon._alongside, addon._large, None]
    finally:
        addon.done()


def test_a_reloaded_policy_decides_whether_requests_are_inspected_alongside() -> None:
    """Under a policy that only observes, a request leaves while its inspection runs alongside; once a
    reload enforces a threat, the next request is inspected before it leaves, and back again."""
    addon = inspect_addon("observe")
    observing = addon.runtime.policy
    enforcing = inspect_addon("enforce").runtime.policy

    def inspected_alongside() -> bool:
        flow = chat_flow({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
        flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
        asyncio.run(addon.request(flow))
        alongside = PENDING_KEY in flow.metadata
        asyncio.run(request_inspected(flow))
        return alongside

    try:
        assert [inspected_alongside() for _ in range(2)] == [True, True]
        addon.runtime.policy_or_none = enforcing
        assert [inspected_alongside() for _ in range(2)] == [False, False]
        addon.runtime.policy_or_none = observing
        assert inspected_alongside()
    finally:
        addon.done()


def nested_call(depth: int) -> str:
    """A Realtime event giving a destructive call whole, beside a value nested ``depth`` deep."""
    call = {"type": "response.function_call_arguments.done", "name": "delete_customer", "arguments": "{}"}
    padding = '{"a": ' * (depth - 1) + '"x"' + "}" * (depth - 1)
    return json.dumps(call)[:-1] + f', "call_id": "call_1", "padding": {padding}}}'


@pytest.mark.parametrize("from_client", [False, True])
@pytest.mark.parametrize("depth", [MAX_MESSAGE_DEPTH + 1, 800, 100_000])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_message_nested_past_the_limit_is_refused_unread_where_enforced(
    mode: str, depth: int, from_client: bool
) -> None:
    """Enforced, it is not delivered, the connection closes (1008) and the refusal is recorded, however
    deep it goes (past what Python's JSON reader reads too, where its call went unread); observed, it is
    delivered as it came, read as text alone, on the record. From either side."""
    enforcing = mode == "enforce"
    addon, flow = inspected_websocket(mode)
    with taddons.context(addon, Proxyserver()):
        message = (agent_says if from_client else server_says)(flow, nested_call(depth))
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    assert message.dropped is enforcing
    assert (CLOSING.get(flow.client_conn), CLOSING.get(flow.server_conn)) == (
        (POLICY_VIOLATION, POLICY_VIOLATION) if enforcing else (None, None)
    )
    assert [(f.rule, f.where, f.enforced) for f in turn.findings] == [
        (TOO_DEEP_RULE, "websocket[3]", enforcing)
    ]
    assert turn.decision == ("blocked" if enforcing else "allowed")


def test_a_message_nested_to_the_limit_is_read() -> None:
    """Its destructive call is found and withheld as in any message (the connection closed for it), with
    no finding of its depth."""
    addon, flow = inspected_websocket("enforce")
    with taddons.context(addon, Proxyserver()):
        message = server_says(flow, nested_call(MAX_MESSAGE_DEPTH))
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    assert message.dropped and "tool_abuse" in CLOSE_REASONS[flow.client_conn]
    assert {f.threat for f in turn.findings if f.enforced} == {"tool_abuse"}
    assert TOO_DEEP_RULE not in {f.rule for f in turn.findings}


def agent_says(flow: http.HTTPFlow, text: str) -> WebSocketMessage:
    assert flow.websocket is not None
    message = WebSocketMessage(Opcode.TEXT, True, text.encode())
    flow.websocket.messages.append(message)
    return message
