"""Reading a value on over the lines it is wrapped on and a key whose prefix a cut parts costs work in
proportion to the text, whatever its lines hold: keys one a line, SHAs under keys, wrapped base64, pieces
of prefixes with cuts between them (bench/hostile_shapes.py's key line shapes). The work is counted (lines
looked at, prefix characters read, RE2 searches), not timed, so a loaded machine cannot make it pass."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from bench.hostile_shapes import key_line_shapes
from proxy.model import Threat
from proxy.scanning import relaxed, rulepack, unmask
from proxy.scanning.redact import StreamRedactor

SHAPES = key_line_shapes(random.Random(1))  # noqa: S311 - reproducible filler text, not cryptography
SCANNER_PACKS = [pack for pack in rulepack.load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
SCANNER = rulepack.Scanner(SCANNER_PACKS, timeout_s=60.0)
KIB = 1024
# Four times the text may cost a little more than four times the work: a fixed cost spread thinner
# grows less, and a text cut at a line's middle ends differently.
SLACK = 1.15


class _CountedPattern:
    """A compiled pattern whose matches are counted."""

    def __init__(self, pattern: Any, counts: Counter[str], name: str) -> None:
        self._pattern, self._counts, self._name = pattern, counts, name

    def match(self, *args: Any, **kwargs: Any) -> Any:
        self._counts[self._name] += 1
        return self._pattern.match(*args, **kwargs)


def _counted(function: Callable[..., Any], counts: Counter[str], name: str) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return function(*args, **kwargs)

    return counted


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What reading wrapped lines and cut prefixes does, by kind, as it is done."""
    counts: Counter[str] = Counter()
    monkeypatch.setattr(rulepack, "_WRAPPED_LINE", _CountedPattern(rulepack._WRAPPED_LINE, counts, "lines"))
    monkeypatch.setattr(unmask, "_cut_prefix", _counted(unmask._cut_prefix, counts, "prefix steps"))
    monkeypatch.setattr(unmask, "_ends_inside", _counted(unmask._ends_inside, counts, "open prefix steps"))
    monkeypatch.setattr(relaxed, "first_span", _counted(relaxed.first_span, counts, "RE2 searches"))
    return counts


def _scan_work(work: Counter[str], text: str) -> int:
    work.clear()
    budget = SCANNER.budget()
    SCANNER.scan(text, budget)
    assert not budget.timed_out
    return sum(work.values())


def _stream_work(work: Counter[str], text: str) -> int:
    work.clear()
    redactor = StreamRedactor(SCANNER, budget=rulepack.ScanBudget(600.0))
    for index in range(0, len(text), 12):
        redactor.feed(text[index : index + 12])
    redactor.flush()
    return sum(work.values())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_reading_wrapped_lines_and_cut_prefixes_grows_linearly_in_a_scan(
    work: Counter[str], shape: str
) -> None:
    small, large = (_scan_work(work, SHAPES[shape](size * KIB)) for size in (64, 256))
    assert large <= 4 * SLACK * small + 64, (small, large)


@pytest.mark.parametrize("shape", ["prefix fragments", "key lines", "SHAs under keys"])
def test_holding_cut_prefixes_back_grows_linearly_in_a_stream(work: Counter[str], shape: str) -> None:
    small, large = (_stream_work(work, SHAPES[shape](size * KIB)) for size in (4, 16))
    assert small and large <= 4 * SLACK * small + 64, (small, large)


def test_a_value_is_read_over_no_more_than_its_cap_of_wrapped_lines(work: Counter[str]) -> None:
    """Base64 of a thousand lines the width of its named first line: the value's lines read stop at the
    cap, and so does the work."""
    line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5"
    text = "SECRET_KEY=" + line[11:] + "\n" + "\n".join([line] * 1000) + "\n"
    assert rulepack.token_end(text, len("SECRET_KEY="), len(line)) == (len(line) + 1) * 65 - 1
    assert work["lines"] == rulepack._MAX_WRAPPED_LINES


# Text in which a cut prefix can be read every few characters ("a si a" of ASIA), in each cut.
PREFIX_LOOKALIKES = [
    "a si ",
    "a-si-",
    "As I a ",
    "'a' 'si' 'a' ",
    "a\u00a0si\u00a0",
    "gh p_ ",
    "a\u3000Si\u2003",
]


@pytest.mark.parametrize("unit", PREFIX_LOOKALIKES)
def test_prefixes_cut_close_together_share_one_view(unit: str) -> None:
    """However many cut prefixes a stretch holds, their views are one, no longer than the text: prose
    full of them costs one more reading of it, not a reading of a few kilobytes a prefix."""
    for size in (2 * KIB, 64 * KIB):
        text = (unit * size)[:size]
        views = unmask.split_views(text, SCANNER._split_prefixes, None)  # type: ignore[arg-type]
        assert len(views) == 1 and len(views[0].text) <= size


@pytest.mark.parametrize("unit", PREFIX_LOOKALIKES)
def test_what_reads_as_cut_prefixes_runs_out_of_no_budget(unit: str) -> None:
    """Scanned whole (64 KB) or streamed (2 KB in 12-character deltas), such text is read to its end in
    one view without a match: a text that made a scan run out of time would switch the rules off for what
    follows it. What that costs is counted above (one view of it); the time limit here is generous so
    that a loaded machine cannot decide the test."""
    text = (unit * KIB)[: 64 * KIB]
    budget = SCANNER.budget()
    assert SCANNER.scan(text, budget).matches == [] and not budget.timed_out
    streamed = text[: 2 * KIB]
    redactor = StreamRedactor(SCANNER, budget=rulepack.ScanBudget(600.0))
    out = "".join(redactor.feed(streamed[index : index + 12]) for index in range(0, len(streamed), 12))
    assert out + redactor.flush() == streamed
