"""How long one large inspection holds up every other agent: small requests sent while a large prompt is
inspected, through bare mitmdump and through egressguard, in one run.

One client posts a 7.5 MB chat prompt (the policy raises the inspection cap to 16 MiB, so the prompt is
inspected whole, in a worker thread); meanwhile another client sends one-line
prompts back to back and times each. Printed per path: the small requests' latency when the proxy is idle,
their median and worst latency while the large prompt is in flight, and how long the large one took.
egressguard inspects large bodies off the event loop, but its detectors hold Python's GIL while they run,
so the worst small-request latency is the figure to watch; bare mitmdump shows what the proxy itself costs.

Then the same for a JSON request of many short strings in a field no dialect reads (``--strings``
five-digit numbers, 180 KB for 20,000), in enforce mode: each such string is scanned with up to 256
characters of what its field carried before, so the body costs what one many times its size does, and is
inspected in a worker thread as a large one is; and for ``--together`` such requests at once, which are
inspected one after the other, so that the event loop waits for the GIL behind one thread, not six.

Then the same for a compression bomb: a 256 KB gzip completion that inflates to 256 MiB, over an
inspection cap of 64 KiB, so egressguard (in enforce mode) decodes and redacts it as it arrives, on the
event loop; the small prompts go to another upstream meanwhile.

    python3 bench/stall.py [--large-mb 7.5] [--rounds 3] [--strings 20000] [--together 6] [--bomb-mib 256]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import CONTEXT, SHORT_PROMPT, TRANSCRIPT, ask, bench_policy, process, proxy_commands
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


def small_requests_while(
    make_client: Callable[[], httpx.Client], url: str, large_request: Callable[[], float], rounds: int
) -> dict[str, float]:
    """Small-request latencies while ``large_request`` runs (it returns its own seconds), ``rounds`` times."""
    during: list[float] = []
    large_seconds: list[float] = []
    with make_client() as small_client:
        for round_number in range(rounds):
            sender = threading.Thread(target=lambda: large_seconds.append(large_request()))
            sender.start()
            number = 0
            while sender.is_alive():
                during.append(timed_post(small_client, url, f"r{round_number}-{number} {SHORT_PROMPT}"))
                number += 1
            sender.join()
    return {
        "during median": statistics.median(during),
        "during worst": max(during),
        "small requests during": len(during) / rounds,
        "large request": statistics.median(large_seconds),
    }


def stall(make_client: Callable[[], httpx.Client], url: str, large: str, rounds: int) -> dict[str, float]:
    """Small-request latencies idle and while ``large`` is in flight, over ``rounds`` large requests."""
    with make_client() as small_client:
        idle = [timed_post(small_client, url, f"{number} {SHORT_PROMPT}") for number in range(IDLE_REQUESTS)]
    sent = itertools.count()  # each large prompt differs, as in real traffic
    during = small_requests_while(
        make_client, url, lambda: send_with_new_client(make_client, url, f"{next(sent)} {large}"), rounds
    )
    return {"idle median": statistics.median(idle), **during}


def strings_stall(
    make_client: Callable[[], httpx.Client], url: str, strings: int, together: int, rounds: int
) -> dict[str, float]:
    """Small-request latencies while ``together`` bodies of ``strings`` short strings each are inspected at
    once, over ``rounds`` times (each body with other numbers, as in real traffic); the large request's
    time is the slowest body's."""
    sent = itertools.count()

    def send_strings() -> None:
        first = next(sent) * strings
        numbers = [f"{number % 100_000:05d}" for number in range(first, first + strings)]
        with make_client() as client:
            body = {"model": "m", "messages": ask(SHORT_PROMPT), "metadata": numbers}
            client.post(url, json=body).raise_for_status()

    def send_together() -> float:
        started = time.perf_counter()
        senders = [threading.Thread(target=send_strings) for _ in range(together)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        return time.perf_counter() - started

    return small_requests_while(make_client, url, send_together, rounds)


def bomb_stall(
    make_client: Callable[[], httpx.Client], bomb_url: str, small_url: str, rounds: int
) -> dict[str, float]:
    """Small-request latencies while a compression bomb is relayed, over ``rounds`` bombs."""

    def fetch_bomb() -> float:
        started = time.perf_counter()
        with make_client() as client:
            try:
                with client.stream("POST", bomb_url, json={"model": "m", "messages": ask("hi")}) as answer:
                    for _ in answer.iter_raw():
                        pass
            except httpx.HTTPError:
                pass  # cut by the proxy: the figure is how long it took
        return time.perf_counter() - started

    return small_requests_while(make_client, small_url, fetch_bomb, rounds)


def print_figures(results: dict[str, dict[str, float]], large: str) -> None:
    for name, figures in results.items():
        idle = f"idle {figures['idle median'] * 1000:6.1f} ms   " if "idle median" in figures else ""
        print(
            f"  {name:14} {idle}during: median "
            f"{figures['during median'] * 1000:7.1f} ms, worst {figures['during worst'] * 1000:7.1f} ms "
            f"({figures['small requests during']:.0f} requests)   {large} {figures['large request']:.2f} s"
        )
    guard, bare_figures = results["egressguard"], results["bare mitmdump"]
    print(
        f"  worst stall egressguard / bare mitmdump: "
        f"{guard['during worst'] / bare_figures['during worst']:.1f}x "
        f"({guard['during worst'] * 1000:.0f} ms vs {bare_figures['during worst'] * 1000:.0f} ms)"
    )


def clients_for(workdir: Path, bare_port: int, guard_port: int) -> dict[str, Callable[[], httpx.Client]]:
    return {
        "bare mitmdump": lambda: httpx.Client(
            proxy=f"http://127.0.0.1:{bare_port}",
            timeout=120,
            verify=str(workdir / "bare-ca" / "mitmproxy-ca-cert.pem"),
            headers=CONTEXT,
        ),
        "egressguard": lambda: httpx.Client(
            proxy=f"http://{AGENT}:{AGENT_TOKEN}@127.0.0.1:{guard_port}",
            timeout=120,
            verify=str(workdir / "data" / "ca" / "mitmproxy-ca-cert.pem"),
            headers=CONTEXT,
        ),
    }


def side_by_side(
    workdir: Path,
    policy: str,
    upstream_ca: Path,
    title: str,
    measure: Callable[[Callable[[], httpx.Client]], dict[str, float]],
    bare_options: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """``measure`` through bare mitmdump (with ``bare_options``), then through egressguard under ``policy``,
    both run from ``workdir``."""
    workdir.mkdir(exist_ok=True)
    (workdir / "policy.yaml").write_text(policy)
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    bare_port, guard_port = free_port(), free_port()
    bare, guard = proxy_commands(workdir, upstream_ca, bare_port, guard_port)
    results: dict[str, dict[str, float]] = {}
    with process([*bare, *bare_options], bare_port, workdir, env), process(guard, guard_port, workdir, env):
        print(title)
        for name, make_client in clients_for(workdir, bare_port, guard_port).items():
            results[name] = measure(make_client)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mb", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strings", type=int, default=20_000)
    parser.add_argument("--together", type=int, default=6, help="bodies of strings sent at once")
    parser.add_argument("--bomb-mib", type=int, default=256)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-stall-"))
    pki = make_pki(workdir / "pki")
    upstream = FakeUpstream(pki)
    upstream.reply = Reply(text="ok")
    url = f"{upstream.url}/v1/chat/completions"
    large = (TRANSCRIPT * (int(args.large_mb * 1e6) // len(TRANSCRIPT) + 1))[: int(args.large_mb * 1e6)]
    results = side_by_side(
        workdir / "large",
        policy_yaml(workdir / "large" / "data", extra="inspection: {max_body_bytes: 16MiB}\n"),
        pki.ca_cert,
        f"a {len(large) / 1e6:.1f} MB prompt, {args.rounds} rounds; one-line prompts sent meanwhile",
        lambda make_client: stall(make_client, url, large, args.rounds),
        ("--set", "stream_large_bodies=16m"),  # the same cap as egressguard's policy
    )
    print_figures(results, "large one")

    for together in (1, args.together):
        results = side_by_side(
            workdir / f"strings-{together}",
            bench_policy(workdir / f"strings-{together}" / "data"),
            pki.ca_cert,
            f"{together} JSON request(s) at once of {args.strings} five-digit strings each in a field no "
            f"dialect reads (enforce), {args.rounds} rounds; one-line prompts sent meanwhile",
            partial(strings_stall, url=url, strings=args.strings, together=together, rounds=args.rounds),
        )
        print_figures(results, "strings")

    text = b'{"choices":[{"message":{"content":"' + b"A" * (args.bomb_mib << 20) + b'"}}]}'
    bomber = FakeUpstream(pki)
    bomb = gzip.compress(text, 6)
    bomber.reply = Reply(encoded_body=("gzip", bomb))
    results = side_by_side(
        workdir / "bomb",
        policy_yaml(workdir / "bomb" / "data", mode="enforce", extra="inspection: {max_body_bytes: 64KiB}\n"),
        pki.ca_cert,
        f"a {len(bomb) / 1e3:.0f} KB gzip completion inflating to {args.bomb_mib} MiB (cap 64 KiB, "
        f"enforce), {args.rounds} rounds; one-line prompts meanwhile",
        lambda make_client: bomb_stall(make_client, f"{bomber.url}/v1/chat/completions", url, args.rounds),
        ("--set", "stream_large_bodies=64k"),
    )
    bomber.close()
    upstream.close()
    print_figures(results, "bomb")


if __name__ == "__main__":
    main()
