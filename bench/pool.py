"""The other way to use every core, measured beside workers: one I/O process with the pure scans in a pool.

Both designs are measured on the same machine, so that the one kept is the one that scales. This script runs
the second as a prototype, beside the one kept (``run --workers N``), in one run:

- **pool**: one egressguard process (one event loop) in which every inspection runs in a thread, and the
  pure scans it makes (the secret and PII rule scan of texts of ``--pool-min`` characters or more, and the
  prompt-injection detector) are sent to a ``ProcessPoolExecutor`` of ``--pool`` processes, each with the
  same detectors built from the same policy; matches come back as rule numbers and spans, findings as
  they are. The thread waits for the pool without holding the GIL, so the event loop keeps serving.
- **workers**: ``run --workers 1`` and ``run --workers 2`` (SO_REUSEPORT), the shipped design.

Both get the throughput load of ``bench/throughput.py`` (32 agents, 8 KB prompts, enforce mode, every
detector on), and the stall probe of ``bench/stall.py`` (one-line prompts timed while a 7.5 MB prompt is
inspected). It prints requests per second, median and p99, and the worst stall, per design.

    python3 bench/pool.py [--seconds 10] [--pool 2] [--large-mb 7.5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import CONTEXT, PROMPT, TRANSCRIPT, bench_policy, percentile, process
from bench.stall import stall
from bench.throughput import Target, guard_command, measure, start_upstream
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port

_detectors: Any = None
"""The pool process's own detectors, built from the policy by ``_build``."""


def _build(config: str) -> None:
    global _detectors
    from proxy.config.policy import load_policy
    from proxy.runtime import build_detectors

    _detectors = build_detectors(load_policy(Path(config)))


def _scan(scanner: str, text: str, merge: bool) -> tuple[list[tuple[int, int, int, str]], list[str]]:
    found = getattr(_detectors, scanner)
    result = found.scan_alone(text, merge=merge)
    numbers = {id(rule): number for number, rule in enumerate(found.rules)}
    return [(numbers[id(m.rule)], m.start, m.end, m.disguise) for m in result.found], list(result.timed_out)


def _detect(text: str, where: str, source: Any) -> Any:
    return _detectors.injection.detect(text, where, source)


def serve_with_pool(config: str, processes: int, pool_min: int, run: list[str]) -> None:
    """``egressguard run`` with the pure scans sent to a process pool (see the module's docstring)."""
    from addons.inspect import Inspect
    from proxy.commands.cli import main
    from proxy.detectors.injection import InjectionDetector
    from proxy.inspection import Detectors
    from proxy.runtime import Runtime
    from proxy.scanning.rulepack import Match, ScanBudget, Scanner, ScanResult

    pool = ProcessPoolExecutor(
        processes, multiprocessing.get_context("spawn"), initializer=_build, initargs=(config,)
    )
    for future in [pool.submit(os.getpid) for _ in range(processes * 4)]:
        future.result()  # every pool process has built its detectors before the proxy listens
    names: dict[int, str] = {}
    local_scan, local_detect = Scanner.scan, InjectionDetector.detect
    load_detectors = Runtime.load_detectors

    def named(runtime: Runtime) -> Detectors:
        detectors = load_detectors(runtime)
        names.update({id(detectors.sensitive): "sensitive", id(detectors.redacting): "redacting"})
        return detectors

    def scan(self: Scanner, text: str, budget: ScanBudget, *, merge: bool = True) -> ScanResult:
        which = names.get(id(self))
        if which is None or len(text) < pool_min or threading.current_thread() is threading.main_thread():
            return local_scan(self, text, budget, merge=merge)
        # A pool process scans with a budget of its own: the turn's budget only learns what ran out.
        matches, timed_out = pool.submit(_scan, which, text, merge).result()
        by_id = {rule.id: rule for rule in self.rules}
        for rule_id in timed_out:
            budget.timed_out.setdefault(rule_id, by_id[rule_id])
        return ScanResult([Match(self.rules[n], s, e, d) for n, s, e, d in matches], tuple(timed_out))

    def detect(self: InjectionDetector, text: str, where: str, source: Any, budget: Any = None) -> Any:
        if threading.current_thread() is threading.main_thread():
            return local_detect(self, text, where, source, budget)
        return pool.submit(_detect, text, where, source).result()

    async def in_a_thread(self: Inspect, inspect: Callable[[Any], None], flow: Any, message: Any) -> None:
        await asyncio.to_thread(inspect, flow)

    Runtime.load_detectors = named  # type: ignore[method-assign,assignment]
    Scanner.scan = scan  # type: ignore[method-assign]
    InjectionDetector.detect = detect  # type: ignore[method-assign]
    Inspect._off_loop_if_large = in_a_thread  # type: ignore[method-assign]
    try:
        sys.exit(main(run))
    finally:
        pool.shutdown(cancel_futures=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=2, help="processes in the scan pool")
    parser.add_argument("--pool-min", type=int, default=1024, help="shorter texts are scanned in place")
    parser.add_argument("--large-mb", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        config = args.serve[args.serve.index("--config") + 1]
        serve_with_pool(config, args.pool, args.pool_min, args.serve)
        return

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-pool-"))
    upstream_ca, upstream, url = start_upstream(workdir)
    assert upstream.pid is not None
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    designs: dict[str, Callable[[Path, int], list[str]]] = {
        "workers: 1": lambda policy, port: guard_command(policy, port, upstream_ca, 1),
        "workers: 2": lambda policy, port: guard_command(policy, port, upstream_ca, 2),
        f"pool: 1 + {args.pool}": lambda policy, port: [
            sys.executable,
            __file__,
            "--pool",
            str(args.pool),
            "--pool-min",
            str(args.pool_min),
            "--serve",
            *guard_command(policy, port, upstream_ca, 1)[3:],
        ],
    }
    large = (TRANSCRIPT * (int(args.large_mb * 1e6) // len(TRANSCRIPT) + 1))[: int(args.large_mb * 1e6)]
    print(f"{args.clients} concurrent clients, {len(PROMPT)} B prompts, enforce mode, every detector on;")
    print(f"then one-line prompts timed while a {len(large) / 1e6:.1f} MB prompt is inspected;")
    print(f"{os.cpu_count()} cores shared with the load generator and the upstream")
    print(f"  {'design':<14}{'req/s':>8}{'median ms':>11}{'p99 ms':>9}{'stall: worst':>14}{'median':>9}")
    for number, (name, command) in enumerate(designs.items()):
        data = workdir / f"data-{number}"
        policy = workdir / f"policy-{number}.yaml"
        policy.write_text(bench_policy(data, extra="inspection: {max_body_bytes: 16MiB}\n"))
        ca = data / "ca" / "mitmproxy-ca-cert.pem"
        workers = 2 if name == "workers: 2" else 1
        port = free_port()
        target = Target(name, command(policy, port), port, ca, (AGENT, AGENT_TOKEN), workers)
        result = measure(target, workdir, url, upstream.pid, args.clients, args.seconds)
        proxy = f"http://{AGENT}:{AGENT_TOKEN}@127.0.0.1:{target.port}"
        with process(target.command, target.port, workdir, env):
            client = partial(httpx.Client, proxy=proxy, verify=str(ca), timeout=120, headers=CONTEXT)
            stalled = stall(client, f"{url}/v1/chat/completions", large, args.rounds)
        median, p99 = statistics.median(result.latencies) * 1000, percentile(result.latencies, 0.99) * 1000
        print(
            f"  {name:<14}{result.rate:>8.1f}{median:>11.1f}{p99:>9.1f}"
            f"{stalled['during worst'] * 1000:>11.0f} ms{stalled['during median'] * 1000:>6.0f} ms"
        )
    upstream.terminate()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
