"""How an alert is put to each kind of destination: Slack, PagerDuty, a generic webhook, stdout,
syslog or a file. Payload builders are pure; ``deliver`` does the I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import syslog
from typing import Any

import httpx

from proxy.alerts.rules import DestinationConfig

SIGNATURE_HEADER = "X-Egressguard-Signature"
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
SYSLOG_PRIORITY = {
    "critical": syslog.LOG_CRIT,
    "high": syslog.LOG_ERR,
    "medium": syslog.LOG_WARNING,
    "low": syslog.LOG_INFO,
}
SLACK_ICON = {"critical": ":rotating_light:", "high": ":warning:", "medium": ":large_orange_diamond:"}


class DeliveryError(Exception):
    """A failed delivery; ``retry`` says whether trying again later can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def summary_line(alert: dict[str, Any]) -> str:
    who = ", ".join(alert["agent_ids"]) or "-"
    counted = f"(agents: {who}, count: {alert['count']})"
    return f"[{alert['severity']}] {alert['rule']}: {alert['description']} {counted}"


SLACK_HEADER_LIMIT = 150
SLACK_FIELD_LIMIT = 2000
SLACK_SECTION_LIMIT = 3000
"""Slack's lengths for a header's text, a section field's and a section's (and a context element's,
here kept to a field's): a longer one gets the whole message refused with a 400, and an alert refused
with a 4xx is set aside, never retried."""
_CUT_ENTITY = re.compile(r"&[a-z]{0,3}$")


def _slack_escape(text: str, limit: int = SLACK_FIELD_LIMIT) -> str:
    """``text`` escaped for mrkdwn and cut to ``limit`` characters (an escape the cut split is dropped)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(escaped) <= limit:
        return escaped
    return _CUT_ENTITY.sub("", escaped[: limit - 1]) + "…"


CODE_BACKTICK = "\u02cb"
"""What stands for a backtick inside Slack code, which has no escape for one."""


def _slack_code(text: str, limit: int = SLACK_FIELD_LIMIT) -> str:
    """``text`` as inline code: agents chose much of what an alert lists (user ids, hosts, tool names),
    and in mrkdwn Slack makes a link of a URL among them (``https://evil.example/sso``) and bold or struck
    text of ``*``, ``~``; code is shown as it is. A backtick of theirs, which would end the code, is
    shown as the grave accent letter."""
    return f"`{_slack_escape(text.replace('`', CODE_BACKTICK), limit - 2)}`"


def slack_payload(alert: dict[str, Any]) -> dict[str, Any]:
    def listed(values: list[str], limit: int = SLACK_FIELD_LIMIT - 20) -> str:
        return (
            _slack_code(", ".join(values[:10]) + (" …" if len(values) > 10 else ""), limit) if values else "-"
        )

    window = f" in {alert['window_seconds'] // 60} min" if alert["window_seconds"] else ""
    fields = [
        f"*Severity*\n{alert['severity']}",
        f"*Count*\n{alert['count']}{window}",
        f"*Agents*\n{listed(alert['agent_ids'])}",
        f"*Users*\n{listed(alert['user_ids'])}",
    ]
    if alert["threats"]:
        fields.append(f"*Threats*\n{listed(alert['threats'])}")
    if alert["finding_rules"]:
        fields.append(f"*Detections*\n{listed(alert['finding_rules'])}")
    context = f"alert {alert['alert_id']} · {alert['ts']}"
    if alert["event_ids"]:
        context += f" · events: {listed(alert['event_ids'], SLACK_FIELD_LIMIT // 2)}"
    if alert["suppressed"]:
        context += f" · {alert['suppressed']} similar alerts grouped into this one"
    header = f"{SLACK_ICON.get(alert['severity'], '')} {alert['rule']}"
    if len(header) > SLACK_HEADER_LIMIT:
        header = header[: SLACK_HEADER_LIMIT - 1] + "…"
    description = _slack_escape(alert["description"], SLACK_SECTION_LIMIT)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {"type": "section", "text": {"type": "mrkdwn", "text": description}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    if alert["rows"]:
        rows = _slack_escape(
            "\n".join(json.dumps(row, default=str) for row in alert["rows"][:10]).replace("`", CODE_BACKTICK),
            SLACK_SECTION_LIMIT - 6,
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{rows}```"}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _slack_escape(summary_line(alert)), "blocks": blocks}


def pagerduty_payload(alert: dict[str, Any], routing_key: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert["dedup_key"],
        "payload": {
            "summary": summary_line(alert)[:1024],
            "source": "egressguard",
            "severity": PAGERDUTY_SEVERITY.get(alert["severity"], "warning"),
            "timestamp": alert["ts"],
            "component": ",".join(alert["agent_ids"][:5]) or "egressguard",
            "group": alert["rule"],
            "class": ",".join(alert["threats"]) or alert["rule"],
            "custom_details": alert,
        },
    }


def sign_body(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def http_request(destination: DestinationConfig, alert: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the POST that delivers ``alert`` to an HTTP destination."""
    if destination.type == "slack":
        document: dict[str, Any] = slack_payload(alert)
    elif destination.type == "pagerduty":
        document = pagerduty_payload(alert, destination.routing_key or "")
    elif destination.action is not None:
        document = {"action": destination.action, "alert": alert}
    else:
        document = alert
    body = json.dumps(document, separators=(",", ":"), default=str).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "egressguard-alerts",
        **dict(destination.headers),
    }
    if destination.secret is not None:
        headers[SIGNATURE_HEADER] = sign_body(destination.secret, body)
    assert destination.url is not None
    return destination.url, body, headers


def deliver(destination: DestinationConfig, alert: dict[str, Any], client: httpx.Client) -> None:
    """Send one alert; raise ``DeliveryError`` saying whether a retry can help."""
    line = json.dumps(alert, separators=(",", ":"), default=str)
    try:
        if destination.type == "stdout":
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        elif destination.type == "syslog":
            syslog.syslog(SYSLOG_PRIORITY.get(alert["severity"], syslog.LOG_WARNING), f"egressguard {line}")
        elif destination.type == "file":
            assert destination.path is not None
            destination.path.parent.mkdir(parents=True, exist_ok=True)
            with destination.path.open("a", encoding="utf-8") as sink:
                sink.write(line + "\n")
        else:
            url, body, headers = http_request(destination, alert)
            response = client.post(url, content=body, headers=headers)
            if response.status_code == 429 or response.status_code >= 500:
                raise DeliveryError(f"{destination.name}: HTTP {response.status_code}", retry=True)
            if response.status_code >= 400:
                raise DeliveryError(f"{destination.name}: HTTP {response.status_code}", retry=False)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{destination.name}: {type(exc).__name__}", retry=True) from exc
    except OSError as exc:
        raise DeliveryError(f"{destination.name}: {exc}", retry=True) from exc
