"""The work a scan budget lets start, step by step, for tests of its guarantee (``ScanBudget``): once it
is spent no rule runs again and no text is read. A test checks that by the steps that started and what
the budget had left when the scanning code last asked before each, where a bound on CPU time measures
how loaded the machine is as much as how much work was done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.detectors import injection
from proxy.scanning import rulepack
from proxy.scanning.normalize import normalize as normalize_text

READ = "read"
"""A text or a view of one read: a keyword pass, or the injection detector's normalisation."""
RUN = "run"
"""A rule's run (first or again) over a text."""
CLASSIFY = "classify"
"""The injection classifier scoring a text."""
UNREAD = "unread"
"""A text handed to a scan that the budget had nothing left for."""
STARTS = (READ, RUN, CLASSIFY)


@dataclass(frozen=True)
class Step:
    kind: str
    left: float
    """What the budget had left by the scanning code's last look at it before the step."""
    text: str = field(repr=False)


class BudgetWatch:
    """Every step of scanning work, by the budget it is charged to, in the order they start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._steps: dict[rulepack.ScanBudget, list[Step]] = {}
        self._last_left: dict[rulepack.ScanBudget, float] = {}
        self._open: list[rulepack.ScanBudget] = []
        """The budgets of the meters running, innermost last."""
        watch = self
        original_spent_for = rulepack.ScanBudget.spent_for
        original_left = rulepack.Meter.left
        original_settle = rulepack.Meter.settle
        original_enter = rulepack.Meter.__enter__
        original_leave = rulepack.Meter.__exit__
        original_plan = rulepack.Scanner._plan
        original_validated = rulepack.Scanner._validated
        original_normalize = normalize_text
        original_score = injection.InjectionClassifier.score

        def spent_for(budget: rulepack.ScanBudget, chars: int) -> bool:
            spent = original_spent_for(budget, chars)
            watch._looked(budget, budget.left + budget.per_char * chars)
            if spent:
                watch._step(budget, UNREAD, "")
            return spent

        def left(meter: rulepack.Meter, *exact_below: float) -> float:
            seconds = original_left(meter, *exact_below)
            watch._looked(meter.budget, seconds)
            return seconds

        def settle(meter: rulepack.Meter) -> float:
            spent = original_settle(meter)
            watch._looked(meter.budget, meter.budget.left - spent)
            return spent

        def enter(meter: rulepack.Meter) -> rulepack.Meter:
            watch._open.append(meter.budget)
            return original_enter(meter)

        def leave(meter: rulepack.Meter, *raised: object) -> None:
            original_leave(meter, *raised)
            watch._open.remove(meter.budget)

        def plan(scanner: rulepack.Scanner, text: str, meter: rulepack.Meter, *rest: Any) -> Any:
            watch._step(meter.budget, READ, text)
            return original_plan(scanner, text, meter, *rest)

        def validated(scanner: rulepack.Scanner, index: int, text: str, *rest: Any) -> None:
            watch._step(rest[-1].budget, RUN, text)
            original_validated(scanner, index, text, *rest)

        def normalize(text: str, **options: Any) -> Any:
            watch._step(watch._open[-1], READ, text)
            return original_normalize(text, **options)

        def score(classifier: injection.InjectionClassifier, text: str) -> float:
            watch._step(watch._open[-1], CLASSIFY, text)
            return original_score(classifier, text)

        for owner, name, replacement in (
            (rulepack.ScanBudget, "spent_for", spent_for),
            (rulepack.Meter, "left", left),
            (rulepack.Meter, "settle", settle),
            (rulepack.Meter, "__enter__", enter),
            (rulepack.Meter, "__exit__", leave),
            (rulepack.Scanner, "_plan", plan),
            (rulepack.Scanner, "_validated", validated),
            (injection, "normalize", normalize),
            (injection.InjectionClassifier, "score", score),
        ):
            monkeypatch.setattr(owner, name, replacement)

    def steps(self, budget: rulepack.ScanBudget) -> list[Step]:
        """The steps charged to ``budget``, in order."""
        return self._steps.get(budget, [])

    def assert_nothing_starts_once_spent(self, budget: rulepack.ScanBudget) -> list[Step]:
        """Checks that every step charged to ``budget`` started while the budget had something left, and
        none after a text it had nothing left for (the texts handed to it later must be no longer, so
        that their allowance adds no time); returns the steps."""
        steps = self.steps(budget)
        started_spent = [step for step in steps if step.kind in STARTS and step.left <= 0]
        assert not started_spent, started_spent[:3]
        kinds = [step.kind for step in steps]
        if UNREAD in kinds:
            after = [kind for kind in kinds[kinds.index(UNREAD) :] if kind in STARTS]
            assert not after, after[:3]
        return steps

    def _looked(self, budget: rulepack.ScanBudget, left: float) -> None:
        self._last_left[budget] = left

    def _step(self, budget: rulepack.ScanBudget, kind: str, text: str) -> None:
        left = self._last_left.get(budget, budget.left)
        self._steps.setdefault(budget, []).append(Step(kind, left, text))
