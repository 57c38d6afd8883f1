"""CPU each addon hook of egressguard spends per request, side by side with another checkout.

    python3 bench/hook_cpu.py [--case "8192 B prompt"] [--requests 400] [--rounds 3] [--against DIR]

The requests of ``bench/request_cpu.py`` (one of its cases) go through egressguard from this checkout and,
with ``--against``, from another (the code before a change), one request at a time, the two taking turns so
both meet the machine's other load alike. Each process runs with ``bench/hook_cpu_site`` on its path,
which times every handler of every hook in thread CPU (a coroutine's steps, not its waits). For each
round it prints, per hook, the milliseconds of CPU per request of each checkout, the process's whole CPU
per request beside them, and the ratio of this checkout's to the other's: where ``request_cpu.py`` says
how much a change saved, this says in which hook.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import cpu_seconds
from bench.request_cpu import CASES, WARMUP, Proxy, bench_upstream, send_turn, start_guard

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "bench" / "hook_cpu_site"
PROCESS = "whole process"
WRITTEN_EVERY = 0.2
"""How often each process writes its figures (``hook_cpu_site``)."""


def hooks_spent(folder: Path, pid: int) -> dict[str, float]:
    """Seconds of CPU each hook of process ``pid`` has spent so far, once its figures are fresh."""
    time.sleep(3 * WRITTEN_EVERY)
    figures = json.loads((folder / f"{pid}.json").read_text())
    return {name: seconds for name, (seconds, _) in figures.items()} | {PROCESS: cpu_seconds(pid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=next(iter(CASES)), choices=list(CASES))
    parser.add_argument("--requests", type=int, default=400, help="requests per checkout and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout, run alongside")
    args = parser.parse_args()

    workdir, pki, upstream, url = bench_upstream("egressguard-hook-cpu-")
    checkouts = {"this": ROOT} | ({"against": args.against.resolve()} if args.against else {})
    prompt, turn = CASES[args.case]
    numbers = itertools.count()
    with ExitStack() as stack:
        guards: list[tuple[Proxy, Path]] = []
        for name, checkout in checkouts.items():
            folder = workdir / f"{name}-figures"
            folder.mkdir()
            environment = {"PYTHONPATH": f"{SITE}{os.pathsep}{checkout}", "EGRESSGUARD_HOOK_CPU": str(folder)}
            guards.append((start_guard(stack, name, workdir / name, pki.ca_cert, environment), folder))

        def send(proxy: Proxy) -> None:
            send_turn(proxy, url, f"{next(numbers):06d} {prompt}"[: len(prompt)], turn)

        for _ in range(WARMUP):
            for proxy, _ in guards:
                send(proxy)
        print(f"{args.case}: ms of CPU per request, {args.requests} requests a round, taking turns")
        for round_number in range(1, args.rounds + 1):
            before = [hooks_spent(folder, proxy.pid) for proxy, folder in guards]
            for index in range(args.requests):
                for step in range(len(guards)):
                    send(guards[(index + step) % len(guards)][0])
            after = [hooks_spent(folder, proxy.pid) for proxy, folder in guards]
            spent = [
                {key: (value - start.get(key, 0.0)) * 1000 / args.requests for key, value in end.items()}
                for start, end in zip(before, after, strict=True)
            ]
            report(round_number, [proxy.name for proxy, _ in guards], spent)
    upstream.close()


def report(round_number: int, names: list[str], spent: list[dict[str, float]]) -> None:
    """Each hook costing 5 µs or more a request in either checkout, dearest first, then the process."""
    hooks = sorted(
        {key for figures in spent for key, value in figures.items() if value >= 0.005 and key != PROCESS},
        key=lambda key: -spent[0].get(key, 0.0),
    )
    title = f"round {round_number} (load {os.getloadavg()[0]:.1f})"
    print(
        f"  {title:<58}" + "".join(f"{name:>10}" for name in [*names, "ratio"][: 3 if len(names) == 2 else 1])
    )
    for key in [*hooks, PROCESS]:
        cells = [figures.get(key, 0.0) for figures in spent]
        ratio = f"{cells[0] / cells[1]:10.2f}" if len(cells) == 2 and cells[1] else ""
        print(f"    {key:<56}" + "".join(f"{cell:10.3f}" for cell in cells) + ratio)


if __name__ == "__main__":
    main()
