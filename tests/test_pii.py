"""Personal data in the formats people write it: national and international phone numbers of the
countries the PII pack claims, e-mail addresses; and the look-alikes that must stay clean."""

from __future__ import annotations

import pytest

from bench.pii_corpus import pii_corpus, pii_negatives
from proxy.scanning.rulepack import Scanner, load_packaged_packs
from proxy.scanning.validators import VALIDATORS

SCANNER = Scanner([pack for pack in load_packaged_packs() if pack.name in {"pii", "secrets"}], timeout_s=1.0)


def _covered(text: str, value: str) -> bool:
    start = text.index(value)
    end = start + len(value)
    return any(
        match.rule.pack == "pii" and match.start <= start and match.end >= end
        for match in SCANNER.scan_alone(text).matches
    )


@pytest.mark.parametrize(("kind", "text", "value"), pii_corpus(), ids=lambda item: str(item)[:40])
def test_personal_data_is_found_whole(kind: str, text: str, value: str) -> None:
    """Each phone number (US, UK, DE, FR, IN; national, E.164, international) and address is found whole."""
    assert _covered(text, value), kind


@pytest.mark.parametrize(("kind", "text"), pii_negatives(), ids=lambda item: str(item)[:30])
def test_look_alikes_are_not_personal_data(kind: str, text: str) -> None:
    """Dates, times, versions, hex dumps, order numbers, prices and icon@2x.png are not findings."""
    assert SCANNER.scan_alone(text).matches == [], kind


def test_a_number_a_text_repeats_is_checked_against_the_numbering_plans_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A contact list or a log of calls repeats its numbers: each is parsed and checked once a scan,
    whichever rules match it, and every place it stands is found as before."""
    checked: list[str] = []
    phone_valid = VALIDATORS["phone"]

    def counted(value: str) -> bool:
        checked.append(value)
        return phone_valid(value)

    monkeypatch.setitem(VALIDATORS, "phone", counted)
    text = "call +1 (415) 555-0132 or 212-555-0198; " * 500
    found = SCANNER.scan(text, SCANNER.budget()).found
    assert sorted(set(checked)) == sorted(checked) and len(checked) >= 2
    assert len([match for match in found if match.rule.id.startswith("phone")]) == 1000
