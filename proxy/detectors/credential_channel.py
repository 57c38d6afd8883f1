"""The credential channel: request headers and query parameters named as credentials (``Authorization``,
``x-api-key``, ``?key=``) carry the agent's own key for the API it calls, so they are not read as data the
agent sends. They are a channel all the same: a GitHub token in ``X-Api-Key``, an OpenAI key in
Anthropic's ``x-api-key``, a second key after the real one, any key to a host that takes none.

The rule: a destination expects credentials of known kinds (secret rule ids) in known fields. A value in
the channel is scanned like any other text; a match of a provider's key format that the destination does
not expect there is a finding. Matches of rules that recognise only a shape every service's credential
takes (a JWT, a bearer or basic header, an assignment) say nothing about whose key it is and are left to
the destination, as is a value no rule recognises (a custom tool's opaque key). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxy.egress import HostPattern, canonical_host
from proxy.model import Action, Finding, Severity, Threat
from proxy.scanning.rulepack import Rule

RULE = "credential.unexpected"
SECRETS_PACK = "secrets"
SHAPE_ONLY_RULES = frozenset(
    {
        "jwt",
        "jwt-unsigned",
        "authorization-scheme-header",
        "authorization-bearer-header",
        "authorization-basic-header",
        "header-api-key",
        "generic-password-assignment",
        "generic-secret-assignment",
        "generic-api-key-assignment",
        "dotenv-secret",
        "publishable-key",
    }
)
"""Secret rules that recognise a credential's shape, not its issuer: what a destination's own scheme
looks like as often as anything else."""
UNSENT_FIELDS = frozenset({"proxy-authorization"})
"""Credential headers that never leave egressguard: the agent's credentials for the proxy itself."""

OPENAI_KEYS = ("openai-project-key", "openai-admin-key", "openai-service-account-key", "openai-legacy-key")
ANTHROPIC_KEYS = ("anthropic-api-key", "anthropic-admin-key", "anthropic-oauth-token")
GEMINI_KEYS = ("gcp-api-key", "google-ai-studio-key")


@dataclass(frozen=True, slots=True)
class Expected:
    """Credentials a destination takes: rule ids, in fields (lower-case header or query parameter names;
    empty: any field named as a credential). ``host`` is the policy's pattern as written."""

    host: str
    rules: frozenset[str]
    fields: frozenset[str] = frozenset()
    pattern: HostPattern | None = None

    @classmethod
    def of(cls, host: str, rules: Iterable[str], fields: Iterable[str] = ()) -> Expected:
        """Raises ValueError for a host pattern that is not one or that names a port."""
        pattern = HostPattern.parse(host, None)
        if pattern.port is not None or host.strip().endswith(":*"):
            raise ValueError(f"{host!r}: a credentials host takes no port")
        return cls(host, frozenset(rules), frozenset(field.lower() for field in fields), pattern)

    def covers(self, host: str, field: str) -> bool:
        assert self.pattern is not None
        return self.pattern.names(canonical_host(host)) and (not self.fields or field in self.fields)


DEFAULT_EXPECTED: tuple[Expected, ...] = (
    Expected.of("api.openai.com", OPENAI_KEYS, ["authorization"]),
    Expected.of("api.anthropic.com", ANTHROPIC_KEYS, ["x-api-key", "authorization"]),
    Expected.of("generativelanguage.googleapis.com", GEMINI_KEYS, ["x-goog-api-key", "key"]),
    Expected.of("generativelanguage.googleapis.com", ["google-oauth-access-token"], ["authorization"]),
)
"""What the three big model APIs take: OpenAI a key as ``Authorization: Bearer``, Anthropic ``x-api-key``
(or an OAuth token as a bearer), Gemini an ``AIza`` key in ``x-goog-api-key`` or ``?key=`` (or an OAuth
access token)."""


def expectations(configured: Mapping[str, Expected]) -> tuple[Expected, ...]:
    """The defaults, each replaced by the policy's entry for the same host, then the policy's others."""
    return tuple(entry for entry in DEFAULT_EXPECTED if entry.host not in configured) + tuple(
        configured.values()
    )


def expected_rules(table: Sequence[Expected], host: str, field: str) -> frozenset[str]:
    """The rule ids whose matches ``host`` expects in the credential field ``field`` (lower case)."""
    return frozenset(rule for entry in table if entry.covers(host, field) for rule in entry.rules)


def is_provider_key(rule: Rule) -> bool:
    """Whether a rule recognises whose credential a value is: a secret rule not of ``SHAPE_ONLY_RULES``."""
    return rule.pack == SECRETS_PACK and rule.id not in SHAPE_ONLY_RULES


def unexpected_finding(rule: Rule, kind: str, where: str, host: str, value_fingerprint: str) -> Finding:
    """A provider's key in a credential field (``kind``: header or query parameter) of a destination that
    does not take it there: the secret is named by its rule id and keyed fingerprint only, the field by
    ``where`` (which the recorder redacts), since a field's name is the sender's to choose."""
    return Finding(
        threat=Threat.CREDENTIAL_THEFT,
        rule=RULE,
        signal=f"{rule.id} credential in a {kind} named as a credential, which {host} does not expect there",
        severity=Severity.CRITICAL,
        action=Action.BLOCK,
        where=where,
        owasp="LLM06",
        fingerprint=value_fingerprint,
        extra={"secret_rule": rule.id},
    )
