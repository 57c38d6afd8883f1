"""What an agent sets, and the NO_PROXY entries that would send it around egressguard."""

from __future__ import annotations

import pytest

from proxy.commands.agentenv import no_proxy_bypasses, no_proxy_entries
from proxy.config.policy import Policy, parse_policy

POLICY = """\
agents:
  bot: {token: t, role: support}
  open: {token: t, role: anywhere}
roles:
  support:
    egress:
      allow:
        - api.openai.com
        - "*.anthropic.com"
        - "llm.internal:8443"
        - 10.20.0.0/16
        - {host: pinned.example.com, inspect: false}
  anywhere:
    egress: {allow: ["*"]}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, "policy.yaml", environ={})


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ("*", "api.openai.com"),
        ("api.openai.com", "api.openai.com"),
        ("API.OpenAI.com", "api.openai.com"),
        ("api.openai.com.", "api.openai.com"),
        ("api.openai.com:443", "api.openai.com"),
        ("openai.com", "api.openai.com"),
        (".openai.com", "api.openai.com"),
        ("*.openai.com", "api.openai.com"),
        ("ai.com", "api.openai.com"),  # requests matches plain suffixes
        ("anthropic.com", "*.anthropic.com"),
        (".anthropic.com", "*.anthropic.com"),
        ("api.anthropic.com", "*.anthropic.com"),
        ("llm.internal", "llm.internal:8443"),
        ("10.20.3.4", "10.20.0.0/16"),
        ("10.0.0.0/8", "10.20.0.0/16"),
        ("pinned.example.com", "pinned.example.com"),
        ("example.com", "pinned.example.com"),
        ("files.example.org", "*"),
    ],
)
def test_entries_covering_allowed_destinations_bypass(policy: Policy, entry: str, pattern: str) -> None:
    """Every spelling clients accept for an allowed destination is reported with the pattern it covers."""
    assert pattern in {bypass.pattern for bypass in no_proxy_bypasses([entry], policy)}


@pytest.mark.parametrize("entry", ["localhost", "127.0.0.1", "::1", "[::1]", "192.168.0.0/16", "10.0.0.1"])
def test_private_entries_are_no_bypass_of_public_wildcard(policy: Policy, entry: str) -> None:
    """Loopback and private entries are common in NO_PROXY and reach nothing '*' allows."""
    assert not [bypass for bypass in no_proxy_bypasses([entry], policy) if bypass.pattern == "*"]


@pytest.mark.parametrize("entry", ["example.org", "openai.com.evil", "11.0.0.0/8", "anthropic.co", ""])
def test_unrelated_entries_bypass_nothing_but_the_wildcard(policy: Policy, entry: str) -> None:
    """Entries naming nothing a specific pattern allows are not reported against it."""
    assert {bypass.pattern for bypass in no_proxy_bypasses([entry], policy)} <= {"*"}


def test_entries_come_from_both_spellings_and_options() -> None:
    """NO_PROXY, no_proxy and option values are read, comma or space separated, without repeats."""
    environ = {"NO_PROXY": "localhost, api.openai.com", "no_proxy": "api.openai.com .corp"}
    assert no_proxy_entries(environ, ["a.example b.example"]) == [
        "localhost",
        "api.openai.com",
        ".corp",
        "a.example",
        "b.example",
    ]


def test_warning_names_entry_pattern_and_role() -> None:
    """The warning says which entry, which allowed destination and which role."""
    text = "agents: {}\nroles:\n  support: {egress: {allow: [api.openai.com]}}\n"
    policy = parse_policy(text, "p", environ={})
    [bypass] = no_proxy_bypasses(["openai.com"], policy)
    assert str(bypass).startswith(
        "NO_PROXY entry 'openai.com' sends 'api.openai.com' (allowed for role 'support') around egressguard"
    )
