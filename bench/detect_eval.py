"""Development figures for the detectors, one section per detector.

    python3 bench/detect_eval.py [--data DIR] [--folds 5]
    (DIR: the development data, by default $EGRESSGUARD_DEV_DATA, else the nearest ../shared/data)

Injection: recall and false-positive rate of the rules alone, the classifier alone and both combined (a
finding from either), family by family. Benign: every kind of tool result (documentation, ops docs and
Python source from the dev set; BIPIA emails, tables and code threads; generated JSON API answers, search
results, logs, manifests, diffs and stack traces; and, never trained nor calibrated on, this Python's
standard library source, its reference docs and installed packages' READMEs) scanned as tool results,
and benign prompts full of trigger words (NotInject, synthetic, requests about instructions and injection)
scanned as user input. Attacks: BIPIA train-split attacks and
synthetic multilingual hijacks planted in those same carriers the way each carrier hides text (a line, a
code comment or docstring, a JSON string value, a markdown or HTML comment), per carrier family; bare
attack instructions; direct hijacks typed by a user; English hijacks in each disguise a model reads
through (bench/carriers.py ``DISGUISES``), planted in carriers, outside the totals so that the
figures stay comparable. Classifier scores are cross-validated: each item is
scored by a fold model that never saw its attack family, its carrier's source file or generated series,
with thresholds picked on the other folds' out-of-fold scores (the indirect one keeps every tool-result
family at or under 1 % there), so false-positive rates are held out as well as recall. These are dev
figures; the held-out sets named in ../shared/data/README.md are never used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import carriers
from bench import train_injection as training
from bench.refusal_eval import refusal_section
from proxy.detectors.injection import CLASSIFIER_RULE, InjectionDetector
from proxy.exchange import Source
from proxy.model import Threat
from proxy.scanning.rulepack import load_pack, pack_path


@dataclass(frozen=True, slots=True)
class Case:
    text: str
    source: Source
    group: str


DISGUISED_PER_KIND = 20
"""English hijacks hidden in each way of ``carriers.DISGUISES``, each planted in a benign tool result."""


def injection_cases(data: Path, folds: int) -> dict[str, tuple[bool, list[Case]]]:
    """Named evaluation sets: (is attack, cases)."""
    rng = random.Random(training.SEED)  # noqa: S311 - the carriers training generated, nothing secret
    benign = carriers.benign_carriers(data, rng, local=True)
    sets: dict[str, tuple[bool, list[Case]]] = {}
    for carrier in benign:
        sets.setdefault(f"benign {carrier.family}", (False, []))[1].append(
            Case(carrier.text, Source.TOOL_RESULT, carrier.group)
        )
    rng = random.Random(training.SEED + 1)  # noqa: S311 - other plantings than training's
    for group, carrier, text, _, _ in training.planted_documents(data, rng, benign, 3, folds):
        sets.setdefault(f"planted in {carrier.family}", (True, []))[1].append(
            Case(text, Source.TOOL_RESULT, group)
        )
    task_like = [
        Case(carriers.plant(rng.choice(benign), attack, rng)[0], Source.TOOL_RESULT, f"bipia-{category}")
        for category, attack in training.load_attacks(data)
        if category in training.TASK_LIKE
    ]
    sets["planted task-like (untrained)"] = (True, task_like)
    sets["bare attack instructions"] = (
        True,
        [
            Case(attack, Source.TOOL_RESULT, f"bipia-{category}")
            for category, attack in training.load_attacks(data)
        ],
    )
    sets["synthetic hijacks (user)"] = (
        True,
        [Case(example.text, Source.USER, example.group) for example in training.synth_attacks(rng, 30)],
    )
    # Their own generator, so that the sets above and below are those the figures always read.
    disguise_rng = random.Random(training.SEED + 3)  # noqa: S311 - reproducible disguises, nothing secret
    english = [
        example for example in training.synth_attacks(disguise_rng, 10) if example.group.endswith("-en")
    ]
    for name, disguise in carriers.DISGUISES.items():
        sets[f"disguised: {name}"] = (
            True,
            [
                Case(
                    carriers.plant(rng.choice(benign), disguise(example.text), rng)[0],
                    Source.TOOL_RESULT,
                    example.group,
                )
                for example in english[:DISGUISED_PER_KIND]
            ],
        )
    sets["NotInject benign (user)"] = (
        False,
        [
            Case(prompt, Source.USER, f"notinject-{index}")
            for index, prompt in enumerate(training.load_notinject(data))
        ],
    )
    sets["synthetic benign (user)"] = (
        False,
        [Case(example.text, Source.USER, example.group) for example in training.synth_benign(rng)],
    )
    sets["trigger-word benign (user)"] = (
        False,
        [Case(example.text, Source.USER, example.group) for example in training.trigger_benign()],
    )
    return sets


def injection_section(data: Path, folds: int) -> None:
    print("== prompt injection ==")
    examples = training.build_examples(data, folds)
    scores, models = training.cross_validate(examples, folds)
    benign_scores = training.benign_document_scores(data, models)
    packs = [load_pack(pack_path("injection"))]
    detectors = []
    for fold, model in enumerate(models):
        # The fold's thresholds are picked without its items, so its false positives are held out too.
        picked = training.thresholds(examples, scores, benign_scores, folds, held_out_fold=fold)
        by_structure = ", ".join(f"{kind} {value:.3f}" for kind, value in sorted(picked.by_structure.items()))
        print(
            f"fold {fold}: thresholds from the other folds: direct {picked.direct:.3f}, "
            f"indirect {picked.indirect:.3f} ({by_structure})"
        )
        fold_model = dataclasses.replace(
            model,
            threshold_direct=picked.direct,
            threshold_indirect=picked.indirect,
            threshold_by_structure=picked.by_structure,
        )
        detectors.append(InjectionDetector(packs, fold_model))
    print(
        f"{'set':<38}{'n':>6}{'rules':>9}{'classifier':>12}{'combined':>10}"
        "   (recall for attacks, FPR for benign)"
    )
    totals = {True: [0, 0], False: [0, 0]}
    for name, (is_attack, cases) in injection_cases(data, folds).items():
        rule_hits = classifier_hits = combined_hits = 0
        for case in cases:
            detector = detectors[training.fold_of(case.group, folds)]
            findings = [
                finding
                for finding in detector.detect(case.text, "eval", case.source)
                if finding.threat is Threat.PROMPT_INJECTION
            ]
            by_rule = any(finding.rule != CLASSIFIER_RULE for finding in findings)
            by_classifier = any(finding.rule == CLASSIFIER_RULE for finding in findings)
            rule_hits += by_rule
            classifier_hits += by_classifier
            combined_hits += by_rule or by_classifier
        count = len(cases)
        if "untrained" not in name and not name.startswith("disguised"):
            totals[is_attack][0] += combined_hits
            totals[is_attack][1] += count
        print(
            f"{name:<38}{count:>6}{rule_hits / count:>9.3f}{classifier_hits / count:>12.3f}"
            f"{combined_hits / count:>10.3f}{'' if is_attack else '   (FPR)'}"
        )
    attacks, benign = totals[True], totals[False]
    print(
        f"all attacks but the untrained: recall {attacks[0] / attacks[1]:.3f} (n={attacks[1]}); "
        f"all benign: FPR {benign[0] / benign[1]:.3f} (n={benign[1]})"
    )
    documents = [case.text for _, cases in injection_cases(data, folds).values() for case in cases]
    detector = InjectionDetector(packs, detectors[0].classifier, cache_entries=0)
    started = time.perf_counter()
    for text in documents:
        detector.detect(text, "eval", Source.TOOL_RESULT)
    elapsed = time.perf_counter() - started
    size = sum(len(text.encode("utf-8")) for text in documents)
    print(
        f"throughput over all sets: {size / elapsed / 1e6:.2f} MB/s "
        f"({len(documents)} texts, {size / 1e6:.2f} MB)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=carriers.default_data())
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    injection_section(args.data, args.folds)
    print()
    refusal_section()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
