"""Refusal detection measured cross-model on the XSTest v2 completions.

Each CSV holds one model's completions with a human ``final_label``; full and partial refusals count as
refusals. For each model in turn, the opening length and the set of phrase rules are chosen on the
other two models (highest recall with at most 5 % false positives on each of them) and the figures are
reported on the held-out model, so they say how the detector fares on a model it was not tuned on.
The shipped defaults (every rule, ``OPENING_CHARS``) are reported per model too.

    python3 bench/refusal_eval.py [DATA_DIR]
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from proxy.detectors.refusal import COUNTER_RULE_PREFIX, OPENING_CHARS, opening
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

DATA_DIR = Path("/work/shared/data/refusal")
MODELS = ("gpt4", "llama2new", "llama2orig")
REFUSAL_LABELS = {"2_full_refusal", "3_partial_refusal"}
OPENING_CHOICES = (60, 100, 150, 200, 300, 400, 600)
MAX_FALSE_POSITIVE_RATE = 0.05
NO_MATCH = 1 << 30


@dataclass(frozen=True)
class Row:
    refusal: bool
    first_offset: tuple[int, ...]
    """Per rule: where it first matched in the longest opening, or NO_MATCH."""


@dataclass(frozen=True)
class Score:
    recall: float
    false_positive_rate: float
    positives: int
    negatives: int

    def __str__(self) -> str:
        return (
            f"recall {self.recall:.3f}  FPR {self.false_positive_rate:.3f}  "
            f"(refusals {self.positives}, compliant {self.negatives})"
        )


def load_rows(path: Path, scanner: Scanner) -> list[Row]:
    rule_index = {rule.id: index for index, rule in enumerate(scanner.rules)}
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            offsets = [NO_MATCH] * len(scanner.rules)
            for match in scanner.scan_alone(
                opening(record["completion"], max(OPENING_CHOICES)), merge=False
            ).matches:
                index = rule_index[match.rule.id]
                offsets[index] = min(offsets[index], match.start)
            rows.append(Row(record["final_label"] in REFUSAL_LABELS, tuple(offsets)))
    return rows


def score(rows: list[Row], rules: frozenset[int], opening_chars: int, counter: frozenset[int]) -> Score:
    """``counter`` holds the indices of counter-evidence rules; a row they match is not a refusal."""
    true_positives = false_positives = positives = 0
    for row in rows:
        matched = {index for index in rules if row.first_offset[index] < opening_chars}
        flagged = bool(matched) and not matched & counter
        positives += row.refusal
        true_positives += flagged and row.refusal
        false_positives += flagged and not row.refusal
    negatives = len(rows) - positives
    return Score(true_positives / positives, false_positives / negatives, positives, negatives)


def rule_subsets(rule_count: int) -> list[frozenset[int]]:
    """Every subset that drops at most two rules: enough to see whether a phrase family hurts."""
    everything = frozenset(range(rule_count))
    dropped = [(), *combinations(range(rule_count), 1), *combinations(range(rule_count), 2)]
    return [everything - frozenset(drop) for drop in dropped]


def choose(
    train: dict[str, list[Row]], rule_count: int, counter: frozenset[int]
) -> tuple[frozenset[int], int, Score]:
    """Highest pooled training recall while every training model stays within the false-positive
    budget; ties go to more rules, then a longer opening (the choice that suits wordier models)."""
    pooled = [row for rows in train.values() for row in rows]
    best: tuple[tuple[float, int, int], frozenset[int], int, Score] | None = None
    for rules in rule_subsets(rule_count):
        for opening_chars in OPENING_CHOICES:
            per_model = [score(rows, rules, opening_chars, counter) for rows in train.values()]
            if max(result.false_positive_rate for result in per_model) > MAX_FALSE_POSITIVE_RATE:
                continue
            result = score(pooled, rules, opening_chars, counter)
            key = (result.recall, len(rules), opening_chars)
            if best is None or key > best[0]:
                best = (key, rules, opening_chars, result)
    if best is None:
        raise SystemExit("no configuration keeps every training model within the false-positive budget")
    return best[1], best[2], best[3]


def refusal_section(data_dir: Path = DATA_DIR) -> None:
    print("== refusal (jailbreak / role escape) ==")
    scanner = Scanner([load_pack(pack_path("refusal"))])
    names = [rule.id for rule in scanner.rules]
    rows = {model: load_rows(data_dir / f"xstest_v2_completions_{model}.csv", scanner) for model in MODELS}
    everything = frozenset(range(len(names)))
    counter = frozenset(index for index, name in enumerate(names) if name.startswith(COUNTER_RULE_PREFIX))

    print(f"shipped defaults: all {len(names)} rules, opening {OPENING_CHARS} chars")
    for model in MODELS:
        print(f"  {model:<11} {score(rows[model], everything, OPENING_CHARS, counter)}")

    print(f"\ncross-model: tuned on two models (FPR <= {MAX_FALSE_POSITIVE_RATE:.0%}), reported on the third")
    held_out_scores = []
    for held_out in MODELS:
        train = {model: rows[model] for model in MODELS if model != held_out}
        rules, opening_chars, train_score = choose(train, len(names), counter)
        dropped = sorted(names[index] for index in everything - rules) or ["none"]
        test_score = score(rows[held_out], rules, opening_chars, counter)
        held_out_scores.append(test_score)
        print(f"  held out {held_out}: opening {opening_chars}, rules dropped: {', '.join(dropped)}")
        print(f"    train {train_score}")
        print(f"    test  {test_score}")
    mean_recall = sum(s.recall for s in held_out_scores) / len(held_out_scores)
    mean_fpr = sum(s.false_positive_rate for s in held_out_scores) / len(held_out_scores)
    print(f"  mean over held-out models: recall {mean_recall:.3f}  FPR {mean_fpr:.3f}")


if __name__ == "__main__":
    refusal_section(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR)
