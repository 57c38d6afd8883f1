"""Redaction covers a whole secret: no 8-character piece of any rule's example value survives, wherever
the example stands, and tokens longer than a rule's pattern are covered to their last character."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Threat
from proxy.scanning.redact import scan_and_redact
from proxy.scanning.rulepack import Rule, Scanner, load_packaged_packs

PACKS = [
    pack.with_everything_enabled()
    for pack in load_packaged_packs()
    if pack.threat is Threat.DATA_EXFILTRATION
]
SCANNER = Scanner(PACKS, timeout_s=1.0)
EXAMPLES = [(rule, example) for pack in PACKS for rule in pack.rules for example in rule.match_examples]
FRAGMENT = 8
PLACEHOLDER = re.compile(r"\[REDACTED:[^\]]*\]")


def _values(rule: Rule, example: str) -> list[str]:
    """The sensitive values the rule's regex sees in its example."""
    spans = [hit.span(rule.secret_group) for hit in rule.pattern.finditer(example)]
    return [example[start:end] for start, end in spans if end > start]


def _surviving_fragments(value: str, redacted: str) -> list[str]:
    """The value's 8-character pieces still in the redacted text (placeholders, which name the rule and
    may share a word with the value, left aside)."""
    redacted = PLACEHOLDER.sub("\0", redacted)
    pieces = {value[index : index + FRAGMENT] for index in range(max(1, len(value) - FRAGMENT + 1))}
    return sorted(piece for piece in pieces if len(piece) == FRAGMENT and piece in redacted)


BEFORE = ["", "see ", "config:\n", '{"text": "', "```\n", "> ", "1. ", "value\t", "# "]
AFTER = ["", " ok", "\n", '"}', "\n```", " )", ". Next", ", then", "\t;"]


@settings(max_examples=600, deadline=None)
@given(
    case=st.sampled_from(EXAMPLES),
    before=st.sampled_from(BEFORE),
    after=st.sampled_from(AFTER),
    copies=st.integers(min_value=1, max_value=2),
)
def test_no_fragment_of_an_example_survives_redaction(
    case: tuple[Rule, str], before: str, after: str, copies: int
) -> None:
    """Whatever surrounds a rule's match example, none of its value's 8-character pieces is left."""
    rule, example = case
    text = "\n\n".join([before + example + after] * copies)
    redacted = scan_and_redact(SCANNER, text).text
    for value in _values(rule, example):
        # A piece the example also holds outside the value (a PEM prefix in a certificate) proves nothing.
        context = example.replace(value, "\0")
        leaked = [piece for piece in _surviving_fragments(value, redacted) if piece not in context]
        assert not leaked, (rule.id, redacted)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _service_account_jwt() -> str:
    header = _b64url(json.dumps({"alg": "RS256", "kid": os.urandom(20).hex()}).encode())
    claims = {
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "iss": "https://kubernetes.default.svc.cluster.local",
        "kubernetes.io": {"namespace": "payments", "pod": {"name": "api-7d9c", "uid": os.urandom(16).hex()}},
        "sub": "system:serviceaccount:payments:api",
        "jti": os.urandom(24).hex(),
    }
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{_b64url(os.urandom(256))}"


LONG_TOKENS = {
    "kubernetes service-account JWT": lambda: _service_account_jwt(),
    "1Password service account token": lambda: "ops_eyJ" + _b64url(os.urandom(500)),
    "AWS session token": lambda: "IQoJb3JpZ2luX2Vj" + base64.b64encode(os.urandom(256)).decode(),
    "OpenAI project key": lambda: "sk-proj-" + _b64url(os.urandom(300)),
    "generic token next to its name": lambda: _b64url(os.urandom(600)),
}
CONTEXTS = [
    "token: {}",
    "aws_session_token = {}",
    "Authorization: Bearer {}\r\n",
    '{{"access_token": "{}", "expires_in": 3600}}',
    "export OP_SERVICE_ACCOUNT_TOKEN={}\n",
    "OPENAI_API_KEY={}",
]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("kind", sorted(LONG_TOKENS))
def test_long_token_is_redacted_to_its_last_character(kind: str, context: str) -> None:
    """A token far longer than 128 characters leaves no piece visible once any rule finds it."""
    token = LONG_TOKENS[kind]()
    text = context.format(token)
    result = scan_and_redact(SCANNER, text)
    if not result.redactions:
        pytest.skip("no rule names this token in this context")
    assert not _surviving_fragments(token, result.text), result.text


@pytest.mark.parametrize("kind", sorted(LONG_TOKENS))
def test_long_token_next_to_a_credential_name_is_found(kind: str) -> None:
    """Each long token is found and wholly redacted at least next to a credential-like name."""
    token = LONG_TOKENS[kind]()
    result = scan_and_redact(SCANNER, f"token: {token}")
    assert result.redactions
    assert not _surviving_fragments(token, result.text)
