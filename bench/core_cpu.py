"""CPU of the detection core per text, stage by stage, side by side with another checkout.

    python3 bench/core_cpu.py [--against ../other-checkout] [--runs 3] [--rounds 5] [--data DIR]

For each kind of text (the 8 KB and the 2 KB reply of bench/latency.py, numbered as it numbers its
prompts; 8 KB pieces of the development set's docs and Python source) it measures, in one process, the
thread CPU time per text of the injection detector (cache off, as typed by a user) and of the secret and
PII scan, the best of ``--rounds`` passes over the texts. With ``--against`` the other checkout is
measured by the same script in a process of its own, the two taking turns ``--runs`` times, so both meet
the machine's other load alike; it prints each checkout's best and their ratio. A change of a few
microseconds a text, which the proxy's CPU per request cannot tell apart from the noise of a shared
machine, shows here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PIECE = 8192
PIECES = 40


def texts(data: Path) -> dict[str, list[str]]:
    carriers = importlib.import_module("bench.carriers")
    latency = importlib.import_module("bench.latency")
    prompt, reply = latency.PROMPT, latency.REPLY
    tool_results = carriers.load_tool_results(data)

    def pieces(family: str) -> list[str]:
        joined = "\n".join(carrier.text for carrier in tool_results if carrier.family.startswith(family))
        return [joined[start : start + PIECE] for start in range(0, len(joined) - PIECE, PIECE)][:PIECES]

    return {
        "8 KB prompt": [f"{index:06d} {prompt}"[: len(prompt)] for index in range(100)],
        "2 KB reply": [f"{index:06d} {reply}"[: len(reply)] for index in range(100)],
        "8 KB of docs": pieces("docs"),
        "8 KB of Python": pieces("code_python"),
    }


def measure(checkout: Path, data: Path, rounds: int) -> dict[str, float]:
    """Microseconds of thread CPU per text of each stage on each kind of text, with the detection core of
    ``checkout`` (imported from there: the process has imported nothing of a checkout before)."""
    sys.path.insert(0, str(checkout))
    injection = importlib.import_module("proxy.detectors.injection")
    rulepack = importlib.import_module("proxy.scanning.rulepack")
    model = importlib.import_module("proxy.model")
    user = importlib.import_module("proxy.exchange").Source.USER
    detector = injection.InjectionDetector(
        [rulepack.load_pack(rulepack.pack_path("injection"))],
        injection.load_default_classifier(),
        cache_entries=0,
    )
    packs = rulepack.load_packaged_packs()
    secrets = rulepack.Scanner([pack for pack in packs if pack.threat is model.Threat.DATA_EXFILTRATION])
    stages: dict[str, Callable[[str], object]] = {
        "injection detector": lambda text: detector.detect(text, "bench", user),
        "secret and PII scan": lambda text: secrets.scan(text, secrets.budget()),
    }
    costs = {}
    for kind, kind_texts in texts(data).items():
        for stage, run in stages.items():
            best = float("inf")
            for _ in range(rounds):
                started = time.thread_time()
                for text in kind_texts:
                    run(text)
                best = min(best, time.thread_time() - started)
            costs[f"{kind}: {stage}"] = best / len(kind_texts) * 1e6
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, help="another checkout, measured in turns with this one")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, help="the development data (bench/carriers.py's default)")
    parser.add_argument("--measure", type=Path, help="measure this checkout once, print JSON")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data, args.rounds)))
        return 0
    sys.path.insert(0, str(ROOT))
    data = args.data or importlib.import_module("bench.carriers").default_data()
    checkouts = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    best: dict[str, dict[str, float]] = {name: {} for name in checkouts}
    for _ in range(args.runs):
        for name, checkout in checkouts.items():
            command = [sys.executable, __file__, "--measure", str(checkout)]
            command += ["--rounds", str(args.rounds), "--data", str(data)]
            # One hash seed for both: the order of sets and dicts, and so the work, is the same in each run.
            environment = {**os.environ, "PYTHONHASHSEED": "0"}
            run = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
            figures = json.loads(run.stdout)
            for key, value in figures.items():
                best[name][key] = min(value, best[name].get(key, value))
    print(f"us of thread CPU per text, best of {args.runs} runs of {args.rounds} rounds")
    for key, value in best["this"].items():
        other = best.get("against", {}).get(key)
        versus = f"   against {other:7.1f}   {value / other:.2f}x" if other else ""
        print(f"  {key:<40}{value:7.1f}{versus}")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
