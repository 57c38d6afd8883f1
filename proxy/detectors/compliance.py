"""Compliance gap: a turn that lacks the context fields an audit needs (who, why, under what consent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.model import Action, Finding, Severity, Threat

DEFAULT_REQUIRED_FIELDS: tuple[str, ...] = ("user_id", "purpose", "consent_id")
RULE_ID = "compliance-missing-field"


def missing_fields(
    context_values: Mapping[str, str | None],
    required: Sequence[str] = DEFAULT_REQUIRED_FIELDS,
    *,
    block: bool = False,
) -> list[Finding]:
    """One finding per required field that is absent, empty or only whitespace.

    ``block`` is set when the policy ``require:``s the fields: the turn is then refused in enforce
    mode rather than only flagged.
    """
    action = Action.BLOCK if block else Action.FLAG
    findings = []
    for name in required:
        value = context_values.get(name)
        if value is None or not value.strip():
            findings.append(
                Finding(
                    threat=Threat.COMPLIANCE_GAP,
                    rule=RULE_ID,
                    signal=f"turn has no {name}",
                    severity=Severity.MEDIUM,  # the taxonomy's, flagged or refused
                    action=action,
                    where=f"context.{name}",
                    extra={"field": name},
                )
            )
    return findings
