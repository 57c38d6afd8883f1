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
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
_WORDS = re.compile(r"\w+")


def _windows(text: str) -> Iterator[str]:
    text = text[:MAX_CLASSIFIER_CHARS]
    if len(text) <= WINDOW_CHARS:
        yield text
        return
    last_start = len(text) - WINDOW_CHARS
    for start in range(0, last_start, WINDOW_STEP):
        yield text[start : start + WINDOW_CHARS]
    yield text[last_start:]


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

    def score_window(self, text: str) -> float:
        """Probability that one window of normalised text carries an injection."""
        weights = self.weights
        total = self.bias + sum(weights[bucket] * value for bucket, value in self.spec.features(text).items())
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, total))))

    def score(self, text: str) -> float:
        """The highest window score of a normalised text."""
        return max(self.score_window(window) for window in _windows(text))

    def threshold(self, source: Source) -> float:
        return self.threshold_indirect if source in INDIRECT_SOURCES else self.threshold_direct


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
