"""System-prompt leak: a completion that reproduces the request's system or developer prompt.

The prompt is cut into shingles (runs of ``shingle_words`` consecutive words, case and punctuation
ignored); a completion leaks when it contains at least ``min_shingles`` of them in a row and in the
prompt's order. Short prompts are ignored: "You are a helpful assistant." is in half the world's
completions and gives nothing away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

from proxy.model import Action, Finding, Severity, Threat

RULE_ID = "system-prompt-leak"
MARKER = f"[WITHHELD:{RULE_ID}]"
SHINGLE_WORDS = 5
MIN_SHINGLES = 3
MIN_PROMPT_WORDS = 12

_WORD = regex.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    start: int
    end: int


def _words(text: str) -> list[_Word]:
    return [_Word(match.group().casefold(), match.start(), match.end()) for match in _WORD.finditer(text)]


@dataclass(frozen=True, slots=True)
class _Run:
    """Shingles ``first``..``last`` of a text matched consecutive shingles of a prompt."""

    first: int
    last: int
    open: bool


class LeakDetector:
    def __init__(
        self,
        system_prompts: Sequence[str],
        *,
        shingle_words: int = SHINGLE_WORDS,
        min_shingles: int = MIN_SHINGLES,
        min_prompt_words: int = MIN_PROMPT_WORDS,
    ) -> None:
        if shingle_words < 1 or min_shingles < 1:
            raise ValueError("shingle_words and min_shingles must be positive")
        self.shingle_words = shingle_words
        self.min_shingles = min_shingles
        self._positions: dict[tuple[str, ...], list[int]] = {}
        self._prefixes: set[tuple[str, ...]] = set()
        self._word_prefixes: set[str] = set()
        base = 0
        for prompt in system_prompts:
            words = [word.text for word in _words(prompt)]
            if len(words) < max(min_prompt_words, shingle_words + min_shingles - 1):
                continue
            for index in range(len(words) - shingle_words + 1):
                shingle = tuple(words[index : index + shingle_words])
                self._positions.setdefault(shingle, []).append(base + index)
                self._prefixes.update(shingle[:length] for length in range(1, shingle_words))
            for word in words:
                self._word_prefixes.update(word[:length] for length in range(1, len(word) + 1))
            # A gap between prompts keeps a run from continuing from one prompt into the next.
            base += len(words) + 1

    @property
    def active(self) -> bool:
        """False when every prompt was too short to watch."""
        return bool(self._positions)

    def _runs(self, words: Sequence[str]) -> list[_Run]:
        """Maximal in-order runs of prompt shingles; ``open`` when the run reaches the last shingle."""
        runs: list[_Run] = []
        chains: dict[int, int] = {}  # prompt position of the latest shingle -> first text shingle of its run
        count = len(words) - self.shingle_words + 1
        for index in range(max(count, 0)):
            positions = self._positions.get(tuple(words[index : index + self.shingle_words]), ())
            extended = {position: chains.get(position - 1, index) for position in positions}
            for position, first in chains.items():
                if position + 1 not in extended:
                    runs.append(_Run(first, index - 1, open=False))
            chains = extended
        runs.extend(_Run(first, count - 1, open=True) for first in chains.values())
        return runs

    def _leaked_word_ranges(self, runs: Sequence[_Run]) -> list[tuple[int, int]]:
        """Word index ranges (inclusive) covered by long-enough runs, merged."""
        ranges = sorted(
            (run.first, run.last + self.shingle_words - 1)
            for run in runs
            if run.last - run.first + 1 >= self.min_shingles
        )
        merged: list[tuple[int, int]] = []
        for first, last in ranges:
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return merged

    def check(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text`` that reproduce a system prompt."""
        if not self.active:
            return []
        words = _words(text)
        ranges = self._leaked_word_ranges(self._runs([word.text for word in words]))
        return [(words[first].start, words[last].end) for first, last in ranges]

    def redact(self, text: str) -> tuple[str, list[tuple[int, int]]]:
        """``text`` with each leaked span replaced by the marker, and the spans."""
        spans = self.check(text)
        return _replace(text, spans), spans

    def findings(self, text: str, where: str = "completion") -> list[Finding]:
        return [leak_finding(end - start, where) for start, end in self.check(text)]

    def _hold_from(self, words: Sequence[_Word], text_length: int) -> int:
        """The first word index that more text could still turn into (or extend) a leak; len(words)
        when nothing needs holding. The last word is unfinished if it touches the end of the text."""
        unfinished = bool(words) and words[-1].end == text_length
        finished = [word.text for word in (words[:-1] if unfinished else words)]
        hold = len(words)
        for run in self._runs(finished):
            if run.open:
                hold = min(hold, run.first)
        for first in range(max(0, len(finished) - self.shingle_words + 1), len(finished)):
            if tuple(finished[first:]) in self._prefixes and (
                not unfinished or words[-1].text in self._word_prefixes
            ):
                hold = min(hold, first)
                break
        if unfinished and words[-1].text in self._word_prefixes:
            hold = min(hold, len(words) - 1)
        return hold


def _replace(text: str, spans: Sequence[tuple[int, int]]) -> str:
    pieces, cursor = [], 0
    for start, end in spans:
        pieces.append(text[cursor:start])
        pieces.append(MARKER)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def leak_finding(length: int, where: str) -> Finding:
    return Finding(
        threat=Threat.PROMPT_INJECTION,
        rule=RULE_ID,
        signal=f"completion reproduces {length} characters of the system prompt",
        severity=Severity.HIGH,
        action=Action.REDACT,
        where=where,
        owasp="LLM01",
        extra={"chars": length},
    )


@dataclass
class LeakFilter:
    """Stream form of :meth:`LeakDetector.redact`: ``feed`` returns the text safe to release now,
    ``flush`` the rest. Only text that could still become part of a leak is held back: an unfinished
    run of prompt shingles, or trailing words that begin one."""

    detector: LeakDetector
    where: str = "completion"
    findings: list[Finding] = field(default_factory=list)
    _pending: str = ""

    @property
    def found(self) -> bool:
        return bool(self.findings)

    def feed(self, text: str) -> str:
        if not self.detector.active:
            return text
        self._pending += text
        words = _words(self._pending)
        hold = self.detector._hold_from(words, len(self._pending))
        return self._release(words[hold].start if hold < len(words) else len(self._pending))

    def flush(self) -> str:
        return self._release(len(self._pending))

    def _release(self, end: int) -> str:
        ready, self._pending = self._pending[:end], self._pending[end:]
        spans = self.detector.check(ready)
        self.findings.extend(leak_finding(stop - start, self.where) for start, stop in spans)
        return _replace(ready, spans)
