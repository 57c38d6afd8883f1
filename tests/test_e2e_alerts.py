"""End to end: findings through a real proxy page a webhook, the written log verifies and answers queries,
and ``on_error: closed`` refuses agents while the log cannot be written."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.commands.cli import main
from tests.harness import AGENT, Proxy
from tests.upstream import FakeUpstream, Reply
from tests.webhook_receiver import Receiver

PROMPT = "Please summarise ticket 5523: the customer Odile Marchetti asks about invoice 77-0192."
SYNTHETIC_AWS_KEY = "AKIA" + "Q7ZT4WNB2XK5RM3P"  # shaped like an access key id, issued to nobody
REPLY_TEXT = "Ticket 5523 concerns a duplicated charge on invoice 77-0192; a refund is pending."


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook that answers its first delivery 500 and accepts the rest."""
    server = Receiver(statuses=[500])
    yield server
    server.close()


def alerts_yaml(receiver: Receiver) -> str:
    return f"""\
alerts:
  destinations:
    secops: {{type: webhook, url: "{receiver.url}"}}
"""


def wait_until(predicate: Any, timeout: float = 15.0) -> Any:
    """Poll until ``predicate()`` is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def agent_client(proxy: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> openai.OpenAI:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers={"X-User-Id": "u-7", "X-Session-Id": "s-7"},
    )


def ask(client: openai.OpenAI) -> str | None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    return completion.choices[0].message.content


def alerts_for(receiver: Receiver, rule: str) -> list[dict[str, Any]]:
    return [alert for alert in receiver.accepted() if alert.get("rule") == rule]


def test_leaked_secret_pages_the_webhook_after_a_failed_first_delivery(
    start_proxy: Any, upstream: FakeUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret in a completion pages the webhook within seconds, retried after a 500, and the payload
    holds neither the secret nor the prompt or completion text."""
    proxy = start_proxy(extra=alerts_yaml(receiver))
    upstream.reply = Reply(text=f"{REPLY_TEXT} Use the key {SYNTHETIC_AWS_KEY} for the refund bucket.")
    assert SYNTHETIC_AWS_KEY in (ask(agent_client(proxy, upstream, monkeypatch)) or "")  # observe mode

    delivered = wait_until(lambda: alerts_for(receiver, "critical-secret-leak"))
    assert delivered, f"no alert delivered; deliveries: {receiver.deliveries}\n{proxy.output()}"
    assert receiver.deliveries[0].status == 500
    (alert,) = delivered
    assert alert["agent_ids"] == [AGENT] and alert["user_ids"] == ["u-7"]
    assert "aws-access-key-id" in alert["finding_rules"] and alert["severity"] == "critical"
    for delivery in receiver.deliveries:
        payload = delivery.body.decode()
        assert SYNTHETIC_AWS_KEY not in payload and "Q7ZT4WNB2XK5RM3P" not in payload
        assert "Odile" not in payload and "77-0192" not in payload and "refund bucket" not in payload


def test_a_slack_alert_lists_an_agents_user_id_as_code_never_as_a_link_or_markup(
    start_proxy: Any, upstream: FakeUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user id an agent sends is its own choice: in the security team's channel it must not become a
    link (a URL), markup (`*`, `~`) or the end of a code span (a backtick)."""
    user = "https://evil.example/sso-reset?u=*admin*`~x~"
    proxy = start_proxy(extra=alerts_yaml(receiver).replace("type: webhook", "type: slack"))
    upstream.reply = Reply(text=f"{REPLY_TEXT} Use the key {SYNTHETIC_AWS_KEY} for the refund bucket.")
    client = agent_client(proxy, upstream, monkeypatch).with_options(default_headers={"X-User-Id": user})
    ask(client)
    delivered = wait_until(lambda: [d for d in receiver.deliveries if d.status == 200])
    assert delivered, f"no alert delivered; deliveries: {receiver.deliveries}\n{proxy.output()}"
    message = json.loads(delivered[0].body)
    fields = [field["text"] for block in message["blocks"] for field in block.get("fields", [])]
    assert "*Users*\n`https://evil.example/sso-reset?u=*admin*\u02cb~x~`" in fields
    assert not [text for text in fields if user in text]


def test_alert_action_freezes_the_user_for_their_next_request(
    start_proxy: Any, upstream: FakeUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule with `auto_actions: [freeze_user]` freezes the user behind a leak: where the leak's threat is
    enforced their next request is refused 403 in the OpenAI error shape, recorded under that threat, and
    never reaches the upstream."""
    rule = """\
  rules:
    - id: leak-freezes-user
      match: {threat: data_exfiltration, severity: critical}
      threshold: ">=1"
      severity: critical
      destinations: [secops]
      auto_actions: [freeze_user]
threats: {data_exfiltration: enforce}
"""
    proxy = start_proxy(extra=alerts_yaml(receiver) + rule)
    client = agent_client(proxy, upstream, monkeypatch)
    upstream.reply = Reply(text=f"The key is {SYNTHETIC_AWS_KEY}.")
    ask(client)
    assert wait_until(lambda: "alerts.action_applied" in proxy.output()), proxy.output()

    reached = len(upstream.received)
    with pytest.raises(openai.PermissionDeniedError) as frozen:
        ask(client)
    assert frozen.value.code == "egressguard_frozen"
    assert "user 'u-7' is frozen: alert leak-freezes-user" in frozen.value.message
    assert len(upstream.received) == reached
    refused = proxy.wait_for_records(2)[-1]
    assert refused["decision"] == "blocked"
    (freeze,) = [finding for finding in refused["findings"] if finding["rule"] == "repeat-offender-freeze"]
    assert (freeze["threat"], freeze["enforced"]) == ("data_exfiltration", True)


def test_proxy_written_log_verifies_and_tampering_is_located(
    start_proxy: Any,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`audit verify` passes the log the proxy wrote; an edited or a deleted record fails at its line."""
    proxy = start_proxy()
    client = agent_client(proxy, upstream, monkeypatch)
    for _ in range(3):
        ask(client)
    assert len(proxy.wait_for_records(3)) == 3
    proxy.stop()  # the final checkpoint is signed on shutdown
    audit = proxy.data_dir / "audit"
    capsys.readouterr()
    assert main(["audit", "verify", str(audit)]) == 0
    assert "intact" in capsys.readouterr().out

    edited = _copy(audit, proxy.workdir / "edited")
    path, lines = _lines(edited)
    # The second turn: checkpoints signed on time may sit between the turns.
    second = [number for number, line in enumerate(lines) if '"u-7"' in line][1]
    lines[second] = lines[second].replace('"u-7"', '"u-8"')
    path.write_text("".join(lines))
    assert main(["audit", "verify", str(edited)]) == 1
    assert f"{path}:{second + 1}:" in capsys.readouterr().out

    deleted = _copy(audit, proxy.workdir / "deleted")
    path, lines = _lines(deleted)
    del lines[1]
    path.write_text("".join(lines))
    assert main(["audit", "verify", str(deleted)]) == 1
    assert f"{path}:2:" in capsys.readouterr().out


def test_query_incidents_reports_the_proxy_finding(
    start_proxy: Any,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`query incidents --audit DIR` over the proxy's log reports the finding it recorded."""
    proxy = start_proxy()
    ask(agent_client(proxy, upstream, monkeypatch))
    assert proxy.wait_for_records(1)
    capsys.readouterr()
    assert main(["query", "incidents", "--audit", str(proxy.data_dir / "audit"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"threat": "lateral_movement", "severity": "low", "hits": 1} in [
        {key: row[key] for key in ("threat", "severity", "hits")} for row in rows
    ]


def test_closed_audit_refuses_agents_while_the_log_is_unwritable(
    start_proxy: Any, upstream: FakeUpstream, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With on_error closed, an unwritable audit directory turns agents away with 503 and pages on-call;
    once it is writable again, traffic flows and is recorded."""
    proxy = start_proxy(extra=alerts_yaml(receiver))
    audit = proxy.data_dir / "audit"
    proxy.policy_path.write_text(
        proxy.policy_path.read_text().replace(
            f"audit: {{path: {audit}}}", f"audit: {{path: {audit}, on_error: closed}}"
        )
    )
    proxy.restart()
    client = agent_client(proxy, upstream, monkeypatch)
    ask(client)
    assert proxy.wait_for_records(1)

    shutil.rmtree(audit)
    audit.write_text("a regular file where the audit directory was")  # unwritable even for root
    with pytest.raises(openai.InternalServerError) as withheld:
        ask(client)
    assert "egressguard: audit log unavailable" in str(withheld.value)
    reached = len(upstream.received)
    with pytest.raises(openai.InternalServerError) as refused:
        ask(client)
    assert "egressguard_audit_unavailable" in str(refused.value.body)
    assert len(upstream.received) == reached, "a refused request must not reach the upstream"
    assert wait_until(lambda: alerts_for(receiver, "audit-unavailable"))

    audit.unlink()
    audit.mkdir()
    with pytest.raises(openai.InternalServerError):
        ask(client)  # refused while the log was last known unwritable; its record proves it is back
    assert ask(client) is not None
    decisions = [(record["status"], record["decision"]) for record in proxy.wait_for_records(2)]
    assert decisions[0][0] == 503 and decisions[1][0] == 200


def _copy(audit: Path, target: Path) -> Path:
    shutil.copytree(audit, target)
    return target


def _lines(directory: Path) -> tuple[Path, list[str]]:
    (path,) = directory.glob("audit-*.jsonl")
    return path, path.read_text().splitlines(keepends=True)
