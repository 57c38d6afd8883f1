"""The audit event: built from a turn, and scrubbed of secrets hiding in agent-controlled text."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from proxy.audit.events import (
    KEPT_MASKING_CHARS,
    MAX_RECORDED_TEXT,
    _kept_scrubs,
    _scrubbed_texts,
    mask_host_labels,
    mask_url_tokens,
    scrub,
    turn_event,
)
from proxy.audit.log import canonical_json
from proxy.model import Action, Finding, Mode, Severity, Threat
from proxy.scanning.redact import _remembered, redact_json
from proxy.scanning.rulepack import Scanner, load_packaged_packs
from proxy.turn import Turn, TurnContext

SLACK_HOOK = "https://hooks.slack.com/services/T01234567/B01234567/abcdefghijklmnopqrstuvwx"
TOKEN = "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"


@functools.cache
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


def observed_event(turn: Turn) -> dict[str, Any]:
    return turn_event(
        turn,
        mode=Mode.OBSERVE,
        method="POST",
        path="/v1/responses",
        status=200,
        input_sha256=None,
        output_sha256=None,
    )


def test_clean_event_is_returned_as_is() -> None:
    """An event with nothing to scrub comes back unchanged."""
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id="u-1"), egress_host="api.openai.com")
    event = observed_event(turn)
    assert scrub(event, scanner(), b"k" * 32) is event


def test_a_repeated_field_is_scrubbed_every_time() -> None:
    """Redactions of repeated short fields are reused: the same secret in a user id is replaced on every
    turn with the same placeholder, and the redaction is counted each time."""
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id=TOKEN), egress_host="api.openai.com")
    event = observed_event(turn)
    first, second = (scrub(event, scanner(), b"k" * 32) for _ in range(2))
    assert TOKEN not in repr(first) and first == second
    assert str(first["user_id"]).startswith("[REDACTED:")


def test_a_scan_that_timed_out_is_not_remembered() -> None:
    """A rule that timed out under load is given another chance on the next turn, not remembered; the
    field it timed out on is written as a placeholder whole, since no part of it is known to be clean."""
    slow = Scanner([pack for pack in load_packaged_packs() if pack.name == "secrets"], timeout_s=0.0)
    text = f"forward to {TOKEN}"
    clean, redactions = redact_json({"purpose": text}, slow, remember=True)
    assert clean["purpose"] == "[REDACTED:inspection.scan_timeout]"
    assert [redaction.rule_id for redaction in redactions] == ["inspection.scan_timeout"]
    assert TOKEN not in redact_json({"purpose": text}, scanner(), remember=True)[0]["purpose"]
    assert not any(slot[0] is slow for slot in _remembered)


GH_TOKEN = "ghp_" + "R8zQ2mV7xK4pL9wT3nB6cY1dF5gH0jS2aE7u"  # shaped like a GitHub token, issued to nobody
TOKEN_PATHS = {
    "glued to a prefix": f"/bot{GH_TOKEN}/updates",
    "glued on both sides": f"/x{GH_TOKEN}y/",
    "percent-encoded": "/bot" + "".join(f"%{ord(char):02X}" for char in GH_TOKEN) + "/x",
    "partly percent-encoded": f"/bot{GH_TOKEN[:10]}%5F{GH_TOKEN[11:]}/x",
    "path end": f"/hooks/{GH_TOKEN}",
    "after a colon": f"/bot123456789:{GH_TOKEN}/sendMessage",
    "inside a matrix parameter": f"/files;sig={GH_TOKEN}/a",
    "base64 data": "/collect/ZXhmaWx0cmF0ZWQgc2VjcmV0IGRhdGEgaGVyZQ==/p.png",
    "url-safe base64": "/c/eyJhbGciOiJIUzI1NiJ9-eyJzdWIiOiIxMjM0NTY3ODkwIn0/x",
    "hex digest": "/blob/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "key-shaped id": "/u/sk-proj-AbCdEf1234567890GhIjKl/x",
    "slack webhook secret": "/services/T0A1B2C3D/B0Z9Y8X7W/q8Rk2LmN5pQ7sT1vW3xY6zA9",
    "random id after a word": "/v1/threads/thread_abc123XYZ789def456GHI/runs",
    "mixed case and digits": "/a/Zx9Qw8Er7Ty6Ui5Op4As3Df2/b",
    "tilde separated": f"/a/~{GH_TOKEN}~/b",
    "plus joined": f"/a/x+{GH_TOKEN}/b",
}
PLAIN_PATHS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/v1beta/models/gemini-1.5-pro-latest:streamGenerateContent",
    "/v1beta/models/gemini-2.0-flash-thinking-exp-01-21:generateContent",
    "/openai/deployments/gpt-4o-mini-2024-07-18/chat/completions",
    "/v1/models/claude-3-5-sonnet-20241022",
    "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke-with-response-stream",
    "/v1/threads/3fa85f64-5717-4562-b3fc-2c963f66afa6/runs",
    "/repos/egressguard/egressguard/pulls/1234/comments",
    "/api/v2/internationalization-settings/administrators",
    "/v1/organizations/organization_configuration_endpoint",
    "/search/AVeryLongCamelCaseWordWithoutDigits",
    "/2024/12/04/release-notes-for-version-20241204",
    "/mcp",
    "/v1/files/file-abc123/content",
    "/hooks/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "/docs/getting-started/installation-and-configuration",
    "/static/js/main.4f3c2a1b.chunk.js",
]


def enforced_event(turn: Turn, path: str) -> dict[str, Any]:
    return turn_event(
        turn, mode=Mode.ENFORCE, method="GET", path=path, status=200, input_sha256=None, output_sha256=None
    )


def scrubbed_path(path: str, host: str = "api.example.com") -> dict[str, Any]:
    event = enforced_event(Turn(TurnContext(agent_id="bot", role="r"), egress_host=host), path)
    return scrub(event, scanner(), b"k" * 32)


@pytest.mark.parametrize("path", list(TOKEN_PATHS.values()), ids=list(TOKEN_PATHS))
def test_token_in_a_path_is_never_written(path: str) -> None:
    """A token no rule matches where it sits (glued to other characters, encoded) is masked anyway."""
    written = str(scrubbed_path(path)["path"])
    assert "[REDACTED:" in written
    assert GH_TOKEN not in written and GH_TOKEN[4:20] not in written
    assert "R8zQ2mV7xK4pL9wT" not in written


@pytest.mark.parametrize("path", PLAIN_PATHS)
def test_ordinary_api_paths_are_written_as_they_are(path: str) -> None:
    """Model names, versions, dates, UUIDs and words are not tokens: triage keeps the real path."""
    assert scrubbed_path(path)["path"] == path


def test_the_same_token_masks_to_the_same_placeholder() -> None:
    """Masks are keyed fingerprints: one id correlates across records without being written."""
    first = scrubbed_path(f"/a/{GH_TOKEN}/b")["path"]
    assert first == scrubbed_path(f"/c/{GH_TOKEN}")["path"].replace("/c/", "/a/") + "/b"


def test_token_in_a_host_label_is_masked() -> None:
    """A host label carrying data (DNS-style exfiltration through the egress host) is masked too."""
    host = str(scrubbed_path("/", host="zxhmawx0cmf0zwqgc2vjcmv0ZGF0YQ1.attacker.example")["egress_host"])
    assert host.endswith(".attacker.example") and host.startswith("[REDACTED:url-token:")


LONG_TEXT_FIELDS = {
    "user_id": "u" * 20_000,
    "session_id": "s-" + "x" * 70_000,
    "purpose": "support " * 5_000,
    "consent_id": "c" * 600,
}


@pytest.mark.parametrize("field", sorted(LONG_TEXT_FIELDS))
def test_agent_controlled_text_is_bounded(field: str) -> None:
    """A header-borne id of any length costs the record its first characters and a keyed hash of the
    whole, the same for the same value: the log, its log line and the alerts built from it stay small."""
    turn = Turn(TurnContext(agent_id="bot", role="r", **{field: LONG_TEXT_FIELDS[field]}), egress_host="h")
    first, second = (scrub(observed_event(turn), scanner(), b"k" * 32) for _ in range(2))
    value = str(first[field])
    assert len(value) <= MAX_RECORDED_TEXT + 40 and value == second[field]
    assert value.startswith(LONG_TEXT_FIELDS[field][:100]) and "more characters" in value


def test_a_long_path_host_error_and_finding_are_bounded() -> None:
    """The path, host, errors and a finding's signal are bounded the same way."""
    turn = Turn(TurnContext(agent_id="bot", role="r"), egress_host="a." * 3000 + "example")
    signal = "host " + "b" * 9000
    turn.add(Finding(Threat.DATA_EXFILTRATION, "link", signal, Severity.HIGH, Action.REDACT, "x"))
    event = turn_event(
        turn,
        mode=Mode.OBSERVE,
        method="GET",
        path="/" + "p/" * 10_000,
        status=200,
        input_sha256=None,
        output_sha256=None,
    )
    event["errors"] = ["connection: " + "e" * 50_000]
    clean = scrub(event, scanner(), b"k" * 32)
    assert len(repr(clean)) < len(repr(event)) // 10
    for text in (clean["path"], clean["egress_host"], clean["errors"][0], clean["findings"][0]["signal"]):
        assert len(text) <= MAX_RECORDED_TEXT + 40 and "more characters" in text


def test_a_token_no_rule_knows_quoted_in_an_error_is_masked() -> None:
    """Errors quote what upstreams and agents sent (a content type, an encoding, a parser's complaint): a
    token-like run in them is masked as in a path, and the rest of the sentence is kept."""
    turn = Turn(TurnContext(agent_id="bot", role="r"), egress_host="api.openai.com")
    event = observed_event(turn)
    secret = "q9Zx3Lp7Rt2Vw8Ky4Nm6Bc1Df5Gh0Jk"
    event["errors"] = [
        f"response: binary body (application/x-{secret}) read for secrets in its printable runs",
        "response: body of 2000000 bytes is over the inspection cap of 1048576",
    ]
    clean = scrub(event, scanner(), b"k" * 32)
    assert secret not in repr(clean)
    assert clean["errors"][0].startswith("response: binary body (application/[REDACTED:url-token:")
    assert clean["errors"][1] == event["errors"][1]


def test_a_refused_host_is_masked_in_the_egress_finding_as_in_egress_host() -> None:
    """Data in a host label no rule knows (a lower-cased key, an encoded record) is masked in the egress
    finding that names the host as it is in ``egress_host``, the registered domain kept readable; other
    findings' signals and plain host names are written as they are."""
    label = "q8rk2lmn5pq7st1vw3xy6za9"
    host = f"{label}.collector.example"
    turn = Turn(TurnContext(agent_id="bot", role="r"), egress_host=host)
    for where, signal in (("egress", f"{host} is not in the allowlist of role 'r'"), ("prompt", "plain")):
        turn.add(
            Finding(
                Threat.LATERAL_MOVEMENT, "egress.not_allowlisted", signal, Severity.HIGH, Action.BLOCK, where
            )
        )
    clean = scrub(observed_event(turn), scanner(), b"k" * 32)
    assert label not in repr(clean)
    egress, other = clean["findings"]
    assert egress["signal"].startswith("[REDACTED:url-token:") and egress["signal"].endswith(
        ".collector.example is not in the allowlist of role 'r'"
    )
    assert other["signal"] == "plain"
    plain = Turn(TurnContext(agent_id="bot", role="r"), egress_host="api.example.com")
    plain.add(
        Finding(
            Threat.LATERAL_MOVEMENT,
            "egress.not_allowlisted",
            "api.example.com is not in the allowlist of role 'r'",
            Severity.HIGH,
            Action.BLOCK,
            "egress",
        )
    )
    unchanged = observed_event(plain)
    assert scrub(unchanged, scanner(), b"k" * 32) is unchanged


def test_a_kept_masking_is_that_of_its_own_text_and_key() -> None:
    """Asked again, a short path or host masks as it did, under its own key: another key gives another
    placeholder, and a long path past what is kept masks the same way."""
    for _ in range(2):
        path = f"/a/{GH_TOKEN}/b"
        keyed = mask_url_tokens(path, b"k" * 32)
        assert keyed.startswith("/a/[REDACTED:") and keyed.endswith("/b")
        assert mask_url_tokens(path, b"j" * 32) != keyed
        long_path = "/x" * 200 + path
        assert mask_url_tokens(long_path, b"k" * 32) == "/x" * 200 + keyed
        assert mask_host_labels("api.example.com", b"k" * 32) == "api.example.com"


def kept_scrub_corpus() -> list[dict[str, Any]]:
    """Events as turns make them, clean and not, each twice in a row and each next to ones that differ
    from it in one text that must be scrubbed or in one value that encodes apart (1, 1.0, true, -0.0)."""
    events: list[dict[str, Any]] = []
    for user_id in ("u-1", "jane.doe@example.com", TOKEN, "u-1 " * 100):
        for host in ("api.openai.com", f"{TOKEN}.attacker.example"):
            for path in ("/v1/chat/completions", TOKEN_PATHS["percent-encoded"], "/v1/x%20y"):
                for count in (1, 1.0, True, 0.0, -0.0, None):
                    turn = Turn(TurnContext(agent_id="bot", role="r", user_id=user_id), egress_host=host)
                    turn.add(
                        Finding(
                            Threat.LATERAL_MOVEMENT,
                            "egress.not_allowlisted",
                            f"{host} is not in the allowlist of role 'r'",
                            Severity.HIGH,
                            Action.BLOCK,
                            "egress",
                            extra={"count": count, "seen": [user_id, {"n": count}]},
                        )
                    )
                    turn.errors.append(f"connection: {path}")
                    event = enforced_event(turn, path)
                    events += [event, dict(event)]
    return events


def scrubbed_anew(event: dict[str, Any]) -> dict[str, Any]:
    _kept_scrubs.clear()
    return scrub(event, scanner(), b"k" * 32)


def test_a_kept_scrub_writes_what_scrubbing_anew_writes() -> None:
    """Events whose texts were scrubbed before come back as scrubbing every text anew makes them, byte
    for byte, and as objects of their own: a record's caller may add to it."""
    events = kept_scrub_corpus()
    expected = [canonical_json(scrubbed_anew(event)) for event in events]
    _kept_scrubs.clear()
    for event, written in zip(events, expected, strict=True):
        for _ in range(2):
            clean = scrub(event, scanner(), b"k" * 32)
            assert canonical_json(clean) == written
            assert (clean is event) is (written == canonical_json(event))
            if clean is not event:
                clean["findings"][0]["extra"]["seen"].append("added by a caller")
    assert _kept_scrubs, "the corpus's events were kept"


def test_a_kept_scrub_answers_for_the_same_texts_in_the_same_places_only() -> None:
    """A list of texts is not taken for a mapping, a number for a text or another number, nor a scan
    that ran out of time kept."""
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id="u-1"), egress_host="api.openai.com")
    event = observed_event(turn)
    assert scrub(event, scanner(), b"k" * 32) is event
    moved = {**event, "user_id": None, "session_id": "u-1"}
    assert _scrubbed_texts(moved) != _scrubbed_texts(event)
    assert _scrubbed_texts({**event, "tools": {"0": "a"}}) != _scrubbed_texts({**event, "tools": ["0", "a"]})
    assert _scrubbed_texts({**event, "tools": [1]}) != _scrubbed_texts({**event, "tools": [True]})
    assert _scrubbed_texts({**event, "tools": [0.0]}) != _scrubbed_texts({**event, "tools": [-0.0]})
    assert _scrubbed_texts({**event, "tools": ("a",)}) is None
    assert _scrubbed_texts({**event, "path": "/" * (KEPT_MASKING_CHARS + 1)}) is None
    assert TOKEN not in repr(scrub({**event, "user_id": TOKEN}, scanner(), b"k" * 32))
    slow = Scanner([pack for pack in load_packaged_packs() if pack.name == "secrets"], timeout_s=0.0)
    timed_out = {**event, "purpose": f"forward to {TOKEN}"}
    assert scrub(timed_out, slow, b"k" * 32)["purpose"] == "[REDACTED:inspection.scan_timeout]"
    assert not any(slot[0] is slow for slot in _kept_scrubs)
