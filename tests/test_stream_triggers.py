"""The stream redactor scans only where something the stream brought can still make a rule match: a
watch reads each delta for the rules' keywords, shapes and single characters and for what a decoded
view starts at, and a delta far from all of them is released without a scan. These tests hold the fast
path to the redactor that scans on every delta, at every split, and to whole-text redaction."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.scanning import unmask
from proxy.scanning.redact import RedactionStyle, StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import (
    RUN_LOOKBEHIND,
    ScanBudget,
    Scanner,
    confined_to_runs,
    holds_whitespace,
    load_pack,
    pack_path,
)

KEY = b"per-install-test-key"
PROSE = "The customer reports that the invoice total does not match the order confirmation. "
"""Prose no rule's keyword occurs in: the stream needs no scan while only it is near."""


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return SCANNER


class CountingScanner(Scanner):
    scans = 0
    longest = 0

    def scan(self, text: str, budget: ScanBudget, *, merge: bool = True):  # type: ignore[no-untyped-def]
        self.scans += 1
        self.longest = max(self.longest, len(text))
        return super().scan(text, budget, merge=merge)


class ScanningEveryDelta(StreamRedactor):
    """The redactor as it was before it watched for triggers: every release scans its whole window."""

    def _context_to_scan(self) -> int:
        return len(self._context)


_PACKS = (load_pack(pack_path("secrets")), load_pack(pack_path("pii")))
# A rule that runs out of time on a loaded machine is skipped in that scan only: the redactors compared
# here get all the time they need, so that they differ by what they scan, never by the machine's load.
SCANNER = Scanner(_PACKS, timeout_s=60)
SECRETS = [
    example
    for pack in _PACKS
    for rule in pack.rules
    # Key blocks are suppressed by their markers, not by scanning (tests/test_redact.py).
    if not rule.id.startswith("private-key-")
    for example in rule.match_examples
]
NEAR_MISSES = [example for pack in _PACKS for rule in pack.rules for example in rule.no_match_examples]
FILLER = [
    PROSE,
    PROSE * 4,
    "ask the task owner ",
    "password: ",
    "api_key = ",
    'token": "',
    "Bearer ",
    "\n",
    "    ",
    "\t",
    ", ",
    "!",
    "@",
    "+",
    " 4539 ",
    "2024-05-01 ",
    "clé ",
    "🔑 ",
    "Привет, мир. ",
    "日本語のテキスト。",
    "%20",
    "&amp;",
    "\\u0041",
    "0x41 0x42 ",
    "g h p _ ",
    "\u200b",
    "\uff21\uff22\uff23\uff24",
]


def _disguised(kind: int, value: str) -> str:
    """``value`` as a model may write it to hide it: encoded, escaped, spaced out or with look-alikes."""
    forms = (
        lambda: base64.b64encode(value.encode()).decode(),
        lambda: urllib.parse.quote(value, safe=""),
        lambda: " ".join(value),
        lambda: "\u200b".join(value),
        lambda: json.dumps(value)[1:-1].replace("a", "\\u0061"),
        lambda: value.replace("A", "\u0410").replace("o", "\u043e"),
        lambda: "".join(f"&#{ord(char)};" if index % 3 == 0 else char for index, char in enumerate(value)),
        lambda: value.encode().hex(),
    )
    return forms[kind % len(forms)]()


# A value named by a keyword that the stream releases before the value comes.
ASSIGNMENTS = [
    "password: ",
    'db_password = "',
    "export API_KEY=",
    "client_secret => '",
    "Authorization: Bearer ",
    "the token for prod is ",
    "mysql://admin:",
    "ssn ",
]
VALUES = ["Xk9#mP2$vL7qR4wZ", "Xk9mP2vL7qR4wZa8Tq3", "hunter2-Plover-77", "078-05-1120", "s3cr3t"]

PIECES = (
    st.sampled_from(SECRETS)
    | st.sampled_from(NEAR_MISSES)
    | st.sampled_from(FILLER)
    | st.builds(_disguised, st.integers(0, 7), st.sampled_from(SECRETS))
    | st.builds(str.__add__, st.sampled_from(ASSIGNMENTS), st.sampled_from(VALUES))
)


def _deltas(text: str, sizes: list[int]) -> list[str]:
    deltas: list[str] = []
    position = 0
    while position < len(text):
        deltas.append(text[position : position + sizes[len(deltas) % len(sizes)]])
        position += len(deltas[-1])
    return deltas


def _streamed(
    redactor: StreamRedactor, deltas: list[str], bursts: list[int]
) -> tuple[list[str], list[tuple[str, str]], tuple[int, str] | None]:
    """What each delta releases (fed alone, or in bursts announced with ``expect`` when ``bursts`` is
    given), the flush, the redactions and what the stream continued."""
    released: list[str] = []
    fed = 0
    while fed < len(deltas):
        count = bursts[len(released) % len(bursts)] if bursts else 1
        burst = deltas[fed : fed + count]
        if count > 1:
            redactor.expect("".join(burst))
        released += [redactor.feed(delta) for delta in burst]
        fed += len(burst)
    released.append(redactor.flush())
    redactions = [(redaction.rule_id, redaction.fingerprint) for redaction in redactor.redactions]
    return released, redactions, redactor.continued()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(PIECES, min_size=1, max_size=14),
    sizes=st.lists(st.integers(1, 24), min_size=1, max_size=8),
    bursts=st.lists(st.integers(1, 6), max_size=4),
    style=st.sampled_from(RedactionStyle),
    prefix=st.sampled_from(["", "\U0001f511 ", PROSE, PROSE * 4]),
)
def test_watching_releases_what_scanning_every_delta_releases(
    pieces: list[str], sizes: list[int], bursts: list[int], style: RedactionStyle, prefix: str
) -> None:
    """Secrets of every rule, near misses, encoded and disguised secrets, keywords far from or next to
    values, multi-byte text: split anywhere, fed alone or in announced bursts, the watching redactor
    releases the same text at every delta and records the same redactions as one that scans each time."""
    deltas = _deltas(prefix + "".join(pieces), sizes)
    watching = _streamed(StreamRedactor(SCANNER, style, key=KEY), deltas, bursts)
    assert watching == _streamed(ScanningEveryDelta(SCANNER, style, key=KEY), deltas, bursts)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets=st.lists(st.sampled_from(SECRETS), min_size=1, max_size=4),
    gap=st.sampled_from(["", " ", PROSE, PROSE * 4, "é" * 300, "x=" * 200]),
    sizes=st.lists(st.integers(1, 16), min_size=1, max_size=8),
)
def test_secrets_after_long_quiet_text_are_hidden_at_every_split(
    scanner: Scanner, secrets: list[str], gap: str, sizes: list[int]
) -> None:
    """Each secret comes after text in which no rule can match (where the redactor scans nothing), and
    spans many deltas: none of its value that whole-text redaction hides is released."""
    text = PROSE * 4 + gap.join(secrets) + " " + PROSE
    redactor = StreamRedactor(scanner)
    streamed = "".join(redactor.feed(delta) for delta in _deltas(text, sizes)) + redactor.flush()
    whole = scan_and_redact(scanner, text).text
    for match in scanner.scan_alone(text, merge=False).matches:
        value = text[match.start : match.end]
        hidden = {value[index : index + 12] for index in range(len(value) - 11)}
        assert not {part for part in hidden if part not in whole and part in streamed}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
@pytest.mark.parametrize("value", VALUES)
def test_a_value_whose_keyword_went_out_before_it_is_redacted_as_when_scanning_every_delta(
    assignment: str, value: str
) -> None:
    """The keyword that names a value leaves before the value comes: the deltas that bring the value are
    still scanned, at every delta size."""
    text = PROSE * 4 + assignment + value + " then " + PROSE
    for size in range(1, 8):
        deltas = _deltas(text, [size])
        watching = _streamed(StreamRedactor(SCANNER), deltas, [])
        assert watching == _streamed(ScanningEveryDelta(SCANNER), deltas, [])


@pytest.mark.parametrize(
    ("value", "rule_id"),
    [
        ("4539 5787 6362 1486", "payment-card"),  # Luhn decides once the last digit is in
        ("GB82 WEST 1234 5698 7654 32", "iban"),  # mod 97 over the whole number
        ("+44 20 7946 0958", "phone-international"),  # the numbering plan, once the number ends
        ("AKIALACI57K43PEADJ4S", "aws-access-key-id"),
    ],
)
def test_a_value_checked_after_it_ends_is_held_and_redacted_a_character_a_delta(
    scanner: Scanner, value: str, rule_id: str
) -> None:
    """A value whose validator decides only when it is complete, streamed a character at a time after
    quiet text, is held until then and redacted whole."""
    text = PROSE * 4 + "reach me on " + value + " today. " + PROSE
    redactor = StreamRedactor(scanner)
    released = [redactor.feed(character) for character in text] + [redactor.flush()]
    assert "".join(released) == scan_and_redact(scanner, text).text
    assert f"[REDACTED:{rule_id}]" in "".join(released)
    assert not any(value[:6] in chunk for chunk in released)


def test_quiet_prose_is_released_without_a_scan() -> None:
    """Text in which nothing can start a match costs no scan, however long; each delta goes out as it
    comes but for its open word."""
    counting = CountingScanner(_PACKS)
    redactor = StreamRedactor(counting)
    text = PROSE * 30
    released = [redactor.feed(delta) for delta in _deltas(text, [12])]
    assert counting.scans == 0
    assert released[:2] == ["The ", "customer reports "]
    assert "".join(released) + redactor.flush() == text


def test_a_trigger_is_scanned_for_only_while_a_match_holding_it_can_reach_the_held_text() -> None:
    """A keyword makes the deltas near it scanned; once no match of its rules can reach the held text
    and no decoded view can start in the window, the deltas are released without a scan again."""
    counting = CountingScanner(_PACKS)
    redactor = StreamRedactor(counting)
    deltas = _deltas(PROSE * 2 + "Fill in the SSN field. " + PROSE * 6, [12])
    scanned = []
    for delta in deltas:
        before = counting.scans
        redactor.feed(delta)
        scanned.append(counting.scans > before)
    near = [index for index, was in enumerate(scanned) if was]
    assert near, "the keyword was never scanned for"
    # "ssn" belongs to rules whose matches are a few dozen characters long.
    assert near[-1] - near[0] < 8
    assert not any(scanned[near[-1] + 1 :])


def test_a_word_too_short_for_the_token_formats_its_keyword_belongs_to_costs_no_scan() -> None:
    """ "Ask", "task" and "Great!" hold keywords of token formats ("sk", "!") whose shortest match is longer
    than the word: a word closed by whitespace in the delta that brings it costs no scan (one left open
    at a delta's end may still grow, and is scanned with the held text); a token that long is."""
    counting = CountingScanner(_PACKS)
    redactor = StreamRedactor(counting)
    text = "Great! Ask the team to check the task list and the risk register. " * 10
    released = [redactor.feed(word) for word in re.findall(r"\S+\s*", text)]
    assert counting.scans == 0
    assert "".join(released) + redactor.flush() == text
    secret = next(example for example in SECRETS if example.startswith("sk-"))
    text = PROSE + f"Ask for {secret} then. " + PROSE
    deltas = _deltas(text, [12])
    watching = _streamed(StreamRedactor(SCANNER), deltas, [])
    assert watching == _streamed(ScanningEveryDelta(SCANNER), deltas, [])
    assert "[REDACTED:" in "".join(watching[0])


def test_an_encoded_secret_far_from_any_keyword_is_redacted(scanner: Scanner) -> None:
    """Base64 holds no keyword of the rule it hides: the run itself makes the deltas scanned."""
    secret = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
    encoded = base64.b64encode(f"token {secret}".encode()).decode()
    text = PROSE * 4 + encoded + " " + PROSE
    redactor = StreamRedactor(scanner)
    released = [redactor.feed(delta) for delta in _deltas(text, [5])] + [redactor.flush()]
    assert "".join(released) == scan_and_redact(scanner, text).text
    assert not any(encoded[:12] in chunk for chunk in released)


@pytest.mark.parametrize(
    "feature",
    [
        "%41",
        "\\u0041",
        "\\x41",
        "&amp;",
        "&#65;",
        "0x41",
        "QUJDREVGR0hJSktMTU5PUFFS",
        "de:ad:be:ef:" * 3 + "00",
        " a b c d e ",
        "\u200b",
        "\uff21\uff22\uff23\uff24",
        "\u0410B",
    ],
)
def test_what_a_view_starts_at_is_told_of_by_the_delta_it_ends_in(feature: str) -> None:
    """Wherever the delta holding its last character starts, what a decoded view starts at is told of
    then; prose is not."""
    text = PROSE + feature
    for since in range(len(PROSE), len(text)):
        assert unmask.may_unmask(text, since)
    assert not unmask.may_unmask(PROSE * 2, len(PROSE))


# Pieces of what a view starts at, and of what comes near it without being it, for texts that hit and miss
# each alternative of ``unmask._VIEW_START``.
_VIEW_PIECES = [
    *PROSE.split(" "),
    *(
        "a ",
        "I ",
        " ",
        "  ",
        "\t",
        "\ta\tb",
        "\tc d\t",
        "a\t\tb  c\td\t",
        "\n",
        "\r",
        "\x0b",
        "\x1c",
        "\x00",
        "\x7f",
        "ab\n",
        "  abcd\n",
    ),
    *("%", "%4", "%41", "\\", "\\x4", "\\x41", "\\u{41}", "\\101", "&", "&amp", "&amp;", "&#x41;", "0", "0x"),
    *(
        "de",
        "ad",
        ":",
        "-",
        "de:ad:",
        "de:ad:be:ef:00:11:22:33:44:55:66",
        ":77",
        "de:ad:be:ef:00:11:22:33:44:55:66:77",
        "\n  abcd\n  efgh\n",
        "\nabc\n",
        "QUJDREVGR0hJSktM",
        "TU5PUFFS",
        "+",
        "/",
        "_",
        "=",
        "x",
        "X",
    ),
    *(".", ",", ";", "|", "*", "~", ". ", ", ", "a.", "b,"),
    *("\u00e9", "\u00a0", "\u2003", "\u200b", "\uff21", "\u0410"),
]


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(
    words=st.lists(st.sampled_from(PROSE.split(" ")), max_size=16),
    pieces=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=16), st.sampled_from(_VIEW_PIECES) | st.text(max_size=3)
        ),
        max_size=4,
    ),
    joiner=st.sampled_from([" ", "", "  ", "\t", ". "]),
    since=st.integers(min_value=0, max_value=200),
)
def test_what_may_start_a_view_is_told_as_the_one_regex_of_every_view_start_tells_it(
    words: list[str], pieces: list[tuple[int, str]], joiner: str, since: int
) -> None:
    """The check that runs RE2 over ASCII text before the regex of every view start says what that regex
    alone says, on prose that holds a few of the pieces of its alternatives, or of what comes near them."""
    for at, piece in pieces:
        words.insert(at, piece)
    text = joiner.join(words)
    since %= len(text) + 2
    alone = since < len(text) and (
        (not text.isascii() and unmask._DISGUISING.search(text, max(0, since - 1)) is not None)
        or unmask._VIEW_START.search(text, max(0, since - unmask.FEATURE_REACH + 1)) is not None
    )
    assert unmask.may_unmask(text, since) == alone


# How a number may be written in a list of character codes: bare, or zero-padded to three digits.
_CODE_SPELLINGS: list[Callable[[int], str]] = [str, lambda code: f"{code:03d}"]


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(
    codes=st.lists(
        st.tuples(st.integers(min_value=28, max_value=130), st.sampled_from(range(len(_CODE_SPELLINGS)))),
        min_size=4,
        max_size=24,
    ),
    glue=st.sampled_from([",", ", ", "\n", " ", ")+chr(", "||", ";\t", "],["]),
    lead=st.sampled_from(["", "codes: [", "0", "1", "x = "]),
    since=st.integers(min_value=0, max_value=400),
)
def test_every_run_of_codes_a_view_reads_is_told_of_by_the_delta_it_ends_in(
    codes: list[tuple[int, int]], glue: str, lead: str, since: int
) -> None:
    """Whatever the spelling of each code (zero-padded or not), a run the whole text's views read as
    character codes is told of by every delta its last number ends in."""
    run = glue.join(_CODE_SPELLINGS[spelling](code) for code, spelling in codes)
    text = PROSE + lead + run + " " + PROSE
    read = [view for view in unmask.views(text) if view.kind == unmask.CODES]
    if read:
        end = len(PROSE) + len(lead) + len(run)
        assert unmask.may_unmask(text, len(PROSE) + since % (end - len(PROSE)))


def test_a_keyword_split_over_deltas_and_runs_of_spaces_is_told_of(scanner: Scanner) -> None:
    """A keyword (or shape) is seen across the deltas it is split over and across runs of spaces,
    which the scanner reads as one."""
    watch = scanner.watch()
    assert watch.feed(PROSE) is None
    assert watch.feed("pass") is not None  # "pass" is a keyword itself
    watch = scanner.watch()
    assert watch.feed(PROSE + "the card 4539 5787") is not None
    watch = scanner.watch()
    assert watch.feed(PROSE + "45") is None
    assert watch.feed("39   ") is None
    assert watch.feed("  57") is not None  # "0000 00": digits apart by a run of spaces


@pytest.mark.parametrize(
    ("pattern", "holds"),
    [
        (r"(?<![A-Za-z0-9_])ghp_[A-Za-z0-9]{36}(?![A-Za-z0-9_])", False),
        (r"(?i)(?<![\w-])sk-[\w-]{20,}(?=\s)", False),  # a lookahead reads past the match only
        (r"(?<=key:\s)[\w-]{20,}", True),  # a lookbehind reads where the keyword may stand
        (r"AKIA[A-Z2-7]{16}|ASIA[^\W_]{16}", False),
        (r"\d{3}-\d{2}-\d{4}", False),
        (r"\d{4}[ -]?\d{4}", True),
        (r"key\s*=\s*\w+", True),
        (r"token:[^\"]+", True),  # a negated class holds whitespace
        (r"x\S+", True),  # the regex module's \S holds the separators U+001C to U+001F
        (r"x.y", True),
        (r"x[[:space:]]y", True),  # a POSIX class, which the standard parser misreads
        (r"(?:a|b\u3000)c", True),
        (r"a(?: ){0}b", False),
    ],
)
def test_a_pattern_holds_whitespace_where_a_match_can(pattern: str, holds: bool) -> None:
    assert holds_whitespace(pattern) is holds


def test_rules_read_as_holding_no_whitespace_match_their_examples_without_any(scanner: Scanner) -> None:
    """Where a rule's matches are read as holding no whitespace, its triggers stop mattering once their
    word is out: its examples bear that out."""
    for rule in scanner.rules:
        if holds_whitespace(rule.pattern.pattern):
            continue
        for example in rule.match_examples:
            for found in rule.pattern.finditer(example):
                assert not any(char.isspace() for char in found.group(0)), (rule.id, example)


@pytest.mark.parametrize("keyword", ["token", "api_key", "begin rsa private key"])
def test_a_keyword_is_told_of_by_the_delta_it_ends_in_after_any_text_split_anyhow(
    scanner: Scanner, keyword: str
) -> None:
    """However short the deltas before it, and wherever it is split, a keyword is told of by the delta
    that brings its last character."""
    for before in range(0, 40, 3):
        for size in range(1, 8):
            for split in range(1, len(keyword)):
                watch = scanner.watch()
                prefix = PROSE[:before]
                assert not any(watch.feed(prefix[at : at + size]) for at in range(0, len(prefix), size))
                watch.feed(keyword[:split])
                assert watch.feed(keyword[split:] + " ") is not None


def test_a_delta_near_tokens_of_token_formats_is_scanned_with_the_few_characters_before_it() -> None:
    """Tokens long enough to be of a format whose matches hold no whitespace (an "sk-..." word that is no
    key) make their deltas scanned, but only with the held text and the few characters such a rule looks
    back at, not the whole context."""
    counting = CountingScanner(_PACKS)
    redactor = StreamRedactor(counting)
    text = ("Use sk-this.one.is.only.a.long.made.up.word for the demo and the rest. " * 20)[:1200]
    for delta in _deltas(text, [12]):
        redactor.feed(delta)
    assert counting.scans > 0
    assert counting.longest <= RUN_LOOKBEHIND + 64  # the held token and a delta; the context is 256


@pytest.mark.parametrize(
    ("pattern", "confined"),
    [
        (r"(?<![A-Za-z0-9_])ghp_[A-Za-z0-9]{36}", True),
        (r"(?<=api_token=)[A-Za-z0-9]{20}", False),  # looks back further than a few characters
        (r"(?<=x+)[A-Za-z0-9]{20}", False),
        (r"[A-Za-z0-9]{20}(?=\s)", True),
        (r"key: [A-Za-z0-9]{20}", False),
    ],
)
def test_a_pattern_is_confined_to_runs_where_its_matches_and_lookbehinds_are(
    pattern: str, confined: bool
) -> None:
    assert confined_to_runs(pattern) is confined


LOOKBEHIND_PACK = """\
pack: lookbehind
threat: data_exfiltration
rules:
  - id: value-after-its-name
    description: a value whose name is read by a lookbehind, before the match
    regex: '(?<=pin:[ ])[A-Z0-9]{12}(?![A-Z0-9])'
    keywords: ["pin:"]
    severity: high
    owasp: LLM06
    examples:
      match: ["pin: 7QX2M9KD4ZT1"]
      no_match: ["pin: 7QX2"]
"""


def test_a_keyword_a_lookbehind_reads_before_whitespace_keeps_its_value_scanned(tmp_path: Path) -> None:
    """A rule may read its keyword in a lookbehind, before a space, and match only the value after it
    (no whitespace in the match, a lookbehind of a few characters): the value's deltas are scanned
    though the keyword went out before they came."""
    pack_file = tmp_path / "lookbehind.yaml"
    pack_file.write_text(LOOKBEHIND_PACK, encoding="utf-8")
    rules = Scanner([load_pack(pack_file)], timeout_s=60)
    assert not confined_to_runs(rules.rules[0].pattern.pattern)
    text = PROSE * 3 + "the pin: 7QX2M9KD4ZT1 and then " + PROSE
    for size in range(1, 9):
        deltas = _deltas(text, [size])
        released = _streamed(StreamRedactor(rules), deltas, [])
        assert released == _streamed(ScanningEveryDelta(rules), deltas, [])
        assert "".join(released[0]) == scan_and_redact(rules, text).text
        assert "7QX2M9" not in "".join(released[0])


def test_deltas_of_a_character_each_full_of_triggers_release_what_scanning_every_delta_releases() -> None:
    """A trigger in every delta, for hundreds of deltas (many triggers kept at once, then stood for by
    one), with secrets among them: the same text at every delta as when scanning every delta."""
    secret = next(example for example in SECRETS if example.startswith("ghp_"))
    text = "mail a@b.co or +1 or ask! " * 20 + secret + " then " + "@!+" * 60 + " " + PROSE
    deltas = _deltas(text, [1, 1, 2, 1])
    watching = _streamed(StreamRedactor(SCANNER), deltas, [])
    assert watching == _streamed(ScanningEveryDelta(SCANNER), deltas, [])


def test_every_example_of_every_rule_streams_as_when_scanning_every_delta() -> None:
    """Each rule's match and no-match examples, between words, fed a character, a few characters and a
    word at a time, release what the redactor scanning every delta releases: among them the values
    that hold no base64 run (e-mail addresses, dotted and colon-separated tokens), which only their
    keyword's run-length check stands between."""
    for example in SECRETS + NEAR_MISSES:
        text = f"Ask the team. {example} and then the rest."
        for deltas in (_deltas(text, [1]), _deltas(text, [5, 3]), re.findall(r"\S+\s*", text)):
            watching = _streamed(StreamRedactor(SCANNER), deltas, [])
            assert watching == _streamed(ScanningEveryDelta(SCANNER), deltas, []), example


LATE_KEYWORD_PACK = """\
pack: late
threat: data_exfiltration
rules:
  - id: dotted-code-then-its-name
    description: a value whose keyword closes it, longer than the characters a watch keeps
    regex: '(?<![a-z.])(?:[a-z][.]){20}XYZ(?![A-Za-z])'
    keywords: ["xyz"]
    severity: high
    owasp: LLM06
    examples:
      match: ["a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.XYZ"]
      no_match: ["a.b.c.XYZ"]
"""


def test_a_run_longer_than_the_watch_keeps_is_not_taken_for_too_short(tmp_path: Path) -> None:
    """A keyword at the end of a run longer than the characters the watch keeps: the run's start is not
    known to it, so the run is scanned however short the part it sees."""
    pack_file = tmp_path / "late.yaml"
    pack_file.write_text(LATE_KEYWORD_PACK, encoding="utf-8")
    rules = Scanner([load_pack(pack_file)], timeout_s=60)
    value = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.XYZ"
    text = f"{PROSE}{value} and then {PROSE}"
    start = len(PROSE)
    deltas = [text[:start], *_deltas(value[:-3], [10]), "XYZ and then ", PROSE]
    released = _streamed(StreamRedactor(rules), deltas, [])
    assert released == _streamed(ScanningEveryDelta(rules), deltas, [])
    assert "[REDACTED:dotted-code-then-its-name]" in "".join(released[0])


def test_text_announced_and_not_fed_before_the_next_announcement_leaves_nothing_unscanned() -> None:
    """``expect`` lets the watch read a burst before its deltas come. When a new burst is announced
    before all of the last one came, what the watch read may not be the stream (here "tok" was followed
    by "XYZ" in what it read, by "en" in the stream): the windows holding that place are scanned whole,
    and the value the keyword split over the two bursts names is redacted as when scanning every delta."""
    value = "Xk9mP2vL7qR4wZa8Tq3"  # no run of base64 long enough to be decoded

    def streamed(redactor: StreamRedactor) -> list[str]:
        released = [redactor.feed(PROSE)]
        redactor.expect("the api tok" + "XYZ")  # "XYZ" never comes
        released.append(redactor.feed("the api tok"))
        redactor.expect(f"en: {value} then ")
        released += [redactor.feed(f"en: {value} then "), redactor.feed(PROSE)]
        return [*released, redactor.flush()]

    watching = streamed(StreamRedactor(SCANNER))
    assert watching == streamed(ScanningEveryDelta(SCANNER))
    assert value not in "".join(watching)
