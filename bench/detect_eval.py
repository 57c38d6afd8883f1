"""Development figures for the detectors, one section per detector.

    python3 bench/detect_eval.py [--data ../shared/data] [--folds 5]

Injection: recall and false-positive rate of the rules alone, the classifier alone and both combined (a
finding from either), on injected documents (every BIPIA train-split attack planted at the start,
middle or end of clean emails, tables and code threads, scanned as tool results), bare attack
instructions (scanned as tool results), synthetic direct hijack attempts (scanned as user input),
NotInject benign prompts (user input) and clean documents (tool results). Classifier scores are
cross-validated: each item is scored by a fold model that never saw its attack category, synthetic
family or document, with the thresholds that fold selection picked. These are dev figures; the held-out
sets named in ../shared/data/README.md are never used here.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_injection as training
from refusal_eval import refusal_section

from proxy.detectors.injection import CLASSIFIER_RULE, InjectionDetector
from proxy.exchange import Source
from proxy.model import Threat
from proxy.rulepack import load_pack, pack_path


@dataclass(frozen=True, slots=True)
class Case:
    text: str
    source: Source
    group: str


def injection_cases(data: Path, seed: int) -> dict[str, tuple[bool, list[Case]]]:
    """Named evaluation sets: (is attack, cases)."""
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible evaluation sets, nothing secret
    attacks = training.load_attacks(data)
    documents = training.load_documents(data)
    injected = [
        Case(
            training.plant(rng.choice(documents)[1], attack, position, rng),
            Source.TOOL_RESULT,
            f"bipia-{category}",
        )
        for category, attack in attacks
        for position in ("start", "middle", "end")
    ]
    bare = [Case(attack, Source.TOOL_RESULT, f"bipia-{category}") for category, attack in attacks]
    synthetic = [
        Case(example.text, Source.USER, example.group) for example in training.synth_attacks(rng, 30)
    ]
    notinject = [
        Case(prompt, Source.USER, f"notinject-{index}")
        for index, prompt in enumerate(training.load_notinject(data))
    ]
    clean = [Case(text, Source.TOOL_RESULT, f"doc-{doc_id}") for doc_id, text in documents]
    return {
        "injected documents": (True, injected),
        "bare attack instructions": (True, bare),
        "synthetic hijacks (user)": (True, synthetic),
        "NotInject benign (user)": (False, notinject),
        "clean documents": (False, clean),
    }


def injection_section(data: Path, folds: int) -> None:
    print("== prompt injection ==")
    examples = training.build_examples(data)
    scores, models = training.cross_validate(examples, folds)
    direct = training.threshold_for(scores, examples, training.DIRECT_BENIGN)
    whole_documents = training.whole_document_examples(data)
    indirect = training.threshold_for(
        training.out_of_fold_scores(whole_documents, models), whole_documents, training.INDIRECT_BENIGN
    )
    print(f"cross-validated thresholds: direct {direct:.3f}, indirect {indirect:.3f} ({folds} grouped folds)")
    packs = [load_pack(pack_path("injection"))]
    detectors = [
        InjectionDetector(
            packs, dataclasses.replace(model, threshold_direct=direct, threshold_indirect=indirect)
        )
        for model in models
    ]
    print(
        f"{'set':<28}{'n':>6}{'rules':>9}{'classifier':>12}{'combined':>10}"
        "   (recall for attacks, FPR for benign)"
    )
    for name, (is_attack, cases) in injection_cases(data, training.SEED).items():
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
        print(
            f"{name:<28}{count:>6}{rule_hits / count:>9.3f}{classifier_hits / count:>12.3f}"
            f"{combined_hits / count:>10.3f}{'' if is_attack else '   (FPR)'}"
        )
    documents = [text for _, text in training.load_documents(data)]
    detector = detectors[0]
    started = time.perf_counter()
    for text in documents:
        detector.detect(text, "eval", Source.TOOL_RESULT)
    elapsed = time.perf_counter() - started
    size = sum(len(text.encode("utf-8")) for text in documents)
    print(
        f"throughput on clean documents: {size / elapsed / 1e6:.2f} MB/s "
        f"({len(documents)} documents, {size / 1e6:.2f} MB)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=training.DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    injection_section(args.data, args.folds)
    print()
    refusal_section()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
