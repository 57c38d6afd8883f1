"""Prompt-injection detection: a phrase rule pack plus a small learned classifier, over normalised text.

Two tiers, either of which raises a finding:

- the rules of ``rules/injection.yaml`` (instruction overrides, role resets, jailbreak personas, prompt
  extraction, chat-template tokens, forged system markers ...), run on every normal form that
  ``proxy.normalize`` produces, so invisible characters, look-alike letters, letter spacing and encoded
  segments do not hide a phrase;
- a logistic regression over hashed character and word n-grams (``rules/injection_model.json``, trained
  by ``bench/train_injection.py``), which generalises to phrasings no rule lists. Inference needs only the
  standard library and the JSON file.

Text that reaches the model from tools or documents (indirect injection) also raises a
``context_poisoning`` finding. Findings name the rule or the classifier score, never the text.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import operator
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from typing import Any

from proxy.exchange import Source
from proxy.model import SEVERITY_ORDER, Action, Finding, Severity, Threat
from proxy.normalize import normalize
from proxy.rulepack import RULES_PACKAGE, RulePack, Scanner, load_pack, pack_path

OWASP = "LLM01"
CLASSIFIER_RULE = "injection-classifier"
INDIRECT_SOURCES = frozenset({Source.TOOL_RESULT, Source.RETRIEVED_DOCUMENT, Source.TOOL_DESCRIPTION})
INDIRECT_ONLY_RULE_PREFIX = "injection-indirect-"
"""Rules about "your response" or "the following code": an attack inside read content, an ordinary
request when the user types it."""

MODEL_FILE = "injection_model.json"

# The classifier reads windows, not whole texts: an instruction planted in a long document is a small
# part of it, and a window keeps its share of the features large enough to count. Windows overlap by
# half so a planted sentence always lies whole inside one. Past MAX_CLASSIFIER_CHARS of a text the
# classifier stops (the rules still read everything): its cost is linear in what it reads, and long
# tool results must not cost more than a bounded number of window scores.
WINDOW_CHARS = 400
WINDOW_STEP = 200
MAX_CLASSIFIER_CHARS = 24_000

_SPACES = re.compile(r"\s+")
_CHAR_PREFIX_CRC = zlib.crc32(b"c")
_WORD_PREFIX_CRC = zlib.crc32(b"w")
_WORDS = re.compile(r"\w+")


def window_spans(length: int) -> list[tuple[int, int]]:
    """(start, end) of the windows the classifier reads in a text of ``length`` characters."""
    length = min(length, MAX_CLASSIFIER_CHARS)
    if length <= WINDOW_CHARS:
        return [(0, length)]
    last_start = length - WINDOW_CHARS
    spans = [(start, start + WINDOW_CHARS) for start in range(0, last_start, WINDOW_STEP)]
    spans.append((last_start, length))
    return spans


def _ngrams(items: Sequence[str], size: int) -> Iterable[str]:
    """The runs of ``size`` consecutive items (characters of a string, or words), joined by spaces
    for words as in training."""
    if size == 1:
        return items
    return map(
        "".join if isinstance(items, str) else " ".join,
        zip(*(items[offset:] for offset in range(size)), strict=False),
    )


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How text becomes a sparse vector; stored in the model file so training and inference agree."""

    dim: int
    char_ngrams: tuple[int, ...]
    word_ngrams: tuple[int, ...]

    def features(self, text: str) -> dict[int, float]:
        """Hashed presence of character n-grams (spaces collapsed) and word n-grams, scaled to unit
        length so short prompts and long windows weigh alike. ``text`` is already normalised."""
        squeezed = " " + _SPACES.sub(" ", text).strip() + " "
        grams: set[str] = set()
        for size in self.char_ngrams:
            grams.update("c" + squeezed[index : index + size] for index in range(len(squeezed) - size + 1))
        words = _WORDS.findall(squeezed)
        for size in self.word_ngrams:
            grams.update(
                "w" + " ".join(words[index : index + size]) for index in range(len(words) - size + 1)
            )
        if not grams:
            return {}
        buckets: dict[int, float] = {}
        for gram in grams:
            bucket = zlib.crc32(gram.encode("utf-8")) % self.dim
            buckets[bucket] = buckets.get(bucket, 0.0) + 1.0
        norm = math.sqrt(sum(value * value for value in buckets.values()))
        return {bucket: value / norm for bucket, value in buckets.items()}


@dataclass(frozen=True, slots=True)
class InjectionClassifier:
    """Two thresholds, each the score that keeps false positives at or under 1 % in cross-validation on
    its own benign population: requests users type (which are often imperatives addressed to the model)
    and documents tools return (where such an imperative is itself the anomaly)."""

    spec: FeatureSpec
    weights: tuple[float, ...]
    bias: float
    threshold_direct: float
    threshold_indirect: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InjectionClassifier:
        spec = FeatureSpec(
            dim=int(data["dim"]),
            char_ngrams=tuple(int(size) for size in data["char_ngrams"]),
            word_ngrams=tuple(int(size) for size in data["word_ngrams"]),
        )
        weights = tuple(float(weight) for weight in data["weights"])
        if len(weights) != spec.dim:
            raise ValueError(f"model has {len(weights)} weights for a dimension of {spec.dim}")
        return cls(
            spec,
            weights,
            float(data["bias"]),
            float(data["threshold_direct"]),
            float(data["threshold_indirect"]),
        )

    @classmethod
    def load(cls, path: Path) -> InjectionClassifier:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def score(self, text: str) -> float:
        """The highest window score of a normalised text."""
        return max(self.window_scores(text))

    def window_scores(self, text: str) -> list[float]:
        """The probability that each window (``window_spans``) of a normalised text carries an injection:
        the logistic regression over ``spec.features`` of the window.

        Windows overlap by half, so instead of building each window's features from scratch every
        n-gram of the text is made and hashed once. A window's squeezed form (spaces collapsed,
        stripped, one space each side) is a slice of the whole text's collapsed form between two
        spaces: its character n-grams are those starting in its first part (up to where the next
        window starts) and in its second part, plus the few touching the two spaces. The second part
        of one window is most of the first part of the next, so each part's set of distinct n-grams
        and the sum of their weights are made once and shared.
        """
        text = text[:MAX_CLASSIFIER_CHARS]
        spans = window_spans(len(text))
        collapsed, cores = _collapsed_cores(text, spans)
        grams_by_size = [(size, list(_ngrams(collapsed, size))) for size in self.spec.char_ngrams]
        longest = max(self.spec.char_ngrams, default=0)
        edges: list[set[str]] = []
        word_sets: list[set[str]] = []
        for low, high in cores:
            padded = " " + collapsed[low:high] + " "
            edges.append(
                {
                    part
                    for size, _ in grams_by_size
                    if len(padded) >= size
                    for part in (padded[:size], padded[-size:])
                }
            )
            words = _WORDS.findall(collapsed, low, high)
            word_sets.append(set().union(*(_ngrams(words, size) for size in self.spec.word_ngrams)))
        all_chars = set().union(*edges)
        for _, grams in grams_by_size:
            all_chars.update(grams)
        char_weight, word_weight, char_buckets, word_buckets = self._hash(all_chars, set().union(*word_sets))
        shared_chars = char_buckets.keys()
        shared_words = word_buckets.keys()

        def weight_of(grams: Iterable[str]) -> float:
            return sum(map(char_weight.__getitem__, grams))

        def starting_in(low: int, ends: Sequence[int]) -> set[str]:
            """Distinct n-grams of each size starting from ``low`` up to that size's end."""
            found: set[str] = set()
            for (_, grams), end in zip(grams_by_size, ends, strict=True):
                found.update(grams[low:end])
            return found

        scores: list[float] = []
        # The second part of the window before, when it is the start of this window's first part.
        carried: tuple[set[str], float, set[str], list[int]] | None = None
        for index, (low, high) in enumerate(cores):
            ends = [max(low, high - size + 1) for size, _ in grams_by_size]
            middle = cores[index + 1][0] if index + 1 < len(cores) else -1
            if low <= middle <= high - longest + 1:
                if carried is not None:
                    first, first_weight, first_shared, carried_ends = carried
                    tail = set()
                    for (_, grams), start in zip(grams_by_size, carried_ends, strict=True):
                        tail.update(grams[start:middle])
                    tail.difference_update(first)
                    first |= tail
                    first_weight += weight_of(tail)
                    first_shared |= tail & shared_chars
                else:
                    first = starting_in(low, [middle] * len(grams_by_size))
                    first_weight = weight_of(first)
                    first_shared = first & shared_chars
                second = starting_in(middle, ends)
                second_weight = weight_of(second)
                second_shared = second & shared_chars
                both = first & second
                chars_weight = first_weight + second_weight - weight_of(both)
                chars_count = len(first) + len(second) - len(both)
                colliding_chars = first_shared | second_shared
                own_edges = {edge for edge in edges[index] if edge not in first and edge not in second}
                # The next window's first part starts where this one's second part does; it carries
                # on if this second part ends before that first part does.
                next_middle = cores[index + 2][0] if index + 2 < len(cores) else -1
                carried = (
                    (second, second_weight, second_shared, ends)
                    if all(end <= next_middle for end in ends)
                    else None
                )
            else:
                whole = starting_in(low, ends)
                chars_weight = weight_of(whole)
                chars_count = len(whole)
                colliding_chars = whole & shared_chars
                own_edges = edges[index] - whole
                carried = None
            word_grams = word_sets[index]
            count = chars_count + len(own_edges) + len(word_grams)
            total = self.bias
            if count:
                # Each bucket counts its distinct n-grams: the dot product with the weights is the sum
                # of the n-grams' weights, the squared norm their number plus what collisions add.
                dot = chars_weight + weight_of(own_edges) + sum(map(word_weight.__getitem__, word_grams))
                squares = count
                colliding_chars |= own_edges & shared_chars
                colliding_words = word_grams & shared_words
                if colliding_chars or colliding_words:
                    per_bucket = Counter(map(char_buckets.__getitem__, colliding_chars))
                    per_bucket.update(map(word_buckets.__getitem__, colliding_words))
                    in_bucket = per_bucket.values()
                    squares += (
                        sum(map(operator.mul, in_bucket, in_bucket))
                        - len(colliding_chars)
                        - len(colliding_words)
                    )
                total += dot / math.sqrt(squares)
            scores.append(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, total)))))
        return scores

    def _hash(
        self, chars: set[str], words: set[str]
    ) -> tuple[dict[str, float], dict[str, float], dict[str, int], dict[str, int]]:
        """The weight of each character and word n-gram, hashed as ``features`` hashes it (the prefixed
        UTF-8 string), and the bucket of those whose bucket holds another n-gram of the text: only
        windows holding two of these need their squared norm counted bucket by bucket."""
        char_list, word_list = list(chars), list(words)
        # crc32 of the prefixed string, continuing from the prefix's crc instead of concatenating.
        dim = repeat(self.spec.dim)
        char_crcs = map(zlib.crc32, map(str.encode, char_list), repeat(_CHAR_PREFIX_CRC))
        word_crcs = map(zlib.crc32, map(str.encode, word_list), repeat(_WORD_PREFIX_CRC))
        char_buckets = list(map(operator.mod, char_crcs, dim))
        word_buckets = list(map(operator.mod, word_crcs, dim))
        per_bucket = Counter(char_buckets)
        per_bucket.update(word_buckets)
        shared = set(compress(per_bucket.keys(), map((1).__lt__, per_bucket.values())))
        return (
            dict(zip(char_list, map(self.weights.__getitem__, char_buckets), strict=True)),
            dict(zip(word_list, map(self.weights.__getitem__, word_buckets), strict=True)),
            dict(compress(zip(char_list, char_buckets, strict=True), map(shared.__contains__, char_buckets))),
            dict(compress(zip(word_list, word_buckets, strict=True), map(shared.__contains__, word_buckets))),
        )

    def threshold(self, source: Source) -> float:
        return self.threshold_indirect if source in INDIRECT_SOURCES else self.threshold_direct


def _collapsed_cores(text: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list[tuple[int, int]]]:
    """The text with whitespace runs collapsed to one space, and for each window the slice of it that
    is the window's own collapsed and stripped form (empty for a blank window)."""
    bounds: list[tuple[int, int]] = []
    for start, end in spans:
        window = text[start:end]
        left = window.lstrip()
        bounds.append((end - len(left), start + len(window.rstrip())) if left else (0, 0))
    # Both bounds sit next to a non-space character, so no whitespace run crosses them and the
    # collapsed length up to a bound adds up piece by piece.
    offsets: dict[int, int] = {}
    position = offset = 0
    for point in sorted({point for bound in bounds for point in bound}):
        offset += len(_SPACES.sub(" ", text[position:point]))
        position = point
        offsets[point] = offset
    collapsed = _SPACES.sub(" ", text[: max(end for _, end in bounds)])
    return collapsed, [(offsets[first], offsets[last]) for first, last in bounds]


def _severity_for_score(score: float) -> Severity:
    return Severity.HIGH if score >= 0.9 else Severity.MEDIUM


class InjectionDetector:
    def __init__(self, packs: Iterable[RulePack], classifier: InjectionClassifier | None) -> None:
        self._scanner = Scanner(packs)
        self.classifier = classifier

    def detect(self, text: str, where: str, source: Source) -> list[Finding]:
        """Findings for one piece of prompt text: at most one per rule, plus one for the classifier."""
        if not text.strip():
            return []
        indirect = source in INDIRECT_SOURCES
        normalized = normalize(text)
        signals = sorted(normalized.signals)
        hits: dict[str, Severity] = {}
        for form in normalized.texts:
            for match in self._scanner.scan(form, merge=False).matches:
                rule = match.rule
                if rule.id.startswith(INDIRECT_ONLY_RULE_PREFIX) and not indirect:
                    continue
                hits[rule.id] = rule.severity
        score = 0.0
        if self.classifier is not None:
            score = max(self.classifier.score(form) for form in normalized.texts)
        over_threshold = self.classifier is not None and score >= self.classifier.threshold(source)
        if not hits and not over_threshold:
            return []

        action = Action.FLAG if indirect else Action.BLOCK
        extra: dict[str, Any] = {"source": str(source)}
        if signals:
            extra["obfuscation"] = signals
        findings = [
            Finding(
                threat=Threat.PROMPT_INJECTION,
                rule=rule_id,
                signal=f"rule {rule_id}" + (f" after {', '.join(signals)}" if signals else ""),
                severity=severity,
                action=action,
                where=where,
                owasp=OWASP,
                extra=extra,
            )
            for rule_id, severity in hits.items()
        ]
        if over_threshold:
            findings.append(
                Finding(
                    threat=Threat.PROMPT_INJECTION,
                    rule=CLASSIFIER_RULE,
                    signal=f"classifier score {score:.2f}",
                    severity=_severity_for_score(score),
                    action=action,
                    where=where,
                    owasp=OWASP,
                    extra=extra,
                )
            )
        if indirect:
            strongest = max(findings, key=lambda finding: SEVERITY_ORDER[finding.severity])
            findings.append(
                Finding(
                    threat=Threat.CONTEXT_POISONING,
                    rule=strongest.rule,
                    signal=f"injection in {source} content: {strongest.signal}",
                    severity=strongest.severity,
                    action=Action.FLAG,
                    where=where,
                    owasp=OWASP,
                    extra=extra,
                )
            )
        return findings


def load_default_classifier() -> InjectionClassifier:
    """The packaged model (``egressguard_rules/injection_model.json``), or the checkout's rules/ copy."""
    try:
        resource = importlib.resources.files(RULES_PACKAGE).joinpath(MODEL_FILE)
        return InjectionClassifier.from_dict(json.loads(resource.read_text(encoding="utf-8")))
    except ModuleNotFoundError:
        return InjectionClassifier.load(pack_path("injection").with_name(MODEL_FILE))


def load_default() -> InjectionDetector:
    """The detector with the packaged injection rules and model."""
    return InjectionDetector([load_pack(pack_path("injection"))], load_default_classifier())
