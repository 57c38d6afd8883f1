"""How long one large inspection holds up every other agent: small requests sent while a large prompt is
inspected, through bare mitmdump and through egressguard, in one run.

One client posts a 7.5 MB chat prompt (the policy raises the inspection cap to 16 MiB, so the prompt is
inspected whole, in a worker thread); meanwhile another client sends one-line
prompts back to back and times each. Printed per path: the small requests' latency when the proxy is idle,
their median and worst latency while the large prompt is in flight, and how long the large one took.
egressguard inspects large bodies off the event loop, but its detectors hold Python's GIL while they run,
so the worst small-request latency is the figure to watch; bare mitmdump shows what the proxy itself costs.

    python3 bench/stall.py [--large-mb 7.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import SHORT_PROMPT, TRANSCRIPT, ask, process, proxy_commands

from proxy.commands.localca import make_pki
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port, policy_yaml
from tests.upstream import FakeUpstream, Reply

IDLE_REQUESTS = 30


def timed_post(client: httpx.Client, url: str, prompt: str) -> float:
    started = time.perf_counter()
    client.post(url, json={"model": "m", "messages": ask(prompt)}).raise_for_status()
    return time.perf_counter() - started


def send_with_new_client(make_client: Callable[[], httpx.Client], url: str, prompt: str) -> float:
    with make_client() as client:
        return timed_post(client, url, prompt)


def stall(make_client: Callable[[], httpx.Client], url: str, large: str, rounds: int) -> dict[str, float]:
    """Small-request latencies idle and while ``large`` is in flight, over ``rounds`` large requests."""
    with make_client() as small_client:
        idle = [timed_post(small_client, url, f"{number} {SHORT_PROMPT}") for number in range(IDLE_REQUESTS)]
        during: list[float] = []
        large_seconds: list[float] = []
        for round_number in range(rounds):
            sender = threading.Thread(
                target=lambda number=round_number: large_seconds.append(
                    send_with_new_client(make_client, url, f"{number} {large}")
                )
            )
            sender.start()
            number = 0
            while sender.is_alive():
                during.append(timed_post(small_client, url, f"r{round_number}-{number} {SHORT_PROMPT}"))
                number += 1
            sender.join()
    return {
        "idle median": statistics.median(idle),
        "during median": statistics.median(during),
        "during worst": max(during),
        "small requests during": len(during) / rounds,
        "large request": statistics.median(large_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mb", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-stall-"))
    pki = make_pki(workdir / "pki")
    upstream = FakeUpstream(pki)
    upstream.reply = Reply(text="ok")
    url = f"{upstream.url}/v1/chat/completions"
    large = (TRANSCRIPT * (int(args.large_mb * 1e6) // len(TRANSCRIPT) + 1))[: int(args.large_mb * 1e6)]
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    bare_port, guard_port = free_port(), free_port()
    (workdir / "policy.yaml").write_text(
        policy_yaml(workdir / "data", extra="inspection: {max_body_bytes: 16MiB}\n")
    )
    bare, guard = proxy_commands(workdir, pki.ca_cert, bare_port, guard_port)
    bare += ["--set", "stream_large_bodies=16m"]  # the same cap as egressguard's policy
    clients: dict[str, Callable[[], httpx.Client]] = {
        "bare mitmdump": lambda: httpx.Client(
            proxy=f"http://127.0.0.1:{bare_port}",
            timeout=120,
            verify=str(workdir / "bare-ca" / "mitmproxy-ca-cert.pem"),
        ),
        "egressguard": lambda: httpx.Client(
            proxy=f"http://{AGENT}:{AGENT_TOKEN}@127.0.0.1:{guard_port}",
            timeout=120,
            verify=str(workdir / "data" / "ca" / "mitmproxy-ca-cert.pem"),
        ),
    }
    results: dict[str, dict[str, float]] = {}
    with process(bare, bare_port, workdir, env), process(guard, guard_port, workdir, env):
        print(f"a {len(large) / 1e6:.1f} MB prompt, {args.rounds} rounds; one-line prompts sent meanwhile")
        for name, make_client in clients.items():
            results[name] = stall(make_client, url, large, args.rounds)
    upstream.close()
    for name, figures in results.items():
        print(
            f"  {name:14} idle {figures['idle median'] * 1000:6.1f} ms   during: median "
            f"{figures['during median'] * 1000:7.1f} ms, worst {figures['during worst'] * 1000:7.1f} ms "
            f"({figures['small requests during']:.0f} requests)   large one {figures['large request']:.2f} s"
        )
    guard, bare_figures = results["egressguard"], results["bare mitmdump"]
    print(
        f"  worst stall egressguard / bare mitmdump: "
        f"{guard['during worst'] / bare_figures['during worst']:.1f}x "
        f"({guard['during worst'] * 1000:.0f} ms vs {bare_figures['during worst'] * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
