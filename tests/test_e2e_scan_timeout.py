"""A rule that runs out of time, end to end: an agent's request carries a long run of card-shaped numbers
that fail their checksum, which keeps the payment-card rule busy far past a 1 ms limit and the 20 ms of
its run again, through a real egressguard to the fake upstream. Enforce mode refuses the request (what
the rule looks for in it is not known), whether the run is in the prompt or in a field no dialect reads;
observe mode lets it pass and records that it would have. No record holds the text."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import websockets.sync.client
import websockets.sync.server

from proxy.commands.localca import UpstreamPKI
from proxy.scanning.rulepack import SCAN_TIMEOUT_RULE
from tests.harness import Proxy
from tests.test_evasion import HEADERS
from tests.upstream import FakeUpstream, Reply
from tests.wsupstream import AgentConnection, WebSocketUpstream

NEAR_CARDS = "4111 1111 1111 1112 " * 20_000
"""400 KB the payment-card rule reads whole in about half a second (no card: the checksum fails)."""
TIME_LIMIT = "inspection: {rule_time_limit: 1ms}\n"
CARD_RULE_OUT = {"payment-card", "pii-unread"}
"""The payment-card rule out of time on a run, or its pack left unread where the budget was spent before
the secret and PII scan's turn (by the injection detector's reading of a prompt, or of earlier texts)."""


def prompt(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": NEAR_CARDS}])


def unmodelled_field(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "file the attached numbers"}],
        extra_body={"attachment": {"numbers": NEAR_CARDS}},
    )


SENDS: dict[str, Callable[[openai.OpenAI], None]] = {"prompt": prompt, "unmodelled field": unmodelled_field}


def client_through(proxy: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> openai.OpenAI:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS, timeout=60
    )


def timeout_findings(proxy: Proxy) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    count = len([record for record in proxy.audit_records() if record.get("type") == "agent.turn"])
    record = proxy.wait_for_records(max(count, 1))[-1]
    assert "4111 1111" not in json.dumps(record)
    return record, [finding for finding in record["findings"] if finding["rule"] == SCAN_TIMEOUT_RULE]


@pytest.mark.parametrize("send", SENDS)
def test_enforce_mode_refuses_a_request_a_rule_ran_out_of_time_on(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, send: str
) -> None:
    proxy = start_proxy(mode="enforce", extra=TIME_LIMIT)
    with pytest.raises(openai.PermissionDeniedError):
        SENDS[send](client_through(proxy, upstream, monkeypatch))
    assert upstream.received == []
    record, findings = timeout_findings(proxy)
    assert record["decision"] == "blocked"
    assert findings and all(finding["enforced"] for finding in findings), findings
    # The injection detector, whose budget the rule spent, may have read none of a prompt.
    threats = {finding["extra"]["rule"]: finding["threat"] for finding in findings}
    assert threats.pop("injection-unread", "prompt_injection") == "prompt_injection"
    assert set(threats.values()) == {"data_exfiltration"}
    assert CARD_RULE_OUT & threats.keys()


@pytest.mark.parametrize("send", SENDS)
def test_observe_mode_passes_it_and_records_what_enforce_mode_would_do(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, send: str
) -> None:
    proxy = start_proxy(mode="observe", extra=TIME_LIMIT)
    SENDS[send](client_through(proxy, upstream, monkeypatch))
    assert NEAR_CARDS.encode() in upstream.received[-1].body
    _, findings = timeout_findings(proxy)
    assert findings and not any(finding["enforced"] for finding in findings), findings
    assert CARD_RULE_OUT & {finding["extra"]["rule"] for finding in findings}


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_answer_a_rule_ran_out_of_time_on_is_refused_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The model's JSON answer carries the run: enforce mode gives the agent a 502 in its API's shape
    instead, observe mode hands the answer on; both record the finding, enforced only where it was."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    upstream.reply = Reply(text=NEAR_CARDS)
    client = client_through(proxy, upstream, monkeypatch)
    if mode == "enforce":
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "list them"}]
            )
    else:
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "list them"}]
        )
        assert answer.choices[0].message.content == NEAR_CARDS
    record, findings = timeout_findings(proxy)
    assert findings and all(finding["enforced"] is (mode == "enforce") for finding in findings), findings
    assert (record["decision"] == "blocked") is (mode == "enforce")


def chunk_event(delta: dict[str, Any], **fields: Any) -> bytes:
    chunk = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    chunk |= {"choices": [{"index": 0, "delta": delta, "finish_reason": None}], **fields}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


CARRIED_STREAM = [
    chunk_event({"role": "assistant", "content": "Here they are."}),
    chunk_event({"content": " The numbers"}, x_attachment=NEAR_CARDS),
    chunk_event({"content": " follow."}),
    b"data: [DONE]\n\n",
]
"""A stream whose second event carries the run in a field no dialect reads (every other string of an
event is read by the residual scan): the payment-card rule runs out of time there, twice."""


def streamed_text(client: openai.OpenAI) -> str:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "list them"}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_enforce_mode_cuts_a_stream_where_a_rule_ran_out_of_time(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the event a rule ran out of time on, nor of what follows it, is sent, and the
    connection is closed before the stream's end, as for any stream cut short; the record says the rule
    ran out of time, enforced, and the turn blocked."""
    proxy = start_proxy(mode="enforce", extra=TIME_LIMIT)
    upstream.reply = Reply(events=CARRIED_STREAM)
    client = client_through(proxy, upstream, monkeypatch)
    received: list[str] = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "list them"}], stream=True
        )
        received += (chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert " The numbers" not in received and " follow." not in received
    record, findings = timeout_findings(proxy)
    assert findings and all(finding["enforced"] for finding in findings), findings
    assert "payment-card" in {finding["extra"]["rule"] for finding in findings}
    assert record["decision"] == "blocked"


def test_observe_mode_passes_such_a_stream_whole_and_records_the_timeout(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observe mode changes nothing of the stream; the finding says what enforce mode would have done."""
    proxy = start_proxy(mode="observe", extra=TIME_LIMIT)
    upstream.reply = Reply(events=CARRIED_STREAM)
    assert streamed_text(client_through(proxy, upstream, monkeypatch)) == "Here they are. The numbers follow."
    record, findings = timeout_findings(proxy)
    assert findings and not any(finding["enforced"] for finding in findings), findings
    assert "payment-card" in {finding["extra"]["rule"] for finding in findings}
    assert record["decision"] != "blocked"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_streamed_text_a_rule_ran_out_of_time_on_only_whole_is_recorded_as_not_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Streamed as text, the run is read by the stream redactor window by window, each in about the
    limit; the rule runs out of time on the whole text read when the stream has ended, which is recorded
    and, the stream being sent, not claimed as enforced. Where a machine too loaded runs the windows past
    the limit too and enforce mode cuts the stream, the record says that instead: never one without the
    other."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    upstream.reply = Reply(text=NEAR_CARDS, piece_size=4_000)
    try:
        received: str | None = streamed_text(client_through(proxy, upstream, monkeypatch))
    except (openai.APIError, httpx.HTTPError):
        received = None
    record, findings = timeout_findings(proxy)
    assert findings
    if received is None:
        assert mode == "enforce" and record["decision"] == "blocked"
        assert any(finding["enforced"] for finding in findings), findings
    else:
        assert received == NEAR_CARDS and record["decision"] != "blocked"
        assert not any(finding["enforced"] for finding in findings), findings


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_responses_api_answer_a_rule_ran_out_of_time_on_is_refused_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The Responses API's JSON answer carries the run: a 502 in enforce mode, handed on in observe."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    upstream.reply = Reply(text=NEAR_CARDS)
    client = client_through(proxy, upstream, monkeypatch)
    if mode == "enforce":
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="gpt-4o", input="list them")
    else:
        assert client.responses.create(model="gpt-4o", input="list them").output_text == NEAR_CARDS
    record, findings = timeout_findings(proxy)
    assert findings and all(finding["enforced"] is (mode == "enforce") for finding in findings), findings
    assert (record["decision"] == "blocked") is (mode == "enforce")


class Relay(WebSocketUpstream):
    """Sends each connection the run and then ``done``, and keeps what the client sends it."""

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        connection.send(json.dumps({"delta": NEAR_CARDS[:100_000]}))
        connection.send("done")
        with contextlib.suppress(websockets.exceptions.ConnectionClosed, TimeoutError):
            while True:
                self.received.append(connection.recv(timeout=5))


@pytest.fixture
def relay(upstream_pki: UpstreamPKI) -> Iterator[Relay]:
    server = Relay(upstream_pki)
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_websocket_message_a_rule_ran_out_of_time_on_is_dropped_where_enforced(
    start_proxy: Callable[..., Proxy], relay: Relay, mode: str
) -> None:
    """Either way: enforce mode forwards neither the server's message nor the agent's, and the next
    message of each still passes; observe mode forwards both. Each message has a budget of its own."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with websockets.sync.client.connect(
        f"wss://localhost:{relay.port}/v1/realtime",
        proxy=proxy.url(),
        ssl=context,
        additional_headers=HEADERS,
        open_timeout=10,
        create_connection=AgentConnection,
        close_timeout=2,
        max_size=None,
    ) as connection:
        first = connection.recv(timeout=10)
        if mode == "observe":
            assert NEAR_CARDS[:1000] in str(first)
        else:
            assert json.loads(first)["error"]["code"] == "egressguard_blocked"
        assert connection.recv(timeout=10) == "done"
        connection.send(NEAR_CARDS[:100_000])
        connection.send("bye")
        deadline = time.monotonic() + 10
        while "bye" not in relay.received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert relay.received[-1] == "bye"
    assert (NEAR_CARDS[:100_000] in relay.received) is (mode == "observe")
    record = proxy.wait_for_records(1)[-1]
    assert "4111 1111" not in json.dumps(record)
    findings = [finding for finding in record["findings"] if finding["rule"] == SCAN_TIMEOUT_RULE]
    assert {"websocket[0]", "websocket[2]"} <= {finding["where"] for finding in findings}, findings
    assert all(finding["enforced"] is (mode == "enforce") for finding in findings), findings
    assert (record["decision"] == "blocked") is (mode == "enforce")


def test_the_other_findings_of_an_answer_refused_whole_are_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer refused for a rule that ran out of time carried a key too: none of it reached the agent,
    so the key's finding is enforced as well, the turn blocked. (The key is in the answer's text, read
    first; the run in a field no dialect reads, read after it: text that spends the budget before a
    rule's turn leaves that rule out of time too.)"""
    proxy = start_proxy(mode="enforce", extra=TIME_LIMIT)
    answer = {
        "id": "c-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "your key is AKIAQWERTY234567ABCD."},
                "finish_reason": "stop",
            }
        ],
        "x_attachment": NEAR_CARDS,
    }
    upstream.reply = Reply(body=json.dumps(answer).encode())
    client = client_through(proxy, upstream, monkeypatch)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "list them"}])
    record, findings = timeout_findings(proxy)
    assert findings and record["decision"] == "blocked"
    keys = [f for f in record["findings"] if f["rule"] == "aws-access-key-id"]
    assert keys and all(f["enforced"] for f in keys)


def send_refused_where_enforced(
    client: openai.OpenAI, upstream: FakeUpstream, messages: list[Any], mode: str, carried: str
) -> None:
    """Sends ``messages``: refused for a rule out of time in enforce mode, nothing reaching the upstream;
    passed on in observe mode, ``carried`` with them."""
    if mode == "enforce":
        with pytest.raises(openai.PermissionDeniedError, match=r"inspection\.scan_timeout"):
            client.chat.completions.create(model="gpt-4o", messages=messages)
        assert upstream.received == []
    else:
        client.chat.completions.create(model="gpt-4o", messages=messages)
        assert carried.encode() in upstream.received[-1].body


SHORT_RUN = "4111 1111 1111 1112 " * 50
"""1 KB the payment-card rule reads well within even a 1 ms limit."""


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_many_texts_each_read_within_the_limit_share_one_budget(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Three hundred messages, each read by the payment-card rule within its limit, cost the request's
    budget more than it holds (every run is charged, not only those that reach the limit): the later
    ones are not read at all, out of time, which enforce mode refuses (nothing reaches the upstream) and
    observe mode records, not enforced, passing the request on."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    client = client_through(proxy, upstream, monkeypatch)
    messages: list[Any] = [{"role": "user", "content": f"{index}: {SHORT_RUN}"} for index in range(300)]
    send_refused_where_enforced(client, upstream, messages, mode, SHORT_RUN)
    record, findings = timeout_findings(proxy)
    assert findings and all(finding["enforced"] is (mode == "enforce") for finding in findings), findings
    assert CARD_RULE_OUT & {finding["extra"]["rule"] for finding in findings}
    assert (record["decision"] == "blocked") is (mode == "enforce")


UNREAD_KEY = "deploy with AKIAQWERTY234567ABCD"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_prompt_after_the_budget_is_spent_is_recorded_unread_by_each_scanner(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The first message spends the request's budget; the second, which carries a key, is then read by
    no scanner: the record names, at its place, each one that left it unread (injection, secrets, PII),
    and no finding claims to have read it. Enforce mode refuses the request (nothing reaches the
    upstream); observe mode passes it on and records what enforce mode would have done."""
    proxy = start_proxy(mode=mode, extra=TIME_LIMIT)
    client = client_through(proxy, upstream, monkeypatch)
    messages: list[Any] = [{"role": "user", "content": NEAR_CARDS}, {"role": "user", "content": UNREAD_KEY}]
    send_refused_where_enforced(client, upstream, messages, mode, UNREAD_KEY)
    record, findings = timeout_findings(proxy)
    unread = {finding["extra"]["rule"] for finding in findings if finding["where"] == "messages[1].content"}
    assert {"injection-unread", "secrets-unread", "pii-unread"} <= unread, findings
    assert all(finding["enforced"] is (mode == "enforce") for finding in findings), findings
    assert not [finding for finding in record["findings"] if finding["rule"] == "aws-access-key-id"]
    assert (record["decision"] == "blocked") is (mode == "enforce")
