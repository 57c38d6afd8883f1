"""Named checks that confirm a regex hit is a real value, referred to by name from rule packs.

Each validator takes the sensitive value a rule matched and says whether it is plausibly real.
Regexes stay weak and fast; these functions carry the arithmetic (Luhn, mod-97, SSN ranges) and the
judgement calls (placeholders, phone numbering plans).
"""

from __future__ import annotations

import base64
import math
import re
import string
import zlib
from collections import Counter
from collections.abc import Callable, Mapping

import phonenumbers
import regex

Validator = Callable[[str], bool]


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` over its own character frequencies."""
    if not value:
        return 0.0
    length = len(value)
    return -sum(count / length * math.log2(count / length) for count in Counter(value).values())


_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_CHECKSUM_CHARS = 6
_CHECKSUMMED_BODY = 30


def base62_crc32_valid(token: str) -> bool:
    """A token whose last six characters are the CRC32 of the 30 before them, written in base62 (digits,
    then upper, then lower case letters) with leading zeros: GitHub's ``ghp_`` family and npm's ``npm_``
    tokens. A string of 36 random base62 characters passes with a chance of one in 62**6 (about 1.8e-11)."""
    body = token[-_CHECKSUM_CHARS - _CHECKSUMMED_BODY : -_CHECKSUM_CHARS]
    if len(body) != _CHECKSUMMED_BODY or not body.isascii():
        return False
    written = 0
    for char in token[-_CHECKSUM_CHARS:]:
        digit = _BASE62.find(char)
        if digit < 0:
            return False
        written = written * len(_BASE62) + digit
    return written == zlib.crc32(body.encode("ascii"))


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of digits; separators are ignored."""
    numbers = [int(char) for char in digits if char.isdigit()]
    if len(numbers) < 2:
        return False
    total = 0
    for position, number in enumerate(reversed(numbers)):
        if position % 2 == 1:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


# (prefix range low, prefix range high, allowed lengths) per brand, from the card networks' published
# issuer identification number ranges.
_CARD_RANGES: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset({16, 17, 18, 19})),  # Discover
    (644, 649, frozenset({16, 17, 18, 19})),
    (65, 65, frozenset({16, 17, 18, 19})),
    (3528, 3589, frozenset({16, 17, 18, 19})),  # JCB
    (300, 305, frozenset({14, 15, 16, 17, 18, 19})),  # Diners Club
    (36, 36, frozenset({14, 15, 16, 17, 18, 19})),
    (38, 39, frozenset({16, 17, 18, 19})),
    (62, 62, frozenset({16, 17, 18, 19})),  # UnionPay
    (50, 50, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro
    (56, 58, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    (67, 69, frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
)


# Card numbers the payment processors publish for testing (Stripe's, Braintree's, Adyen's and PayPal's
# sandbox pages): every checkout's test fixtures hold them, and no card was issued with them.
_TEST_CARDS = frozenset(
    {
        "378282246310005", "371449635398431", "378734493671000", "30569309025904", "38520000023237",
        "36227206271667", "3056930009020004", "6011111111111117", "6011000990139424", "6011000400000000",
        "6011981111111113", "6555900000604105", "3530111333300000", "3566002020360505", "3566111111111113",
        "5105105105105100", "5200828282828210", "5431111111111111", "2223003122003222", "2223000048400011",
        "4012888888881881", "4222222222222", "4000056655665556", "4000002500003155", "4000002760003184",
        "4000000000000002", "4000000000009995", "4000000000003220", "4000000000000077", "4000000000000069",
        "4000000000000127", "4000000000000119", "4000000000000341", "4000000000000101", "4917610000000000003",
        "6200000000000005", "6205500000000000004", "4035501000000008", "4988438843884305",
    }
)  # fmt: skip


def payment_card_valid(value: str) -> bool:
    """A card number with a known brand prefix, a length that brand issues, and a valid Luhn digit; not
    one of the processors' published test numbers."""
    digits = "".join(char for char in value if char.isdigit())
    if len(set(digits)) < 3 or digits in _TEST_CARDS:
        return False
    for low, high, lengths in _CARD_RANGES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return luhn_valid(digits)
    return False


def ssn_valid(value: str) -> bool:
    """A US SSN the SSA could have issued: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    digits = "".join(char for char in value if char.isdigit())
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in {"000", "666"} or area.startswith("9"):
        return False
    return group != "00" and serial != "0000"


# IBAN lengths per country, from the SWIFT IBAN registry.
_IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(value: str) -> bool:
    """An IBAN with the registered length for its country and a mod-97 check of 1."""
    compact = "".join(value.split()).upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def phone_valid(value: str) -> bool:
    """A number valid in its numbering plan; numbers without a country code are read as US numbers."""
    try:
        parsed = phonenumbers.parse(value, None if value.lstrip().startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


# Countries whose national format (trunk prefix 0, or India's ten-digit mobiles) the phone-national rule
# reads; a number counts when it is valid in one of their numbering plans.
NATIONAL_PHONE_REGIONS = ("GB", "DE", "FR", "IN")


def national_phone_valid(value: str) -> bool:
    """A number written in national format that is valid in the UK, German, French or Indian plan."""
    for region in NATIONAL_PHONE_REGIONS:
        try:
            parsed = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def spanish_dni_valid(value: str) -> bool:
    """A Spanish DNI/NIE whose control letter matches its number (NIE prefixes X, Y, Z read as 0, 1, 2)."""
    compact = value.replace("-", "").replace(" ", "").upper()
    if len(compact) != 9:
        return False
    number = compact[:8]
    if number[0] in "XYZ":
        number = str("XYZ".index(number[0])) + number[1:]
    return number.isdigit() and _DNI_LETTERS[int(number) % 23] == compact[8]


def dutch_bsn_valid(value: str) -> bool:
    """A Dutch citizen service number passing the eleven-test."""
    digits = [int(char) for char in value if char.isdigit()]
    if len(digits) != 9 or not any(digits):
        return False
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    return sum(weight * digit for weight, digit in zip(weights, digits, strict=True)) % 11 == 0


_PLACEHOLDER_WORDS = (
    "your",
    "example",
    "placeholder",
    "sample",
    "changeme",
    "change_me",
    "dummy",
    "redacted",
    "insert",
    "replace",
    "todo",
    "fixme",
    "xxxx",
    "****",
    "....",
    "<",
    ">",
    "${",
    "{{",
    "process.env",
    "os.environ",
    "getenv",
    "env[",
    "env.",
    "secrets.",
)
# The words themselves, and the default passwords the database and queue images document (postgres:postgres,
# root:root, guest:guest), which CI files and compose files set for a throwaway service.
_PLACEHOLDER_VALUES = frozenset(
    {
        "password", "secret", "token", "null", "none", "true", "false", "undefined", "test", "admin", "pass",
        "postgres", "mysql", "root", "guest",
    }
)  # fmt: skip
# Names rather than values: $VAR, %VAR%, MY_SECRET_VAR, key_password, ClientSecret (a type annotation),
# get_secret(...), settings.api_key
_REFERENCE = re.compile(
    r"^(?:\$\w+|%\w+%|[A-Z][A-Z0-9]*_[A-Z0-9_]*|[a-z]+(?:_[a-z]+)+|(?:[A-Z][a-z]+){2,}|[\w.]+\(.*"
    r"|[a-z_]+(?:\.[a-z_]+)+)\Z"
)
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop")


def is_placeholder(value: str) -> bool:
    """True for values that stand in for a secret: ``YOUR_API_KEY``, ``xxxx``, ``$VAR``, ``process.env.X``."""
    lowered = value.strip("\"'` ").lower()
    if not lowered or lowered in _PLACEHOLDER_VALUES or len(set(lowered)) <= 2:
        return True
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return True
    if any(lowered in sequence or sequence.startswith(lowered) for sequence in _SEQUENCES):
        return True
    return bool(_REFERENCE.match(value.strip("\"'` ")))


def not_placeholder(value: str) -> bool:
    return not is_placeholder(value)


# Values published in providers' own documentation as examples: found in every tutorial, never a leak.
_DOCUMENTED_EXAMPLES = frozenset(
    {
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe API reference
        "pk_test_TYooMQauvdEDq54NiTphI7jx",
        "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # GitHub REST API docs
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",  # Google Maps docs
        # jwt.io's sample token
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ==",  # RFC 7617's Basic credentials, Aladdin:open sesame
    }
)
# Words that mark a value as an example or a stand-in: AWS's documented keys end in EXAMPLE and
# EXAMPLEKEY; "<your-token>", "my-secret-pw", "sk-xxxx...".
_EXAMPLE_WORDS = re.compile(
    r"(?i:example|placeholder|your[_-]?(?:api|token|key|secret|pass)|<[^>]{0,40}>|\$\{|\{\{|dummy|redacted"
    r"|changeme|change[_-]me|secret[_-]?pw|fake[_-]?(?:key|token))"
)
# The word itself is a stand-in ("password", "your_password", "other-password", "mysecretpassword",
# "password123", as documentation writes them); a value that merely contains it ("Summer-Password-2024!")
# is a real, if weak, password.
_PASSWORD_WORD = re.compile(
    r"(?i)(?:(?:my|your|the|some|new|old|other|another|test|dummy|sample|fake|default|secret|super|db|admin"
    r"|user|root)[_-]?){0,3}pass(?:word|wd)s?(?:[_-]?(?:1|12|123|1234|12345|123456|!))?"
)
# After a provider prefix ("sk-proj-", "hf_", "xoxb-"), a body of one or two characters over and over,
# or with a run of x, X, *, # or 0, is a stand-in, not a key.
_PREFIX = re.compile(r"^(?:[A-Za-z]{1,12}[_-]){0,3}")
_FILLER_RUN = re.compile(r"([xX*#.0])\1{5,}")
_LEAST_BODY = 8
_BASE64_BASIC = re.compile(r"[A-Za-z0-9+/]{4,340}={0,2}")
_PLAIN_USER = re.compile(r"[A-Za-z][A-Za-z._@-]{0,31}")


VAULT_PLACEHOLDER = regex.compile(r"egv_[0-9a-f]{20}")
"""What the vault (proxy/scanning/vault.py) puts in place of a secret."""


def is_vault_placeholder(value: str) -> bool:
    """A value that is a vault placeholder holds no secret: rules that take any word after ``password=``
    would otherwise vault or redact the stand-in itself."""
    return VAULT_PLACEHOLDER.fullmatch(value) is not None


def _basic_stand_in(value: str) -> bool:
    """Basic credentials (base64 of ``user:password``) whose password is a stand-in and whose user is a
    plain name, as documentation shows the header: ``dXNlcm5hbWU6cGFzc3dvcmQ=`` is ``username:password``.
    A key given as the user (Stripe's ``sk_live_...:``, an empty password) is no stand-in."""
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except ValueError:
        return False
    user, colon, password = decoded.partition(":")
    return (
        bool(colon and password)
        and _PLAIN_USER.fullmatch(user) is not None
        and (is_placeholder(password) or is_example_value(password))
    )


def is_example_value(value: str) -> bool:
    """True for published documentation examples and obvious stand-ins shaped like a real token."""
    if value in _DOCUMENTED_EXAMPLES or _EXAMPLE_WORDS.search(value) or _PASSWORD_WORD.fullmatch(value):
        return True
    if _BASE64_BASIC.fullmatch(value) and _basic_stand_in(value):
        return True
    body = value[_PREFIX.match(value).end() :]  # type: ignore[union-attr]  # always matches
    if len(body) < _LEAST_BODY:
        # Random URL-safe tokens have dashes and underscores too: "OEaXAkQyB-BepqOOZBalo_9s" is no
        # prefix before a two-letter stand-in.
        body = value
    return len(set(body.lower())) <= 2 or _FILLER_RUN.search(body) is not None


VALIDATORS: Mapping[str, Validator] = {
    "luhn": luhn_valid,
    "payment_card": payment_card_valid,
    "ssn": ssn_valid,
    "iban": iban_valid,
    "phone": phone_valid,
    "national_phone": national_phone_valid,
    "spanish_dni": spanish_dni_valid,
    "dutch_bsn": dutch_bsn_valid,
    "not_placeholder": not_placeholder,
    "base62_crc32": base62_crc32_valid,
}
