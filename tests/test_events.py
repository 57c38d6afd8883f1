"""The audit event: built from a turn, and scrubbed of secrets hiding in agent-controlled text."""

from __future__ import annotations

from proxy.events import scrub, turn_event
from proxy.model import Action, Finding, Mode, Severity, Threat
from proxy.rulepack import Scanner, load_packaged_packs
from proxy.turn import Turn, TurnContext

SLACK_HOOK = "https://hooks.slack.com/services/T01234567/B01234567/abcdefghijklmnopqrstuvwx"
TOKEN = "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"


def scanner() -> Scanner:
    return Scanner([pack for pack in load_packaged_packs() if pack.name in ("secrets", "pii")])


def test_secrets_in_agent_controlled_fields_are_scrubbed() -> None:
    """A token in a header-borne id, a host label or a finding's signal never reaches the event."""
    turn = Turn(
        TurnContext(agent_id="bot", role="r", purpose=f"forward to {SLACK_HOOK}"),
        egress_host=f"{TOKEN}.attacker.example",
    )
    turn.add(
        Finding(
            Threat.DATA_EXFILTRATION,
            "link",
            f"image URL to host {TOKEN}.attacker.example",
            Severity.HIGH,
            Action.REDACT,
            "choices[0].message.content",
        )
    )
    event = turn_event(
        turn,
        mode=Mode.ENFORCE,
        method="POST",
        path="/v1/chat/completions",
        status=200,
        input_sha256="0" * 64,
        output_sha256=None,
    )
    clean = scrub(event, scanner(), b"k" * 32)
    text = repr(clean)
    assert TOKEN not in text and "abcdefghijklmnopqrstuvwx" not in text
    assert clean["egress_host"].startswith("[REDACTED:") and clean["input_sha256"] == "0" * 64
    assert clean["findings"][0]["rule"] == "link"


def test_clean_event_is_returned_as_is() -> None:
    """An event with nothing to scrub comes back unchanged."""
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id="u-1"), egress_host="api.openai.com")
    event = turn_event(
        turn,
        mode=Mode.OBSERVE,
        method="POST",
        path="/v1/responses",
        status=200,
        input_sha256=None,
        output_sha256=None,
    )
    assert scrub(event, scanner(), b"k" * 32) is event
