"""The residual scan: strings no dialect reads as text, JSON escapes, split secrets and byte lists."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Threat
from proxy.scanning.redact import StreamRedactor
from proxy.scanning.residual import CONTEXT_CHARS, JsonScan, UnescapingFilter, canonical_escapes
from proxy.scanning.rulepack import Match, ScanBudget, Scanner, ScanResult, load_packaged_packs

AWS = "AKIAQWERTY234567ABCD"
PLACEHOLDER = "[REDACTED:aws-access-key-id]"


@functools.cache
def exfiltration_scanner() -> Scanner:
    packs = load_packaged_packs()
    return Scanner([pack for pack in packs if pack.threat is Threat.DATA_EXFILTRATION])


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return exfiltration_scanner()


def scan(
    scanner: Scanner, *, redacts: bool = True, known: Callable[[str], list[Match] | None] = lambda text: None
) -> JsonScan:
    return JsonScan(scanner, lambda rule: redacts, rewrites=redacts, known=known)


def test_unknown_fields_and_keys_are_redacted(scanner: Scanner) -> None:
    """Any string value and any key, at any depth, is scanned."""
    document = {"x_debug": f"key {AWS}", "meta": {AWS: [1, {"deep": [f"({AWS})"]}]}, "n": 3}
    filtered, changed = scan(scanner).filter("", document)
    assert changed and AWS not in json.dumps(filtered)
    assert filtered["x_debug"] == f"key {PLACEHOLDER}" and filtered["meta"][PLACEHOLDER][1]["deep"] == [
        f"({PLACEHOLDER})"
    ]


def test_handled_paths_are_left_to_the_dialect(scanner: Scanner) -> None:
    """A string the dialect filters itself is not touched (its own filter holds it back)."""
    document = {"delta": {"text": AWS}, "other": AWS}
    filtered, _ = scan(scanner).filter("", document, {("delta", "text")})
    assert filtered == {"delta": {"text": AWS}, "other": PLACEHOLDER}


def test_observe_mode_records_without_changing(scanner: Scanner) -> None:
    """When nothing is redacted the document is unchanged, and the finding is still recorded, with a
    location that never spells the secret."""
    residual = scan(scanner, redacts=False)
    filtered, changed = residual.filter("", {"a": {"b": AWS}})
    assert not changed and filtered == {"a": {"b": AWS}}
    assert [(found.where, found.rule.id) for found in residual.found] == [("a.b", "aws-access-key-id")]


@pytest.mark.parametrize(
    "arguments",
    [
        '{"k": "\\u0041KIAQWERTY234567ABCD"}',
        '{"k": "\\u0041\\u004b\\u0049\\u0041QWERTY234567ABCD"}',
        '{"k": "{\\"j\\": \\"\\\\u0041KIAQWERTY234567ABCD\\"}"}',
        '{"k": ["x", {"y": "AKIAQWERTY234567\\u0041BCD"}]}',
        '{"\\u0041KIAQWERTY234567ABCD": 1}',
        '{"k": "AKIA\\u0051\\u0057ERTY234567ABCD"',
    ],
)
def test_json_inside_strings_is_read_as_the_client_decodes_it(scanner: Scanner, arguments: str) -> None:
    """Tool arguments with escapes, nested JSON, an escaped key, or a truncated JSON text."""
    filtered, changed = scan(scanner).filter("", {"arguments": arguments})
    assert changed

    def decoded(value: str) -> str:
        try:
            inner = json.loads(value)
        except ValueError:
            return canonical_escapes(value)
        return json.dumps(inner, ensure_ascii=False) + "".join(
            decoded(text) for text in _strings(inner) if text.strip()[:1] in "{["
        )

    assert AWS not in decoded(filtered["arguments"])


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for child in value.values() for text in _strings(child)]
    if isinstance(value, list):
        return [text for child in value for text in _strings(child)]
    return []


def test_split_across_events_of_one_field_is_redacted_where_it_completes(scanner: Scanner) -> None:
    """A field keeps the tail of what it carried, whatever the event type."""
    residual = scan(scanner)
    first, _ = residual.filter("a.delta", {"delta": f"key {AWS[:9]}"})
    second, changed = residual.filter("b.delta", {"delta": f"{AWS[9:]} rest"})
    assert first == {"delta": f"key {AWS[:9]}"}
    assert changed and second == {"delta": f"{PLACEHOLDER} rest"}


def test_a_split_whose_start_left_in_an_earlier_event_says_so(scanner: Scanner) -> None:
    """The part sent before the event that completes a secret cannot be recalled: the finding says it
    was partly sent, so no record claims the redaction kept it from the receiver."""
    residual = scan(scanner)
    residual.filter("e", {"x": AWS[:9]})
    residual.filter("e", {"x": AWS[9:]})
    (found,) = residual.found
    assert found.sent_before


def test_a_split_within_one_document_was_not_sent_before(scanner: Scanner) -> None:
    """Two values of one body are redacted together: nothing of the secret left."""
    residual = scan(scanner)
    residual.filter("", {"parts": [AWS[:9], AWS[9:]]})
    assert residual.found and not any(found.sent_before for found in residual.found)


def test_split_across_values_of_one_document_is_redacted_in_each(scanner: Scanner) -> None:
    """Content parts or logprob tokens in one body: both parts go, nothing was sent yet."""
    tokens = [
        {"token": piece, "bytes": list(piece.encode())} for piece in ("key ", AWS[:4], AWS[4:12], AWS[12:])
    ]
    filtered, _ = scan(scanner).filter("", {"content": tokens})
    text = "".join(token["token"] for token in filtered["content"])
    spelled = b"".join(bytes(token["bytes"]) for token in filtered["content"]).decode()
    for piece in (AWS[:8], AWS[4:12], AWS[12:]):
        assert piece not in text and piece not in spelled


def test_a_field_read_on_from_another_still_sees_its_own_boundary(scanner: Scanner) -> None:
    """Joining a field's earlier text must not hide a secret that stands alone in the new one."""
    residual = scan(scanner)
    residual.filter("", {"id": "abc"})
    filtered, _ = residual.filter("", {"id": AWS})
    assert filtered == {"id": PLACEHOLDER}


def test_repeated_values_keep_their_redaction(scanner: Scanner) -> None:
    """A secret repeated in the same field is redacted each time it comes."""
    residual = scan(scanner)
    residual.filter("e", {"id": AWS, "model": "m"})
    for _ in range(3):
        filtered, changed = residual.filter("e", {"id": AWS, "model": "m"})
        assert changed and filtered == {"id": PLACEHOLDER, "model": "m"}


def test_values_repeated_after_the_same_text_are_not_scanned_again(scanner: Scanner) -> None:
    """Ids, types and model names repeated in every event are scanned only until their field's text is
    nothing but their repeats; from then on an event of them scans nothing and moves no field's text."""
    residual = scan(scanner)
    event = {"id": "chatcmpl-9x2", "object": "chat.completion.chunk", "model": "gpt-4o", "tier": ""}
    for _ in range(CONTEXT_CHARS // len("gpt-4o") + 2):
        residual.filter("chunk", json.loads(json.dumps(event)))
    settled = residual.generation
    for _ in range(5):
        assert residual.filter("chunk", json.loads(json.dumps(event))) == (event, False)
    assert residual.generation == settled and not residual.found


class CountingScanner(Scanner):
    """A scanner that counts the texts it scans."""

    scans = 0

    def scan(self, text: str, budget: ScanBudget, *, merge: bool = True) -> ScanResult:
        self.scans += 1
        return super().scan(text, budget, merge=merge)


def test_a_stream_reads_the_quiet_values_other_streams_read(scanner: Scanner) -> None:
    """Streams that share what they read quietly scan the same types and model names once: a later
    stream scans only its own id, and finds and sends what a stream of its own finds and sends."""
    counting = CountingScanner(
        [pack for pack in load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
    )
    shared: set[tuple[str, str]] = set()

    def stream(number: int, residual: JsonScan) -> list[object]:
        envelope = {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk", "model": "gpt-4o"}
        halves = [AWS[:9], AWS[9:]]
        return [residual.filter("chunk", {**envelope, "n": halves[step % 2]}) for step in range(60)]

    first = stream(1, JsonScan(counting, lambda rule: True, quiet=shared))
    start = counting.scans
    alone = stream(2, JsonScan(counting, lambda rule: True))
    middle = counting.scans
    later = JsonScan(counting, lambda rule: True, quiet=shared)
    assert stream(2, later) == alone and stream(1, JsonScan(scanner, lambda rule: True)) == first
    assert counting.scans - middle < middle - start and later.found


def test_a_long_text_read_to_nothing_is_not_scanned_again_in_other_fields(scanner: Scanner) -> None:
    """A stream's closing events each carry the whole answer in a field of their own: a long text found
    clean as the first of one field is not scanned again as the first of another, while one holding a
    secret is redacted wherever it comes, and one that follows a field's earlier text is read on from it."""
    counting = CountingScanner(
        [pack for pack in load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
    )
    residual = JsonScan(counting, lambda rule: True)
    answer = "The invoice total does not match the order confirmation. " * 10
    residual.filter("response.output_text.done", {"text": answer, "part": None, "item": None})
    scans = counting.scans
    closing = [("response.content_part.done", {"part": {"text": answer}}), ("done", {"item": [answer]})]
    for kind, event in closing:
        assert residual.filter(kind, event) == (event, False)
    assert counting.scans == scans
    leaked = answer + AWS
    for kind, event in [("a", {"text": leaked}), ("b", {"part": {"text": leaked}})]:
        filtered, changed = residual.filter(kind, event)
        assert changed and AWS not in json.dumps(filtered)
    residual.filter("c", {"text": answer[:-4]})
    filtered, changed = residual.filter("c", {"text": AWS[:8]})
    residual.filter("c", {"text": answer})
    assert counting.scans > scans + 3 and not residual.timed_out


REPEATING_SPLITS = [
    # A token sent a letter at a time: a doubled letter comes as two equal events.
    list("ghp_aaB2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    # Two equal halves.
    ["AKIAQWERTY", "AKIAQWERTY"],
    # A doubled last letter ends the secret, and the stream.
    ["ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7", "R", "R"],
    # A doubled letter in the middle, then the rest at once.
    ["key ghp_a1B2c3D4e5F6g7H8", "i", "i", "9J0k1L2m3N4o5P6q7R end"],
]


@pytest.mark.parametrize("pieces", REPEATING_SPLITS)
@pytest.mark.parametrize("between", [False, True])
def test_a_value_repeating_the_fields_last_one_is_read_on_from_its_text(
    scanner: Scanner, pieces: list[str], between: bool
) -> None:
    """A field's values across events are read as one text even where a value repeats the last one (a
    client that joins them reads the secret): it is found where it completes, and what is left of it
    there is redacted; with events of another type between them too."""
    residual = scan(scanner)
    sent = []
    for piece in pieces:
        event = {"object": "chat.completion.chunk", "choices": [{"delta": {"future_text": piece}}]}
        filtered, _ = residual.filter("chunk", event)
        sent.append(filtered["choices"][0]["delta"]["future_text"])
        if between:
            residual.filter("ping", {"choices": [{"delta": {"future_text": ""}}]})
    assert residual.found
    joined = "".join(pieces)
    secret = joined.split()[1] if " " in joined else joined
    assert secret not in "".join(sent)


DOUBLED = "ghp_aaB2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SPLIT_FORMS = [
    DOUBLED,
    "AKIAQWERTYAKIAQWERTY",
    " ".join(DOUBLED),
    base64.b64encode(f"token={DOUBLED}".encode()).decode(),
    "".join(f"%{ord(char):02X}" for char in DOUBLED),
    "".join(f"\\u{ord(char):04x}" for char in DOUBLED),
]
"""Secrets with a doubled letter or two equal halves, plain, letter-spaced, in base64, percent-encoded
and as JSON escapes the receiver decodes again."""


@settings(deadline=None)  # the first example builds what the scanner makes once per process
@given(st.sampled_from(SPLIT_FORMS), st.data())
def test_any_split_of_a_secret_in_one_field_is_found(secret: str, data: st.DataObject) -> None:
    """Whatever the cuts of a secret over the events of one field, in any of its spellings, equal pieces
    in a row included, the joint text is read and the secret found."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(secret) - 1), max_size=len(secret) - 1)))
    pieces = [secret[low:high] for low, high in zip([0, *cuts], [*cuts, len(secret)], strict=True)]
    residual = scan(exfiltration_scanner())
    for piece in pieces:
        residual.filter("delta", {"delta": {"future_text": piece}, "type": "delta"})
    assert residual.found, pieces


def test_documents_given_as_alike_read_as_each_read_alone(scanner: Scanner) -> None:
    """Documents named alike (the events of one shape: the same keys and strings but for the text the
    dialect filters) are read from the strings collected of the first of them: a value repeated in each
    still completes a secret in its field's text, redacted where it completes, as without the token."""

    def read(alike: str | None) -> tuple[list[tuple[Any, bool]], list[tuple[str, str]]]:
        residual = scan(scanner)
        documents = [
            {"type": "delta", "meta": {"part": "AKIAQWERTY", "count": count}, "text": f"word{count}"}
            for count in range(4)
        ]
        filtered = [residual.filter("delta", document, {("text",)}, alike=alike) for document in documents]
        return filtered, [(found.where, found.rule.id) for found in residual.found]

    alone, found = read(None)
    assert found and alone[1][1] and alone[1][0]["meta"]["part"] != "AKIAQWERTY"
    assert read("one shape") == (alone, found)


@given(st.text())
def test_canonical_escapes_keep_what_json_decodes(text: str) -> None:
    """Plain spelling never changes what a JSON reader decodes from a JSON text; inside a nested one, only
    what the inner reader decodes, so text with escapes of its own is left out of that half."""
    for spelled in (json.dumps(text), json.dumps(text, ensure_ascii=False)):
        if "\\" not in text:
            assert json.loads(canonical_escapes(spelled)) == text
    nested = json.dumps(json.dumps(text))
    assert json.loads(json.loads(canonical_escapes(nested))) == text


def test_unescaping_filter_holds_an_escape_split_across_deltas(scanner: Scanner) -> None:
    """``\\u00`` + ``41KIA...``: the escape is completed before the redactor reads it."""
    text = '{"k": "\\u0041KIAQWERTY234567ABCD"}'
    for cut in range(len(text)):
        unescaping = UnescapingFilter(StreamRedactor(scanner))
        out = unescaping.feed(text[:cut]) + unescaping.feed(text[cut:]) + unescaping.flush()
        assert out == '{"k": "' + PLACEHOLDER + '"}', cut


def test_continued_channel_redacts_from_its_start_and_reports_the_overlap(scanner: Scanner) -> None:
    """A channel that reads on from another redacts its part of a split secret and says how much of
    the other channel's text the secret covered."""
    redactor = StreamRedactor(scanner)
    redactor.continue_from(f"key {AWS[:9]}")
    out = "".join(redactor.feed(piece) for piece in (AWS[9:13], AWS[13:], " rest")) + redactor.flush()
    assert out == f"{PLACEHOLDER} rest"
    assert redactor.continued() == (9, PLACEHOLDER)


def test_continued_channel_still_reads_a_secret_of_its_own(scanner: Scanner) -> None:
    """The other channel's last word glued to this one's first must not hide a secret here."""
    redactor = StreamRedactor(scanner)
    redactor.continue_from("word abc")
    out = "".join(redactor.feed(piece) for piece in (AWS[:10], AWS[10:], " more")) + redactor.flush()
    assert out == f"{PLACEHOLDER} more" and redactor.continued() is None


def read_before(scanner: Scanner, texts: list[str]) -> dict[str, list[Match]]:
    """What an inspector's own scans of these texts found (the matches ``known`` hands a residual scan)."""
    return {text: scanner.scan_alone(text).matches for text in texts}


def residual_outcome(
    residual: JsonScan, document: object
) -> tuple[object, bool, list[tuple[str, str, str, bool]]]:
    filtered, changed = residual.filter("", document)
    found = [(item.where, item.rule.id, item.fingerprint, item.sent_before) for item in residual.found]
    return filtered, changed, found


def test_strings_read_before_give_what_scanning_them_again_gives(scanner: Scanner) -> None:
    """A value whose matches the inspector already holds is not scanned again, and the redacted body,
    the findings and their order are those of a scan that reads it again: with every example secret of
    the packs, alone and among other values, in observe and enforce mode."""
    examples = [example for rule in scanner.rules for example in rule.match_examples][:120]
    for index in range(0, len(examples), 3):
        values = examples[index : index + 3]
        document = {
            "id": "chatcmpl-1",
            "choices": [{"message": {"content": f"here: {values[0]} done"}}],
            "items": [f"{value} and more" for value in values[1:]] + ["plain text", values[0]],
            "meta": {"note": values[-1]},
        }
        texts = [f"here: {values[0]} done", "plain text", values[0], f"{values[-1]} and more"]
        known = read_before(scanner, texts)
        for redacts in (True, False):
            again = residual_outcome(scan(scanner, redacts=redacts), json.loads(json.dumps(document)))
            reused = scan(scanner, redacts=redacts, known=known.get)
            assert residual_outcome(reused, json.loads(json.dumps(document))) == again, values


def test_a_value_after_others_is_read_as_it_is_read_alone() -> None:
    """Every example of every rule (optional packs too), as a value or a key that follows others in a
    document, is found and redacted as a scan of it alone finds it: what a scan puts between the values
    it reads together is no part of either, even for a rule that wants its match to start a text or
    follow a space or a quote."""
    packs = load_packaged_packs()
    scanner = Scanner(
        [pack.with_everything_enabled() for pack in packs if pack.threat is Threat.DATA_EXFILTRATION],
        timeout_s=5,  # a loaded machine times no rule out in one of the two scans only
    )
    for rule in scanner.rules:
        for example in rule.match_examples:
            document = {"id": "x", "object": "thing", "value": example, "keys": {"a": 1, example: 2}}
            alone = read_before(scanner, ["x", "thing", example, "a", "id", "object", "value", "keys"])
            together = residual_outcome(scan(scanner), json.loads(json.dumps(document)))
            assert together[2], (rule.id, example)
            assert residual_outcome(scan(scanner, known=alone.get), json.loads(json.dumps(document))) == (
                together
            ), (rule.id, example)


MIXED_VALUES = [
    AWS,
    "plain",
    f"x {AWS} y",
    "ghp_" + "a1B2" * 9,
    "",
    "a@b.example",
    AWS[:10],
    AWS[10:],
    " ".join(AWS),
    base64.b64encode(f"key={AWS}".encode()).decode(),
    "call me at +1 415 555 0134",
]


@given(st.lists(st.sampled_from(MIXED_VALUES), max_size=8), st.integers(0, 3))
def test_any_mix_of_known_and_new_values_gives_the_same_scan(values: list[str], step: int) -> None:
    """Whichever values are known (split secrets, encodings and letter-spacing included), the outcome
    is that of scanning them all."""
    scanner = exfiltration_scanner()
    document = {"values": values, "nested": {"last": values[-1] if values else ""}}
    known = read_before(scanner, values[::step] if step else [])
    again = residual_outcome(scan(scanner), json.loads(json.dumps(document)))
    reused = scan(scanner, known=known.get)
    assert residual_outcome(reused, json.loads(json.dumps(document))) == again


@pytest.mark.parametrize("before", [0, 3, 40])
def test_a_secret_split_over_many_items_of_a_long_list_is_redacted_in_each(
    scanner: Scanner, before: int
) -> None:
    """A secret whose pieces are the last items of a list, after items of other text, is found and
    redacted in every item it touches, however many items come before it; those stay as sent."""
    secret = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    pieces = [secret[index : index + 8] for index in range(0, len(secret), 8)]
    others = [f"line {index} of the log. " for index in range(before)]
    document = {"lines": [*others, "token ", *pieces]}
    filtered, changed = scan(scanner).filter("", json.loads(json.dumps(document)))
    assert changed
    assert filtered["lines"][: before + 1] == [*others, "token "]
    assert not any(piece in item for piece in pieces for item in filtered["lines"][before + 1 :])
