"""Refusal detection: does a completion open by declining the request?

A refusal is not an attack; it is the signal the jailbreak baseline counts (``proxy.detectors.baseline``):
an agent whose model suddenly stops refusing has often been talked out of its rules. The phrases live in
``rules/refusal.yaml``. Only the opening of the completion is scanned, because refusals lead with the
refusal, while a compliant answer may well say "I cannot guarantee ..." further down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from proxy.model import Action, Finding, Severity, Threat
from proxy.scanning.rulepack import RulePack, ScanBudget, Scanner, load_pack, pack_path

COUNTER_RULE_PREFIX = "premise-"
"""Pack rules with this id prefix are counter-evidence: declining a false or impossible premise
("that question does not make sense") is a correction, not a safety refusal."""

OPENING_CHARS = 200
"""How much of the completion's start is read. Chosen cross-model on the XSTest v2 completions
(``bench/refusal_eval.py``): long enough for a refusal that follows a one-sentence preamble ("I
understand your concern, but I cannot ..."), short enough to miss caveats deep inside an answer."""

# Models write typographic apostrophes and quotes; the pack's regexes spell them in ASCII.
_QUOTES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'", "\u201c": '"', "\u201d": '"'}
)
_LEADING_NOISE = " \t\r\n\"'*_>#`-"


@dataclass(frozen=True, slots=True)
class RefusalVerdict:
    """``score`` is 1.0 when the refusal phrase is the first thing said, falling towards 0 the later
    it starts in the opening; ``rule`` is the phrase rule that matched first."""

    refusal: bool
    rule: str | None = None
    score: float = 0.0
    read: bool = True
    """False where the budget had nothing left to read the opening: whether it refuses is not known."""


NOT_A_REFUSAL = RefusalVerdict(refusal=False)
UNREAD = RefusalVerdict(refusal=False, read=False)


def opening(text: str, opening_chars: int = OPENING_CHARS) -> str:
    """The start of a completion as the phrase rules read it: ASCII quotes, leading markup dropped."""
    return text.lstrip(_LEADING_NOISE)[:opening_chars].translate(_QUOTES)


class RefusalDetector:
    def __init__(self, packs: list[RulePack] | None = None, *, opening_chars: int = OPENING_CHARS) -> None:
        if opening_chars <= 0:
            raise ValueError("opening_chars must be positive")
        self.opening_chars = opening_chars
        self._scanner = Scanner(packs if packs is not None else [load_pack(pack_path("refusal"))])
        self._unread = frozenset(rule.id for rule in self._scanner.unread.values())

    def assess(self, text: str, budget: ScanBudget | None = None) -> RefusalVerdict:
        """Whether ``text`` opens with a refusal. A phrase rule out of time there (charged to ``budget``,
        which names it, or one of the assessment's own) finds nothing: refusals are only counted. An
        opening the budget had nothing left for is ``UNREAD``."""
        head = opening(text, self.opening_chars)
        scan = self._scanner.scan(head, budget or self._scanner.budget(), merge=False)
        if self._unread.intersection(scan.timed_out):
            return UNREAD
        matches = scan.found
        refusals = [match for match in matches if not match.rule.id.startswith(COUNTER_RULE_PREFIX)]
        if not refusals or len(refusals) < len(matches):
            return NOT_A_REFUSAL
        first = min(refusals, key=lambda match: match.start)
        return RefusalVerdict(
            refusal=True, rule=first.rule.id, score=round(1.0 - first.start / self.opening_chars, 4)
        )

    def is_refusal(self, text: str) -> bool:
        return self.assess(text).refusal

    def finding(
        self, text: str, where: str = "completion", budget: ScanBudget | None = None
    ) -> Finding | None:
        """A low-severity jailbreak note for a refusal, so the audit log and the rate baseline see it."""
        return refusal_finding(self.assess(text, budget), where)


def refusal_finding(verdict: RefusalVerdict, where: str = "completion") -> Finding | None:
    """The note (``RefusalDetector.finding``) of a verdict, None where it is no refusal."""
    if not verdict.refusal or verdict.rule is None:
        return None
    return Finding(
        threat=Threat.JAILBREAK,
        rule=verdict.rule,
        signal="completion opens with a refusal",
        severity=Severity.LOW,
        action=Action.FLAG,
        where=where,
        owasp="LLM01",
        extra={"score": verdict.score},
    )


@cache
def default_detector() -> RefusalDetector:
    """The detector over the packaged refusal phrases, built once."""
    return RefusalDetector()


def is_refusal(text: str) -> bool:
    """Whether a completion opens with a refusal, by the packaged phrases."""
    return default_detector().is_refusal(text)


def refusal_verdict(text: str) -> RefusalVerdict:
    return default_detector().assess(text)
