"""Throughput under concurrency, side by side in one run: bare mitmdump and egressguard, in 1 and 2 processes.

32 concurrent agents (one keep-alive TLS connection each, through a CONNECT tunnel) send the OpenAI SDK's
chat completion request with an 8 KB prompt (each its own, so no verdict comes from a cache) to a local
model API for a fixed time; each response must be a 200 carrying the expected reply, and anything else is
printed as an error, not counted. egressguard runs in enforce mode with every detector on. For each path
and run the script prints requests per second, median and p99 latency, and the errors; then, over the
same counted seconds, the CPU each process spent per request and how many cores it kept busy (the agents,
the upstream, each proxy process, and every other process on the machine), so that a reader sees which of
them ran out first; the resident memory of each proxy process after its load; egressguard's share of bare
mitmdump's throughput and the 2-worker/1-worker ratio, beside what a second process gains bare mitmdump
(``bench/mitmdump_processes.py``: the ceiling on this machine, where the agents and the upstream share
the proxy's cores); and, over several runs, the range of each.

The agents and the upstream (``bench/loadgen.py``) are one thread each, built to cost little CPU per
request, and run in processes of their own on the same machine as the proxy: on a 2-core machine they and
the proxy share the cores, so a proxy can reach at most the cores the others leave it. The load is
measured only once every proxy process listens, so the kernel spreads the agents' connections over all
the workers.

    python3 bench/throughput.py [--clients 32] [--seconds 10] [--runs 3] [--nice -10]

On a machine others share, ``--nice -10`` puts every process of the bench ahead of theirs, so that the
figures are those of the cores the bench needs rather than of the share the scheduler gives it; the
"other processes" column says how much they still took.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mitmproxy.certs import CertStore

from bench.latency import (
    CONTEXT,
    PROMPT,
    REPLY,
    bench_policy,
    mitmdump,
    percentile,
    process,
    proxy_processes,
    rss_mib,
)
from bench.loadgen import Agents, Tunnel, sdk_chat_request, serve_upstream
from proxy.commands.localca import make_pki
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port

HERE = Path(__file__).resolve().parent
WARMUP_SECONDS = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    name: str
    command: list[str]
    port: int
    ca: Path
    """the proxy's CA certificate, which the agents trust"""
    credentials: tuple[str, str] | None
    workers: int


@dataclass
class Result:
    rate: float
    latencies: list[float]
    errors: dict[str, int]
    cpu: dict[str, float]
    """CPU seconds over the counted time, by process: the agents, the upstream, each proxy process"""
    other_cores: float
    """cores kept busy by every other process on the machine over the counted time"""
    rss: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    """the agents' connections each proxy process held once the counting began"""

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def proxy_cpu(self) -> float:
        """The proxy's CPU seconds per request, all its processes together."""
        spent = sum(cpu for process, cpu in self.cpu.items() if process not in ("agents", "upstream"))
        return spent / max(self.requests, 1)


def ticks(pid: int) -> int:
    """User and system CPU time of a process so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_ticks() -> int:
    """The CPU time of the whole machine so far, idle and waiting for I/O left out, in clock ticks."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


LISTEN, ESTABLISHED = "0A", "01"


def sockets(port: int, state: str) -> set[str]:
    """The inodes of the TCP sockets in ``state`` whose local port is ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (each worker with ``SO_REUSEPORT`` has its own)."""
    return len(sockets(port, LISTEN))


def connections(port: int, pid: int) -> int:
    """How many of the agents' connections to ``port`` process ``pid`` holds."""
    accepted = {f"socket:[{inode}]" for inode in sockets(port, ESTABLISHED)}
    descriptors = Path(f"/proc/{pid}/fd")
    held = 0
    for descriptor in descriptors.iterdir():
        with contextlib.suppress(OSError):
            held += os.readlink(descriptor) in accepted
    return held


def wait_for_listeners(port: int, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {listeners(port)} of {count} processes listen on port {port}")
        time.sleep(0.05)


def measure(
    path: Target, workdir: Path, upstream_url: str, upstream_pid: int, clients: int, seconds: float
) -> Result:
    """One path's figures over ``seconds`` after the warm-up."""
    request = sdk_chat_request(upstream_url, PROMPT, CONTEXT)
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    with process(path.command, path.port, workdir, env) as running:
        wait_for_listeners(path.port, path.workers)
        context = ssl.create_default_context(cafile=path.ca)
        target = upstream_url.removeprefix("https://")
        tunnel = Tunnel(("127.0.0.1", path.port), target, context, path.credentials)
        workers = proxy_processes(running.pid)
        names = {upstream_pid: "upstream"} | (
            {running.pid: "proxy"}
            if workers == [running.pid]
            else {running.pid: "supervisor"} | {pid: f"w{index}" for index, pid in enumerate(workers)}
        )
        agents = Agents(tunnel, request, REPLY, clients)
        samples: list[tuple[float, float, dict[int, int], int]] = []

        held: list[int] = []

        def sample() -> None:
            if not held:
                held.extend(connections(path.port, pid) for pid in workers)
            samples.append(
                (time.perf_counter(), time.process_time(), {pid: ticks(pid) for pid in names}, busy_ticks())
            )

        counting_from = time.perf_counter() + WARMUP_SECONDS
        try:
            agents.run(counting_from, sample, counting_from + seconds)
        finally:
            agents.close()
        rss = [rss_mib(pid) for pid in workers]
    (start, own_start, start_ticks, start_busy), (end, own_end, end_ticks, end_busy) = samples
    latencies = agents.tally.within(start, end)
    cpu = {"agents": own_end - own_start} | {
        names[pid]: (end_ticks[pid] - start_ticks[pid]) / CLOCK_TICKS for pid in names
    }
    ours = sum(end_ticks[pid] - start_ticks[pid] for pid in names) / CLOCK_TICKS + cpu["agents"]
    other = max(0.0, (end_busy - start_busy) / CLOCK_TICKS - ours)
    return Result(
        len(latencies) / (end - start),
        latencies,
        dict(agents.tally.errors),
        cpu,
        other / (end - start),
        rss,
        held,
    )


def start_upstream(workdir: Path) -> tuple[Path, multiprocessing.process.BaseProcess, str]:
    """A fresh CA under ``workdir`` and the model API in its own process; its CA and base URL."""
    pki = make_pki(workdir / "pki")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    upstream = context.Process(target=serve_upstream, args=(pki, REPLY, sender), daemon=True)
    upstream.start()
    return pki.ca_cert, upstream, receiver.recv()


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


def paths_to_measure(workdir: Path, upstream_ca: Path) -> list[Target]:
    port = free_port()
    bare = [mitmdump(), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port)]
    bare += [
        "--set",
        f"confdir={workdir / 'bare-ca'}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={upstream_ca}",
    ]
    bare_ca = workdir / "bare-ca"
    # Made once, before either bare path starts: processes starting together would each write their own.
    CertStore.from_store(bare_ca, "mitmproxy", 2048)
    paths = [Target("bare mitmdump", bare, port, bare_ca / "mitmproxy-ca-cert.pem", None, 1)]
    port = free_port()
    processes = [sys.executable, str(HERE / "mitmdump_processes.py"), "2", *bare[1:]]
    processes[processes.index("--listen-port") + 1] = str(port)
    paths.append(Target("bare mitmdump 2p", processes, port, bare_ca / "mitmproxy-ca-cert.pem", None, 2))
    for workers in (1, 2):
        data = workdir / f"data-{workers}"
        policy = workdir / f"policy-{workers}.yaml"
        policy.write_text(bench_policy(data))
        port = free_port()
        command = guard_command(policy, port, upstream_ca, workers)
        ca = data / "ca" / "mitmproxy-ca-cert.pem"
        paths.append(Target(f"egressguard {workers}w", command, port, ca, (AGENT, AGENT_TOKEN), workers))
    return paths


def spread(values: list[float], form: str) -> str:
    low, high = min(values), max(values)
    return format(low, form) if len(values) == 1 or low == high else f"{low:{form}} to {high:{form}}"


def print_run(results: dict[str, Result], seconds: float) -> None:
    print(
        f"  {'path':<18}{'req/s':>8}{'median ms':>11}{'p99 ms':>8}{'errors':>8}   RSS after load, connections"
    )
    for name, result in results.items():
        median = statistics.median(result.latencies) * 1000 if result.latencies else float("nan")
        p99 = percentile(result.latencies, 0.99) * 1000 if result.latencies else float("nan")
        errors = sum(result.errors.values())
        rss = " + ".join(f"{value:.0f}" for value in result.rss)
        held = " + ".join(map(str, result.connections))
        print(f"  {name:<18}{result.rate:>8.1f}{median:>11.1f}{p99:>8.1f}{errors:>8}   {rss} MiB, {held}")
    print(f"  CPU ms per request (cores kept busy) over the {seconds:.0f} counted seconds, by process:")
    for name, result in results.items():
        parts = [
            f"{process} {cpu / max(result.requests, 1) * 1000:.3f} ({cpu / seconds:.2f})"
            for process, cpu in result.cpu.items()
        ]
        print(f"  {name:<18}{', '.join(parts)}; other processes ({result.other_cores:.2f})")
    for name, result in results.items():
        for error, count in sorted(result.errors.items(), key=lambda item: -item[1])[:5]:
            print(f"  {name} error x{count}: {error}")


RATIO_FORMS = {
    "egressguard 1 worker / bare mitmdump": ".0%",
    "egressguard 2 workers / bare mitmdump": ".0%",
    "egressguard 2 workers / 1 worker": ".2f",
    "bare mitmdump 2 processes / 1 process": ".2f",
    "proxy CPU per request, egressguard 1 worker / bare mitmdump": ".2f",
    "proxy CPU per request, egressguard 2 workers / 1 worker": ".2f",
}


def ratios(results: dict[str, Result]) -> dict[str, float]:
    bare, bare_two, one, two = (
        results[name] for name in ("bare mitmdump", "bare mitmdump 2p", "egressguard 1w", "egressguard 2w")
    )
    figures = (
        one.rate / bare.rate,
        two.rate / bare.rate,
        two.rate / one.rate,
        bare_two.rate / bare.rate,
        one.proxy_cpu / bare.proxy_cpu,
        two.proxy_cpu / one.proxy_cpu,
    )
    return dict(zip(RATIO_FORMS, figures, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs one after the other, every other one in the reverse order; ranges are printed",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="the scheduling priority of every process the bench starts and of the agents (negative: ahead "
        "of the machine's other work, which then takes only what they leave; needs root)",
    )
    args = parser.parse_args()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by the upstream and the proxies
    except PermissionError:
        parser.error(f"--nice {args.nice} needs root (or CAP_SYS_NICE)")
    # Where the kernel groups processes by session (autogroup), a nice value weighs only within the
    # session; the session's own weight is set here.
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(args.nice))

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-throughput-"))
    upstream_ca, upstream, url = start_upstream(workdir)
    paths = paths_to_measure(workdir, upstream_ca)
    print(f"{args.clients} concurrent agents, {len(PROMPT)} B prompt, {len(REPLY)} B reply, TLS, keep-alive;")
    print(f"egressguard in enforce mode, every detector on; {os.cpu_count()} cores shared by all processes;")
    print(f"{args.seconds:.0f} s counted per path after {WARMUP_SECONDS:.0f} s of warm-up; nice {args.nice}")
    runs: list[dict[str, Result]] = []
    loads: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            loads.append(os.getloadavg()[0])
            print(f"run {run} of {args.runs}, load average {loads[-1]:.2f} at its start")
            # Every other run goes the other way round, so that no path always meets the same moment of
            # the machine's other load.
            order = paths if run % 2 else paths[::-1]
            measured = {
                path.name: measure(path, workdir, url, upstream.pid or 0, args.clients, args.seconds)
                for path in order
            }
            results = {path.name: measured[path.name] for path in paths}
            runs.append(results)
            print_run(results, args.seconds)
            for title, ratio in ratios(results).items():
                print(f"  {title}: {ratio:{RATIO_FORMS[title]}}")
    finally:
        upstream.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.runs > 1:
        print(f"over {args.runs} runs, load average {spread(loads, '.2f')} at their starts:")
        for path in paths:
            rates = [results[path.name].rate for results in runs]
            medians = [statistics.median(results[path.name].latencies) * 1000 for results in runs]
            p99s = [percentile(results[path.name].latencies, 0.99) * 1000 for results in runs]
            print(
                f"  {path.name}: {spread(rates, '.1f')} req/s, median {spread(medians, '.1f')} ms, "
                f"p99 {spread(p99s, '.1f')} ms"
            )
        for title, form in RATIO_FORMS.items():
            print(f"  {title}: {spread([ratios(results)[title] for results in runs], form)}")


if __name__ == "__main__":
    main()
