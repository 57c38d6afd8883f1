"""Throughput under concurrency, side by side in one run: bare mitmdump, egressguard with 1 and 2 workers.

32 concurrent agents (one keep-alive TLS connection each) send chat completions with an 8 KB prompt (each
its own, so no verdict comes from a cache) to a local fake upstream for a fixed time; egressguard runs in
enforce mode with every detector on. The script prints requests per second, median and p99 latency per
path, egressguard's share of bare mitmdump's throughput, the 2-worker/1-worker ratio, and the resident
memory of each proxy process (each worker) after its load.

The load generator and the fake upstream run in their own processes on the same machine as the proxy,
so on a 2-core machine all three share the cores: the figures are comparable with each other, not with
a dedicated host.

    python3 bench/throughput.py [--clients 32] [--seconds 10] [--runs 3]
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
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import CONTEXT, PROMPT, REPLY, bench_policy, percentile, process, proxy_processes, rss_mib
from proxy.commands.localca import UpstreamPKI, make_pki
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port
from tests.upstream import FakeUpstream, Reply

WARMUP_SECONDS = 2.0


def serve_upstream(pki: UpstreamPKI, ready: Connection) -> None:
    """The fake upstream in a process of its own, so the load generator does not slow it down."""
    upstream = FakeUpstream(pki)
    upstream.reply = Reply(text=REPLY, piece_size=64)
    ready.send(upstream.url)
    while True:
        time.sleep(3600)


def start_upstream(workdir: Path) -> tuple[UpstreamPKI, multiprocessing.Process, str]:
    """A fresh CA under ``workdir`` and the fake upstream in its own process; its chat completions URL."""
    pki = make_pki(workdir / "pki")
    receiver, sender = multiprocessing.Pipe(duplex=False)
    upstream = multiprocessing.get_context("spawn").Process(
        target=serve_upstream, args=(pki, sender), daemon=True
    )
    upstream.start()
    return pki, upstream, f"{receiver.recv()}/v1/chat/completions"


async def agent(
    client: httpx.AsyncClient, url: str, until: float, counting_from: float, latencies: list[float]
) -> int:
    done = 0
    while (start := time.perf_counter()) < until:
        prompt = f"{start:.9f} {PROMPT}"[: len(PROMPT)]
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
        response = await client.post(url, json=body)
        response.raise_for_status()
        if start >= counting_from:
            latencies.append(time.perf_counter() - start)
            done += 1
    return done


async def load(proxy: str, ca: Path, url: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Requests per second over ``seconds`` after a warm-up, and every counted request's latency."""
    latencies: list[float] = []
    counting_from = time.perf_counter() + WARMUP_SECONDS
    until = counting_from + seconds
    agents = []
    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            client = httpx.AsyncClient(proxy=proxy, verify=str(ca), timeout=60, headers=CONTEXT)
            agents.append((client, group.create_task(agent(client, url, until, counting_from, latencies))))
    for client, _ in agents:
        await client.aclose()
    return sum(task.result() for _, task in agents) / seconds, latencies


def guard_command(policy: Path, port: int, ca: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "proxy",
        "run",
        "--config",
        str(policy),
        "--listen-port",
        str(port),
        "--workers",
        str(workers),
        "--set",
        f"ssl_verify_upstream_trusted_ca={ca}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="runs one after the other; ranges are printed")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-throughput-"))
    pki, upstream, url = start_upstream(workdir)
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    beside = Path(sys.executable).with_name("mitmdump")  # the one installed with this Python's mitmproxy
    mitmdump = str(beside) if beside.exists() else shutil.which("mitmdump") or "mitmdump"

    paths: dict[str, tuple[list[str], int, str, Path]] = {}
    bare_port = free_port()
    bare = [mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(bare_port)]
    bare += [
        "--set",
        f"confdir={workdir / 'bare-ca'}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={pki.ca_cert}",
    ]
    paths["bare mitmdump"] = (bare, bare_port, f"http://127.0.0.1:{bare_port}", workdir / "bare-ca")
    for workers in (1, 2):
        data = workdir / f"data-{workers}"
        policy = workdir / f"policy-{workers}.yaml"
        policy.write_text(bench_policy(data))
        port = free_port()
        proxy = f"http://{AGENT}:{AGENT_TOKEN}@127.0.0.1:{port}"
        paths[f"egressguard {workers}w"] = (
            guard_command(policy, port, pki.ca_cert, workers),
            port,
            proxy,
            data / "ca",
        )

    print(
        f"{args.clients} concurrent clients, {len(PROMPT)} B prompt, {len(REPLY)} B reply, TLS, keep-alive;"
    )
    print(f"egressguard in enforce mode, every detector on; {os.cpu_count()} cores shared by all processes")
    print(f"{args.seconds:.0f} s per path after {WARMUP_SECONDS:.0f} s of warm-up")
    ratios: list[tuple[float, float, float]] = []
    for run in range(1, args.runs + 1):
        print(f"run {run} of {args.runs}")
        print(f"  {'path':<18}{'req/s':>9}{'median ms':>11}{'p99 ms':>9}   RSS after load")
        rates: dict[str, float] = {}
        for name, (command, port, proxy, confdir) in paths.items():
            with process(command, port, workdir, env) as running:
                rate, latencies = asyncio.run(
                    load(proxy, confdir / "mitmproxy-ca-cert.pem", url, args.clients, args.seconds)
                )
                rss = " + ".join(f"{rss_mib(pid):.0f}" for pid in proxy_processes(running.pid))
            rates[name] = rate
            median, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
            print(f"  {name:<18}{rate:>9.1f}{median:>11.1f}{p99:>9.1f}   {rss} MiB")
        bare_rate, one, two = rates["bare mitmdump"], rates["egressguard 1w"], rates["egressguard 2w"]
        ratios.append((one / bare_rate, two / bare_rate, two / one))
        print(f"  egressguard 1 worker / bare mitmdump: {one / bare_rate:.0%}")
        print(f"  egressguard 2 workers / bare mitmdump: {two / bare_rate:.0%}")
        print(f"  egressguard 2 workers / 1 worker: {two / one:.2f}x")
    if args.runs > 1:
        low, high = (tuple(map(function, zip(*ratios, strict=True))) for function in (min, max))
        print(f"over {args.runs} runs (the machine's other load moves single runs):")
        print(f"  egressguard 1 worker / bare mitmdump: {low[0]:.0%} to {high[0]:.0%}")
        print(f"  egressguard 2 workers / bare mitmdump: {low[1]:.0%} to {high[1]:.0%}")
        print(f"  egressguard 2 workers / 1 worker: {low[2]:.2f}x to {high[2]:.2f}x")
    upstream.terminate()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
