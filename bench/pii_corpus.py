"""Dev corpora for personal data: numbers and addresses the PII pack must find, and look-alikes it must not.

``pii_corpus`` writes phone numbers of the countries the pack claims (US, UK, DE, FR, IN) in national
and international format, taken from the numbering plans' own example numbers with their last digits
varied (kept only when still valid), plus e-mail addresses, in short sentences. ``pii_negatives`` holds
dates, times, versions, hex dumps, order numbers, prices and image file names like ``icon@2x.png``.

Used by ``bench/scan.py`` and ``tests/test_pii.py``.
"""

from __future__ import annotations

import random

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

REGIONS = ("US", "GB", "DE", "FR", "IN")
_TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
_LEADS = ("call me on ", "Tel.: ", "phone: ", "appelez le ", "Handy ", "contact ", "")
_TAILS = (" today", ".", "", " (office)", " ext. 12")


def _numbers(rng: random.Random, region: str, per_type: int) -> list[phonenumbers.PhoneNumber]:
    """Up to ``per_type`` valid numbers of each type: the plan's example with its last digits varied."""
    found = []
    for number_type in _TYPES:
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is None:
            continue
        digits = str(example.national_number)
        valid = []
        for _ in range(per_type * 5):
            number = phonenumbers.parse(digits[:-4] + "".join(rng.choices("0123456789", k=4)), region)
            if phonenumbers.is_valid_number(number):
                valid.append(number)
        found.extend(valid[:per_type])
    return found


def pii_corpus(per_type: int = 6, seed: int = 5) -> list[tuple[str, str, str]]:
    """(kind, text, value) triples: the value is the personal data the text carries."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    items: list[tuple[str, str, str]] = []
    for region in REGIONS:
        for number in _numbers(rng, region, per_type):
            for style, label in ((PhoneNumberFormat.NATIONAL, "national"), (PhoneNumberFormat.E164, "e164")):
                value = phonenumbers.format_number(number, style)
                text = rng.choice(_LEADS) + value + rng.choice(_TAILS)
                items.append((f"phone {region} {label}", text, value))
            value = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            items.append((f"phone {region} international", f"reach me at {value}", value))
    for name in ("jane.doe", "j.smith+billing", "ops-team", "m.mueller", "a_b.c"):
        for domain in ("example.org", "mail.corp-x.co.uk", "uni-bonn.de", "gmail.com"):
            value = f"{name}@{domain}"
            items.append(("email", f"write to {value} please", value))
    return items


def pii_negatives() -> list[tuple[str, str]]:
    """(kind, text) pairs that hold no personal data."""
    return [
        ("dates", "on 03 04 2025, am 03.04.2025 um 10.30, le 05-06-2024 and 2024-05-06T10:30:00Z"),
        ("times", "between 09.30 - 10.30 and 14:00-15:30, uptime 0:12:45"),
        ("versions", "version 0.12.3, python 3.12.1, node v20.11.0, 1.2.3.4.5"),
        (
            "hex dump",
            "00000010  e4 c4 b5 52 05 88 ef da 05 45 72 04 d0 8a aa 67\n"
            "00000020  7c bf 0b d1 1a 8b 07 50 33 00 85 74 a9 0f 82 26",
        ),
        ("order numbers", "invoice 0001 2345, ticket #000123456, PO 0042-7781, sku 012345678905"),
        ("prices", "total 0.99 - 1.99 EUR, 1 234 567,89 EUR, 12 345.00"),
        ("image names", '<img src="icon@2x.png"> url(logo@3x.webp) import b from "./button@2x.svg"'),
        ("ids", "build 20240506.3, run 98765-43210-abc, pid 01234, port 08080"),
        ("numbers", "0 1 2 3 4 5 6 7 8 9, matrix [[0.5, 0.25], [0.125, 0.0625]]"),
        ("coordinates", "lat 51.5074, lon -0.1278, 48.8566 N 2.3522 E"),
    ]
