"""Reading tokens turned back (a key written backwards or in rot13) costs work that grows with the text,
not with the turned prefixes in it: the hits of one token share a view, and a text crafted to hold more
turned tokens than are read is out of time, never passed as read."""

from __future__ import annotations

import re

from proxy.scanning import rulepack, unmask
from tests.test_rewritten_secrets import DETECTORS, GITHUB_TOKEN, _streamed

SCANNER = DETECTORS.sensitive


def _reversed_hits(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    return [(hit.start(), hit.end(), (unmask.REVERSED,)) for hit in re.finditer("_phg", text)]


def test_one_token_of_turned_prefixes_is_one_view_no_longer_than_itself() -> None:
    text = "_phg-" * 4000
    views = list(unmask.turned_views(text, _reversed_hits(text), None))
    assert len(views) == 1
    assert len(views[0].text) <= len(text)


def test_spaced_tokens_of_turned_prefixes_are_a_view_each_reading_each_character_once() -> None:
    text = ("_phg-" * 204 + " ") * 20
    views = list(unmask.turned_views(text, _reversed_hits(text), None))
    assert len(views) == 20
    assert sum(len(view.text) for view in views) <= len(text)


def test_a_reversed_key_in_a_long_token_of_turned_prefixes_is_found() -> None:
    carried = GITHUB_TOKEN[::-1]
    text = "_phg-" * 1000 + "-" + carried + " end"
    result = SCANNER.scan_alone(text)
    assert result.timed_out == ()
    start = text.index(carried)
    [match] = result.matches
    assert match.rule.id == "github-pat" and match.disguise == unmask.REVERSED
    assert match.start <= start and start + len(carried) <= match.end


def test_a_streamed_answer_of_turned_prefixes_passes_untouched() -> None:
    text = "_phg-" * 400
    assert _streamed(text, 12) == text


def test_a_text_holding_more_turned_tokens_than_are_read_is_out_of_time() -> None:
    most = "_phg " * rulepack.MAX_TURNED_VIEWS
    assert SCANNER.scan_alone(most).timed_out == ()
    result = SCANNER.scan_alone(most + "_phg ")
    assert "secrets-unread" in result.timed_out
    assert result.found == []
