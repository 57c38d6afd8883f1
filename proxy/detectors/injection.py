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
from dataclasses import dataclass, field
from itertools import repeat
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

CACHE_LIMIT = 400_000
"""Hashed n-grams remembered across texts (most n-grams of prose recur); past this many the memory is
dropped and rebuilt."""

_SPACES = re.compile(r"\s+")
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


@dataclass(slots=True)
class _HashedGrams:
    """Buckets of n-grams already met, for one kind of n-gram (characters or words)."""

    prefix: str
    buckets: dict[str, int] = field(default_factory=dict)

    def of(self, grams: set[str], dim: int) -> dict[str, int]:
        """The bucket of each n-gram, hashing those not met yet as ``features`` does (the prefixed
        UTF-8 string). A small dictionary per text keeps the many lookups that follow cheap."""
        missing = grams.difference(self.buckets)
        if len(self.buckets) + len(missing) > CACHE_LIMIT:
            self.buckets.clear()
            missing = grams
        if missing:
            new = list(missing)
            encoded = map(str.encode, map(self.prefix.__add__, new))
            self.buckets.update(
                zip(new, map(operator.mod, map(zlib.crc32, encoded), repeat(dim)), strict=True)
            )
        ordered = list(grams)
        return dict(zip(ordered, map(self.buckets.__getitem__, ordered), strict=True))


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
    _chars: _HashedGrams = field(
        default_factory=lambda: _HashedGrams("c"), init=False, repr=False, compare=False
    )
    _words: _HashedGrams = field(
        default_factory=lambda: _HashedGrams("w"), init=False, repr=False, compare=False
    )

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

        Windows overlap, so instead of building each window's features from scratch every n-gram of the
        text is made and hashed once, and a window gathers its distinct n-grams from slices of those
        lists. A window's squeezed form (spaces collapsed, stripped, one space each side) is a slice of
        the whole text's collapsed form between two spaces, so only the n-grams touching those two
        spaces and the words the window cuts are its own.
        """
        text = text[:MAX_CLASSIFIER_CHARS]
        spans = window_spans(len(text))
        collapsed, cores = _collapsed_cores(text, spans)
        char_lists = [(size, list(_ngrams(collapsed, size))) for size in self.spec.char_ngrams]
        char_sets: list[set[str]] = []
        word_sets: list[set[str]] = []
        all_chars: set[str] = set()
        for low, high in cores:
            padded = " " + collapsed[low:high] + " "
            chars: set[str] = set()
            for size, grams in char_lists:
                chars.update(grams[low : max(low, high - size + 1)])
                if len(padded) >= size:
                    chars.add(padded[:size])
                    chars.add(padded[-size:])
                    all_chars.add(padded[:size])
                    all_chars.add(padded[-size:])
            words = _WORDS.findall(collapsed, low, high)
            word_grams: set[str] = set()
            for size in self.spec.word_ngrams:
                word_grams.update(_ngrams(words, size))
            char_sets.append(chars)
            word_sets.append(word_grams)
        for _, grams in char_lists:
            all_chars.update(grams)
        char_buckets = self._chars.of(all_chars, self.spec.dim)
        word_buckets = self._words.of(set().union(*word_sets), self.spec.dim)
        char_weights = dict(
            zip(char_buckets, map(self.weights.__getitem__, char_buckets.values()), strict=True)
        )
        word_weights = dict(
            zip(word_buckets, map(self.weights.__getitem__, word_buckets.values()), strict=True)
        )
        shared_chars = _colliding(char_buckets, word_buckets)
        shared_words = _colliding(word_buckets, char_buckets)
        scores: list[float] = []
        for chars, word_grams in zip(char_sets, word_sets, strict=True):
            total = self.bias
            count = len(chars) + len(word_grams)
            if count:
                # Each bucket counts its distinct n-grams: the dot product with the weights is the sum
                # of the n-grams' weights, the squared norm their number plus what collisions add.
                dot = sum(map(char_weights.__getitem__, chars)) + sum(
                    map(word_weights.__getitem__, word_grams)
                )
                squares = count
                colliding_chars = chars & shared_chars
                colliding_words = word_grams & shared_words
                if colliding_chars or colliding_words:
                    per_bucket = Counter(map(char_buckets.__getitem__, colliding_chars))
                    per_bucket.update(map(word_buckets.__getitem__, colliding_words))
                    squares += sum(grams * (grams - 1) for grams in per_bucket.values())
                total += dot / math.sqrt(squares)
            scores.append(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, total)))))
        return scores

    def threshold(self, source: Source) -> float:
        return self.threshold_indirect if source in INDIRECT_SOURCES else self.threshold_direct


def _colliding(buckets: dict[str, int], other_buckets: dict[str, int]) -> set[str]:
    """The n-grams of ``buckets`` whose bucket holds another n-gram of the text (of either kind): only
    windows holding two of them need their squared norm counted bucket by bucket."""
    per_bucket = Counter(buckets.values())
    per_bucket.update(other_buckets.values())
    shared = {bucket for bucket, count in per_bucket.items() if count > 1}
    return {gram for gram, bucket in buckets.items() if bucket in shared}


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
