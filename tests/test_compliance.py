from proxy.detectors.compliance import DEFAULT_REQUIRED_FIELDS, RULE_ID, missing_fields
from proxy.model import Action, Severity, Threat

COMPLETE = {"user_id": "u-1", "purpose": "support", "consent_id": "c-9"}


def test_complete_context_has_no_findings() -> None:
    """A context with every default field set yields nothing."""
    assert missing_fields(COMPLETE) == []


def test_default_required_fields() -> None:
    """By default user_id, purpose and consent_id are required."""
    assert DEFAULT_REQUIRED_FIELDS == ("user_id", "purpose", "consent_id")
    assert [f.extra["field"] for f in missing_fields({})] == ["user_id", "purpose", "consent_id"]


def test_none_empty_and_blank_values_count_as_missing() -> None:
    """None, an empty string and whitespace are all missing."""
    findings = missing_fields({"user_id": None, "purpose": "", "consent_id": "  "})
    assert [f.where for f in findings] == ["context.user_id", "context.purpose", "context.consent_id"]


def test_missing_field_is_flagged_by_default() -> None:
    """Without the policy requiring it, a gap is a flag, at the taxonomy's medium severity."""
    (finding,) = missing_fields({**COMPLETE, "consent_id": None})
    assert finding.threat is Threat.COMPLIANCE_GAP
    assert finding.rule == RULE_ID
    assert finding.action is Action.FLAG
    assert finding.severity is Severity.MEDIUM
    assert "consent_id" in finding.signal


def test_required_by_policy_blocks() -> None:
    """When the policy requires the fields the action becomes block."""
    (finding,) = missing_fields({**COMPLETE, "purpose": None}, block=True)
    assert finding.action is Action.BLOCK
    assert finding.severity is Severity.MEDIUM


def test_custom_required_list() -> None:
    """A caller-supplied list replaces the defaults."""
    findings = missing_fields({"user_id": "u"}, required=["user_id", "session_id"])
    assert [f.extra["field"] for f in findings] == ["session_id"]
