"""A rule that runs out of time, end to end: an agent's request carries a long run of card-shaped numbers
that fail their checksum, which keeps the payment-card rule busy far past a 1 ms limit and the 20 ms of
its run again, through a real egressguard to the fake upstream. Enforce mode refuses the request (what
the rule looks for in it is not known), whether the run is in the prompt or in a field no dialect reads;
observe mode lets it pass and records that it would have. No record holds the text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from proxy.inspection import SCAN_TIMEOUT_RULE
from tests.harness import Proxy
from tests.test_evasion import HEADERS
from tests.upstream import FakeUpstream, Reply

NEAR_CARDS = "4111 1111 1111 1112 " * 20_000
"""400 KB the payment-card rule reads whole in about half a second (no card: the checksum fails)."""
TIME_LIMIT = "inspection: {rule_time_limit: 1ms}\n"


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
    assert {finding["threat"] for finding in findings} == {"data_exfiltration"}
    assert "payment-card" in {finding["extra"]["rule"] for finding in findings}


@pytest.mark.parametrize("send", SENDS)
def test_observe_mode_passes_it_and_records_what_enforce_mode_would_do(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, send: str
) -> None:
    proxy = start_proxy(mode="observe", extra=TIME_LIMIT)
    SENDS[send](client_through(proxy, upstream, monkeypatch))
    assert NEAR_CARDS.encode() in upstream.received[-1].body
    _, findings = timeout_findings(proxy)
    assert findings and not any(finding["enforced"] for finding in findings), findings
    assert "payment-card" in {finding["extra"]["rule"] for finding in findings}


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
