"""Throughput of the prompt-injection detector on what agents read, and what the verdict cache saves.

    python3 bench/injection_speed.py [--data DIR] [--rounds 3]
    (DIR: the development data, by default $EGRESSGUARD_DEV_DATA, else the nearest ../shared/data)

Corpora, each scanned as tool results: prose (documentation and ops docs of the dev set), Python source
(dev set), JSON API answers (generated issue lists, search results and records) and logs. For each it
prints the MB/s of ``InjectionDetector.detect`` (normalisation, rules and classifier; best of the rounds,
cache off) per core and of the classifier alone (scoring the normalised text), from the process's CPU
time so that other load on a shared machine does not count; next to it the figure the previous detector
(pure-Python n-gram featurisation) measured on the same corpora, and the share of the time spent
normalising, scanning rules and scoring the classifier, and how many regex calls (windows searched,
attempts at a keyword) the rules make a text.

Then the same for one 64 KB tool result of each kind (the corpus's texts joined, as a search or a file
listing returns them): one block for the classifier, the case where its arrays outgrow the cache.

Then a 20-turn conversation: each turn adds a user message and an 8 KB tool result and resends the
whole history, and every context part is run through the detector, as the proxy does; with the verdict
cache a turn costs about one turn's detection, without it the cost grows with the history.

Last, the CPU of one text, best of the rounds over distinct texts (each numbered, as bench/latency.py
numbers its prompts): the 8 KB and the one-line prompt of bench/latency.py typed by a user, split into
normalisation, rules and classifier, and an 8 KB tool result the detector has judged before (what each
text of a resent history costs: the verdict cache's lookup), with the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import carriers
from bench.latency import PROMPT, SHORT_PROMPT
from proxy.detectors.injection import InjectionDetector, load_default, load_default_classifier
from proxy.exchange import Source
from proxy.scanning.normalize import normalize
from proxy.scanning.rulepack import ScanBudget, Scanner, _Plan, load_pack, pack_path

SEED = 20240611
PREVIOUS_MB_S = {"prose": 0.44, "python source": 0.62, "JSON API answers": 0.43, "logs": 0.41}
"""The detector before the vectorised classifier (pure-Python n-grams), on these corpora, measured the same
way (CPU time, best of 3) on the 2-core development machine side by side with the first run of this one."""


def corpora(data: Path) -> dict[str, list[str]]:
    rng = random.Random(SEED)  # noqa: S311 - reproducible corpus, nothing secret
    real = carriers.load_tool_results(data)
    generated = carriers.generated_carriers(data, rng, 40)
    return {
        "prose": [carrier.text for carrier in real if carrier.family.startswith("docs")],
        "python source": [carrier.text for carrier in real if carrier.family == "code_python"],
        "JSON API answers": [carrier.text for carrier in generated if carrier.family.startswith("json")],
        "logs": [carrier.text for carrier in generated if carrier.family == "logs"],
    }


def _plan(scanner: Scanner, form: str) -> _Plan:
    """Where ``scanner`` runs its rules on ``form``, with no budget to run out of."""
    with ScanBudget(float("inf")).metered() as meter:
        return scanner._plan(form, meter)


def _best_of(rounds: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def measure(name: str, detector: InjectionDetector, texts: Sequence[str], rounds: int) -> None:
    size = sum(len(text.encode("utf-8")) for text in texts)
    flagged = sum(bool(detector.detect(text, "bench", Source.TOOL_RESULT)) for text in texts)
    elapsed = _best_of(rounds, lambda: [detector.detect(text, "bench", Source.TOOL_RESULT) for text in texts])
    forms = [normalize(text).texts for text in texts]
    normalizing = _best_of(rounds, lambda: [normalize(text) for text in texts])
    scanner = detector._scanner  # the bench breaks the detector's time down
    rules = _best_of(
        rounds, lambda: [scanner.scan_alone(form, merge=False) for group in forms for form in group]
    )
    # Each place a plan keeps is one regex call: a window searched, or an attempt at a keyword.
    plans = [_plan(scanner, form) for group in forms for form in group]
    calls = sum(sum(map(len, plan.regions.values())) + sum(map(len, plan.starts.values())) for plan in plans)
    classifier = detector.classifier
    scoring = (
        _best_of(rounds, lambda: [classifier.score(form) for group in forms for form in group])
        if classifier is not None
        else 0.0
    )
    speed = size / elapsed / 1e6
    before = PREVIOUS_MB_S.get(name)
    versus = f"(before {before:.2f} MB/s, x{speed / before:.0f})" if before else ""
    alone = f"{size / scoring / 1e6:6.1f} MB/s" if scoring else "   off"
    print(
        f"{name:<18}{len(texts):>5} texts {size / 1e6:5.2f} MB {speed:7.2f} MB/s {versus:<24}"
        f"classifier alone {alone}   share: normalise {normalizing / elapsed:4.0%}  "
        f"rules {rules / elapsed:4.0%}  classifier {scoring / elapsed:4.0%}   flagged {flagged}   "
        f"regex calls a text {calls / len(texts):.2f}"
    )


LARGE_TEXT_BYTES = 64_000


def large_text(texts: Sequence[str]) -> str:
    """About 64 KB of the corpus's texts, joined by line breaks, in the corpus's order."""
    joined = ""
    while len(joined.encode("utf-8")) < LARGE_TEXT_BYTES:
        joined += "\n".join(texts) + "\n"
    return joined.encode("utf-8")[:LARGE_TEXT_BYTES].decode("utf-8", "ignore")


def measure_large(name: str, detector: InjectionDetector, texts: Sequence[str], rounds: int) -> None:
    text = large_text(texts)
    elapsed = _best_of(rounds, lambda: detector.detect(text, "bench", Source.TOOL_RESULT))
    size = len(text.encode("utf-8"))
    print(f"{name:<18} 64 KB tool result: {elapsed * 1e3:6.2f} ms  {size / elapsed / 1e6:6.2f} MB/s")


def conversation(
    detector_factory: Callable[[], InjectionDetector], data: Path, turns: int = 20
) -> list[float]:
    """Milliseconds of detection per turn of a conversation that resends its history every turn."""
    rng = random.Random(SEED)  # noqa: S311 - reproducible corpus, nothing secret
    texts = [carrier.text for carrier in carriers.load_tool_results(data)]
    detector = detector_factory()
    detector.detect(rng.choice(texts), "warm-up", Source.TOOL_RESULT)
    history: list[tuple[str, Source]] = []
    costs = []
    for turn in range(turns):
        tool_result = ""
        while len(tool_result) < 8_000:
            tool_result += rng.choice(texts) + "\n"
        history += [(f"Step {turn}: summarise what the tool returned and go on.", Source.USER)]
        history += [(tool_result[:8_000], Source.TOOL_RESULT)]
        started = time.process_time()
        for text, source in history:
            detector.detect(text, "bench", source)
        costs.append((time.process_time() - started) * 1e3)
    return costs


PER_TEXT = 300
"""Distinct texts per round of the per-text figures."""


def numbered(text: str, count: int) -> list[str]:
    """``count`` texts as long as ``text``, each starting with its own number."""
    return [f"{index:06d} {text}"[: len(text)] for index in range(count)]


def prompt_costs(detector: InjectionDetector, texts: Sequence[str], rounds: int) -> dict[str, float]:
    """Microseconds of CPU per text of the detector and of its parts, over prompts typed by a user."""
    forms = [normalize(text).text for text in texts]
    scanner, classifier = detector._scanner, detector.classifier  # the bench breaks the time down
    assert classifier is not None
    parts: dict[str, Callable[[], object]] = {
        "detect": lambda: [detector.detect(text, "bench", Source.USER) for text in texts],
        "normalise": lambda: [normalize(text) for text in texts],
        "rules": lambda: [scanner.scan_alone(form, merge=False) for form in forms],
        "classifier": lambda: [classifier.score(form) for form in forms],
    }
    return {part: _best_of(rounds, run) / len(texts) * 1e6 for part, run in parts.items()}


def per_text(rounds: int) -> None:
    """Microseconds of CPU per text: prompts judged afresh, and a tool result judged before."""
    uncached = InjectionDetector(
        [load_pack(pack_path("injection"))], load_default_classifier(), cache_entries=0
    )
    print(f"one text, one core (us of CPU, best of {rounds} rounds of {PER_TEXT} distinct texts):")
    for prompt in (PROMPT, SHORT_PROMPT):
        costs = prompt_costs(uncached, numbered(prompt, PER_TEXT), rounds)
        detail = ", ".join(f"{part} {cost:.0f}" for part, cost in costs.items() if part != "detect")
        print(f"  {f'{len(prompt)} B prompt':<34}{costs['detect']:6.0f} us  ({detail})")
    cached = load_default()
    seen = numbered(PROMPT, PER_TEXT)
    for text in seen:
        cached.detect(text, "bench", Source.TOOL_RESULT)
    again = _best_of(rounds, lambda: [cached.detect(text, "bench", Source.TOOL_RESULT) for text in seen])
    label = f"{len(PROMPT)} B tool result seen before"
    print(f"  {label:<34}{again / PER_TEXT * 1e6:6.1f} us  (the verdict cache's lookup)")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=carriers.default_data())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-text-only", action="store_true", help="only the per-text figures")
    args = parser.parse_args(argv)
    if args.per_text_only:
        per_text(args.rounds)
        return 0
    packs = [load_pack(pack_path("injection"))]
    classifier = load_default_classifier()
    uncached = InjectionDetector(packs, classifier, cache_entries=0)
    print("injection detector, whole (normalisation, rules, classifier), one core, cache off:")
    texts_by_kind = corpora(args.data)
    for name, texts in texts_by_kind.items():
        measure(name, uncached, texts, args.rounds)
    for name, texts in texts_by_kind.items():
        measure_large(name, uncached, texts, args.rounds)
    print(
        "20-turn conversation, 8 KB tool result a turn, history resent every turn (ms of detection per turn):"
    )
    cached = conversation(load_default, args.data)
    fresh = conversation(lambda: InjectionDetector(packs, classifier, cache_entries=0), args.data)
    for label, costs in (("with the verdict cache:", cached), ("without it:", fresh)):
        mean = sum(costs) / len(costs)
        print(f"  {label:<24}first turn {costs[0]:.1f}, last {costs[-1]:.1f}, mean {mean:.1f}")
    per_text(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
