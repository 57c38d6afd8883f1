"""Findings as the audit event records them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.model import Action, Finding, Severity, Threat

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)

FINDINGS = st.builds(
    Finding,
    threat=st.sampled_from(Threat),
    rule=st.text(max_size=12),
    signal=st.text(max_size=12),
    severity=st.sampled_from(Severity),
    action=st.sampled_from(Action),
    where=st.text(max_size=12),
    owasp=st.none() | st.text(max_size=6),
    enforced=st.booleans(),
    fingerprint=st.none() | st.text(max_size=12),
    extra=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    origin=st.none() | st.sampled_from(["user", "content"]),
    count=st.integers(min_value=1, max_value=5),
)


def as_recorded_by_definition(finding: Finding) -> dict[str, Any]:
    """Every field, the enums as their values; an empty ``extra``, no ``origin`` and a count of 1 left out."""
    record = asdict(finding)
    for name in ("threat", "severity", "action"):
        record[name] = str(record[name])
    for name, left_out in (("extra", {}), ("origin", None), ("count", 1)):
        if record[name] == left_out:
            del record[name]
    return record


@given(FINDINGS)
def test_a_finding_is_recorded_with_every_field_as_asdict_reads_it(finding: Finding) -> None:
    """The event of a finding holds what ``dataclasses.asdict`` reads of it, in the same order, and its
    ``extra`` is a copy: changing the event changes nothing of the finding."""
    event = finding.to_event()
    expected = as_recorded_by_definition(finding)
    assert event == expected
    assert list(event) == list(expected)
    if "extra" in event:
        event["extra"]["added"] = True
        assert "added" not in finding.extra
