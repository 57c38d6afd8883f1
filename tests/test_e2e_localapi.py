"""End to end: the local API at egressguard.internal, reached through a real proxy, and the guard module
that wraps a locally run turn with it."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from proxy.commands.cli import main
from proxy.inprocess.guard import GuardUnavailable, Refused, guard
from tests.harness import CLIENT_TIMEOUT_S, Proxy, free_port
from tests.test_e2e_alerts import alerts_for, alerts_yaml, wait_until
from tests.webhook_receiver import Receiver

SECRET = "AKIAQWERTY234567ABCD"  # made up, in the AWS access key id format


@pytest.fixture
def enforcing(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    proxy = start_proxy(mode="enforce")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return proxy


def reported(proxy: Proxy) -> list[dict[str, Any]]:
    return [record for record in proxy.wait_for_records(1) if record.get("reported_by") == "agent"]


def test_a_refused_shell_tool_never_runs_and_the_turn_is_chained_as_reported_by_the_agent(
    enforcing: Proxy,
) -> None:
    ran: list[str] = []
    with (
        pytest.raises(Refused, match="tool 'shell'") as refused,
        guard(user_id="u-42", purpose="customer_support", consent_id="c-1") as sec,
    ):
        assert sec.inspect_input("Please tidy up the server") == "Please tidy up the server"
        sec.inspect_tool("shell", {"command": "rm -rf /"})
        ran.append("rm -rf /")
    assert ran == [], "the tool ran although the policy refused it"
    # What the command runs names the refusal, more precisely than the tool's name would.
    assert any(finding["rule"] == "cmd-recursive-delete-broad" for finding in refused.value.findings)
    [record] = reported(enforcing)
    assert record["agent_id"] == "support-bot" and record["user_id"] == "u-42"
    assert record["purpose"] == "customer_support" and record["tools"] == ["shell"]
    assert record["decision"] == "blocked" and record["egress_host"] is None
    assert "cmd-recursive-delete-broad" in {finding["rule"] for finding in record["findings"]}
    assert record["input_sha256"] != record["output_sha256"]
    assert "rm -rf" not in json.dumps(enforcing.audit_records())
    assert main(["audit", "verify", str(enforcing.data_dir / "audit")]) == 0


def test_a_harmless_tool_runs_and_a_secret_in_the_output_is_redacted(enforcing: Proxy) -> None:
    with guard(user_id="u-1", purpose="support", consent_id="c-1") as sec:
        sec.inspect_tool("search_docs", {"query": "refund policy"})
        answer = sec.inspect_output(f"Your key is {SECRET}.")
    assert SECRET not in answer and answer.startswith("Your key is ")
    [record] = reported(enforcing)
    assert record["decision"] == "redacted" and SECRET not in json.dumps(record)
    hosts = {record.get("egress_host") for record in enforcing.audit_records()}
    assert "egressguard.internal" not in hosts


def test_plain_http_and_tunnelled_requests_are_both_answered_by_egressguard(enforcing: Proxy) -> None:
    body = {"kind": "tool_call", "tool": "delete_customer", "arguments": {"id": 7}}
    trusted = ssl.create_default_context(cafile=str(enforcing.ca_cert))
    for scheme in ("http", "https"):
        with httpx.Client(proxy=enforcing.url(), verify=trusted, timeout=CLIENT_TIMEOUT_S) as client:
            answer = client.post(f"{scheme}://egressguard.internal/v1/inspect", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["decision"] == "blocked"
    assert enforcing.audit_records() == [], "an inspection is an answer, not an audited egress turn"


@pytest.mark.parametrize(
    "request_line",
    [
        b"POST http://egressguard.internal/v1/events HTTP/1.1\r\nHost: egressguard.internal\r\n",
        b"CONNECT egressguard.internal:443 HTTP/1.1\r\nHost: egressguard.internal:443\r\n",
        b"POST http://EgressGuard.Internal./v1/inspect HTTP/1.1\r\nHost: egressguard.internal\r\n",
    ],
)
def test_unauthenticated_requests_get_407(proxy: Proxy, request_line: bytes) -> None:
    status, _ = proxy.raw(request_line + b"Content-Length: 2\r\n\r\n{}")
    assert status == 407
    wrong = b"Proxy-Authorization: Basic " + base64.b64encode(b"support-bot:wrong") + b"\r\n"
    status, _ = proxy.raw(request_line + wrong + b"Content-Length: 2\r\n\r\n{}")
    assert status == 407


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"kind": "input", "text": "hello", "user": "x"}, "unknown field"),
        ({"tools": ["shell"], "text": "the raw prompt"}, "unknown field"),
        ({"findings": [{"threat": "made_up", "signal": "s", "severity": "high"}]}, "made_up"),
        ({"findings": [{"threat": "tool_abuse", "signal": "a\nb", "severity": "high"}]}, "one line"),
        ({"input_sha256": "not a hash"}, "sha256"),
        ({"agent_id": "someone-else"}, "another agent"),
        ({"latency_ms": -1}, "milliseconds"),
        ({"tools": ["x"] * 65}, "at most 64"),
        ({"user_id": "a b\tc"}, "label"),
    ],
)
def test_bad_events_get_a_clear_400_and_nothing_is_recorded(
    proxy: Proxy, document: dict[str, Any], error: str
) -> None:
    path = "inspect" if "kind" in document else "events"
    with httpx.Client(proxy=proxy.url(), timeout=CLIENT_TIMEOUT_S) as client:
        answer = client.post(f"http://egressguard.internal/v1/{path}", json=document)
        assert client.post("http://egressguard.internal/v1/events", content=b"[1]").status_code == 400
        too_big = client.post("http://egressguard.internal/v1/events", content=b" " * (64 * 1024 + 1))
    assert answer.status_code == 400 and error in answer.json()["error"]
    assert too_big.status_code == 413
    assert proxy.audit_records() == []


def test_fail_open_by_default_and_fail_closed_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://a:b@127.0.0.1:{free_port()}")
    with guard(purpose="support") as sec:
        assert sec.inspect_input("hello") == "hello"
        sec.inspect_tool("shell", {"command": "ls"})
    with pytest.raises(GuardUnavailable), guard(purpose="support", fail_closed=True) as sec:
        sec.inspect_input("hello")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with guard() as sec:
        assert sec.inspect_output("no proxy, nothing sent") == "no proxy, nothing sent"
    with pytest.raises(GuardUnavailable), guard(fail_closed=True):
        pass


def test_a_reported_turn_goes_through_the_alert_rules(
    start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()
    try:
        rule = """\
  rules:
    - id: local-tool-abuse
      match: {threat: tool_abuse, severity: critical}
      threshold: ">=1"
      severity: critical
      destinations: [secops]
"""
        proxy = start_proxy(mode="enforce", extra=alerts_yaml(receiver) + rule)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
        with pytest.raises(Refused), guard(user_id="u-9", purpose="ops", consent_id="c-9") as sec:
            sec.inspect_tool("shell", {"command": "rm -rf /"})
        delivered = wait_until(lambda: alerts_for(receiver, "local-tool-abuse"))
        assert delivered, f"no alert delivered; deliveries: {receiver.deliveries}"
        assert delivered[0]["agent_ids"] == ["support-bot"] and delivered[0]["user_ids"] == ["u-9"]
        assert all(b"rm -rf" not in delivery.body for delivery in receiver.deliveries)
    finally:
        receiver.close()
