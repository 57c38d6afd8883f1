"""CPU each proxy process spends per request, side by side in one run: bare mitmdump, egressguard from this
checkout and, with ``--against``, egressguard from another checkout (the code before a change).

The same chat-completion requests as ``bench/latency.py`` (an 8 KB prompt, a one-line prompt, a 64 KB tool
result; a 2 KB reply), and the one-line prompt at the end of a 120-message conversation (also with a key
in its first message, which every request carries again redacted), with an API key in ``Authorization``
as the SDK sends it, go over TLS with keep-alive through each proxy in turn, one request at a time (each
proxy in each place of the order in turn) and each with its own prompt, so every proxy meets the
machine's other load at the same moments:
on a shared machine this compares the proxies far more steadily than runs one after the other.
egressguard runs with one worker in enforce mode with every detector on. For each case and round it
prints the CPU (user and system, from /proc) each proxy process spent per request and its median
latency, then the range over the rounds of each egressguard's CPU per request against bare mitmdump's
(and against ``--against``'s).

    python3 bench/request_cpu.py [--requests 200] [--rounds 3] [--against ../other-checkout]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import (
    CONTEXT,
    PROMPT,
    REPLY,
    SHORT_PROMPT,
    TOOL_RESULT,
    ask,
    bench_policy,
    cpu_seconds,
    process,
    proxy_commands,
    proxy_processes,
    read_file,
)
from proxy.commands.localca import UpstreamPKI, make_pki
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port
from tests.upstream import FakeUpstream, Reply

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 10
HISTORY = [
    message
    for turn in range(60)
    for message in (
        {
            "role": "user",
            "content": f"Question {turn}: which settings does the service need for the new database?",
        },
        {
            "role": "assistant",
            "content": f"Answer {turn}: set DATABASE_URL, run make migrate, then restart. " * 3,
        },
    )
]
"""A conversation of 120 messages an agent sends again with every new prompt."""
HEADERS = {**CONTEXT, "authorization": "Bearer sk-test"}
"""Each turn's context, and the API key in the header the OpenAI SDK sends it in (as
``bench/throughput.py``'s agents do): a credential field egressguard reads every turn."""


SECRET_HISTORY = [
    {"role": "user", "content": "Deploy with the key AKIA" + "QYLPMN5HHHFPZAM2, please."},
    *HISTORY[1:],
]
"""The same conversation with an AWS access key in its first message: enforce mode redacts it again in
every request, so every request is rewritten and what was sent is read back."""


def after_history(prompt: str) -> list[dict[str, Any]]:
    return [*HISTORY, *ask(prompt)]


def after_secret_history(prompt: str) -> list[dict[str, Any]]:
    return [*SECRET_HISTORY, *ask(prompt)]


CASES: dict[str, tuple[str, Callable[[str], list[dict[str, Any]]]]] = {
    f"{len(PROMPT)} B prompt": (PROMPT, ask),
    f"{len(SHORT_PROMPT)} B prompt": (SHORT_PROMPT, ask),
    f"{len(TOOL_RESULT)} B tool result": (TOOL_RESULT, read_file),
    f"{len(SHORT_PROMPT)} B prompt after {len(HISTORY)} messages": (SHORT_PROMPT, after_history),
    f"{len(SHORT_PROMPT)} B prompt after {len(HISTORY)} messages, a key in the first": (
        SHORT_PROMPT,
        after_secret_history,
    ),
}


@dataclass
class Proxy:
    name: str
    pid: int
    client: httpx.Client
    cpu: dict[str, list[float]] = field(default_factory=dict)
    """Seconds of CPU per request, per case, one figure per round."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per proxy, case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout whose egressguard runs alongside")
    args = parser.parse_args()

    workdir, pki, upstream, url = bench_upstream("egressguard-request-cpu-")
    checkouts = {"egressguard": ROOT} | (
        {"egressguard --against": args.against.resolve()} if args.against else {}
    )
    numbers = itertools.count()
    with ExitStack() as stack:
        bare_port = free_port()
        bare = proxy_commands(workdir, pki.ca_cert, bare_port, free_port())[0]
        bare_process = stack.enter_context(process(bare, bare_port, workdir, dict(os.environ)))
        proxies = [
            Proxy(
                "bare mitmdump",
                bare_process.pid,
                stack.enter_context(
                    httpx.Client(
                        proxy=f"http://127.0.0.1:{bare_port}",
                        timeout=30,
                        verify=str(workdir / "bare-ca" / "mitmproxy-ca-cert.pem"),
                        headers=HEADERS,
                    )
                ),
            )
        ]
        for name, checkout in checkouts.items():
            home = workdir / name.replace(" ", "").replace("-", "")
            proxies.append(start_guard(stack, name, home, pki.ca_cert, {"PYTHONPATH": str(checkout)}))

        def send(proxy: Proxy, prompt: str, turn: Callable[[str], list[dict[str, Any]]]) -> float:
            return send_turn(proxy, url, f"{next(numbers):06d} {prompt}"[: len(prompt)], turn)

        print(f"{args.requests} requests per proxy, case and round, alternating; {len(REPLY)} B reply,")
        print(
            f"TLS, keep-alive; egressguard: 1 worker, enforce mode, every detector on; {os.cpu_count()} cores"
        )
        for case, (prompt, turn) in CASES.items():
            print(f"\n{case}: CPU per request (median latency)")
            for proxy in proxies:
                for _ in range(WARMUP):
                    send(proxy, prompt, turn)
            for round_number in range(1, args.rounds + 1):
                before = [cpu_seconds(proxy.pid) for proxy in proxies]
                latencies: list[list[float]] = [[] for _ in proxies]
                for index in range(args.requests):
                    # Each proxy takes each place in the order in turn: the one served right after
                    # another pays for what that one left in the caches.
                    for step in range(len(proxies)):
                        place = (index + step) % len(proxies)
                        latencies[place].append(send(proxies[place], prompt, turn))
                cells = []
                for proxy, start, timings in zip(proxies, before, latencies, strict=True):
                    spent = (cpu_seconds(proxy.pid) - start) / args.requests
                    proxy.cpu.setdefault(case, []).append(spent)
                    cells.append(
                        f"{proxy.name} {spent * 1000:.2f} ms ({statistics.median(timings) * 1000:.2f} ms)"
                    )
                load = os.getloadavg()[0]
                print(f"  round {round_number}: " + ", ".join(cells) + f"; load {load:.1f}", flush=True)
            report(case, proxies)
    upstream.close()


def bench_upstream(prefix: str) -> tuple[Path, UpstreamPKI, FakeUpstream, str]:
    """A new work folder named from ``prefix``, the PKI in it, a fake upstream that answers every request
    with the bench's reply, and the address of its chat completions."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    pki = make_pki(workdir / "pki")
    upstream = FakeUpstream(pki)
    upstream.reply = Reply(text=REPLY, piece_size=64)
    return workdir, pki, upstream, f"{upstream.url}/v1/chat/completions"


def start_guard(
    stack: ExitStack, name: str, home: Path, upstream_ca: Path, environment: dict[str, str]
) -> Proxy:
    """egressguard with one worker, the bench's policy in ``home`` and ``environment`` on top of this
    process's (``PYTHONPATH`` names the checkout), and a client whose turns go through it."""
    home.mkdir()
    (home / "policy.yaml").write_text(bench_policy(home / "data"))
    port = free_port()
    guard = proxy_commands(home, upstream_ca, free_port(), port)[1]
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN, **environment}
    guard_process = stack.enter_context(process(guard, port, home, env))
    client = httpx.Client(
        proxy=f"http://{AGENT}:{AGENT_TOKEN}@127.0.0.1:{port}",
        timeout=30,
        verify=str(home / "data" / "ca" / "mitmproxy-ca-cert.pem"),
        headers=HEADERS,
    )
    return Proxy(name, proxy_processes(guard_process.pid)[0], stack.enter_context(client))


def send_turn(proxy: Proxy, url: str, prompt: str, turn: Callable[[str], list[dict[str, Any]]]) -> float:
    """One chat completion of ``turn(prompt)`` through ``proxy``; the seconds it took."""
    body = {"model": "gpt-4o-mini", "messages": turn(prompt), "stream": False}
    start = time.perf_counter()
    proxy.client.post(url, json=body).raise_for_status()
    return time.perf_counter() - start


def report(case: str, proxies: list[Proxy]) -> None:
    """The range over the rounds of each egressguard's CPU per request against bare mitmdump's and, with
    ``--against``, of this checkout's against the other's (each round's figures are from the same moments)."""
    bare, *guards = proxies
    for guard in guards:
        ratios = [own / base for own, base in zip(guard.cpu[case], bare.cpu[case], strict=True)]
        print(f"  {guard.name} / bare mitmdump: {min(ratios):.2f}x to {max(ratios):.2f}x")
    if len(guards) == 2:
        ratios = [own / other for own, other in zip(guards[0].cpu[case], guards[1].cpu[case], strict=True)]
        print(f"  {guards[0].name} / {guards[1].name}: {min(ratios):.2f}x to {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
