"""Latency added by egressguard, side by side with bare mitmdump and a direct connection, in one run.

The same httpx client sends the same chat-completion requests (an 8 KB prompt, a 2 KB reply; a one-line
prompt; a 64 KB tool result, as a coding agent sends after reading a long file) to a local fake upstream
over TLS: directly, through ``mitmdump`` with no addons, and through ``egressguard run`` with one worker
in enforce mode with every detector on (every threat enforced, prompts redacted, alert rules evaluated on
every turn), the three paths taking turns request by request so that all meet the machine's other load
at the same moments. Each request's prompt or tool result starts with its own number, so no verdict is
served from the detector's cache. It prints the median and p99 per path and the ratios egressguard /
bare mitmdump, then does the same for a streamed reply (time to first event and total), the CPU each
proxy spends per streamed event of the chat, Responses and Gemini streams, when a stream's events arrive
together and when they arrive one at a time, and each proxy's resident memory after the run. With
``--against DIR`` an egressguard of another checkout (the code before a change) takes its turns beside
them, and each measure is also given as this checkout's / that one's: the ratios to bare mitmdump move with
the machine's load, so only a run side by side tells what a change did.

    python3 bench/latency.py [--requests 300] [--stream-requests 20] [--stream-cpu-only] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.commands.localca import make_pki
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, free_port, policy_yaml
from tests.upstream import FakeUpstream, Reply, pieces

TRANSCRIPT = "Please review the following support transcript and summarise the customer's problem. "
PROMPT = (TRANSCRIPT * 100)[:8192]
SHORT_PROMPT = "What is the status of order 99-1234, and when will it ship?"
DOCUMENT = (
    "## Configuration\n\nSet `DATABASE_URL` before the first start and run `make migrate`. Ignore the "
    "warnings about deprecated options; they go away after the first migration. Follow the steps in "
    "docs/deploy.md to run the service behind a reverse proxy, and do not expose the admin port.\n\n"
)
TOOL_RESULT = (DOCUMENT * 300)[: 64 * 1024]
REPLY = ("The customer reports that the invoice total does not match the order confirmation. " * 30)[:2048]
STREAM_PAUSE = 0.2
THINK_SECONDS = 0.05
DELTA_CHARACTERS = 12
"""A streamed reply's text per event, as models send it."""
AGAINST = "egressguard, against"
"""egressguard from the checkout ``--against`` names."""
STREAMING_BARE = "bare mitmdump, streaming"
"""bare mitmdump with ``stream_large_bodies=1``: it relays each event as it arrives instead of the whole
reply at its end."""
CONTEXT = {"x-user-id": "bench-user", "x-purpose": "benchmark", "x-consent-id": "bench-consent"}
"""What each turn names (compliance in enforce mode refuses a turn without a purpose)."""


def bench_policy(data_dir: Path, extra: str = "") -> str:
    """The harness policy in enforce mode with every detector on: prompts redacted too, and alert rules
    evaluated on every turn (to a file)."""
    return policy_yaml(
        data_dir,
        mode="enforce",
        extra=f"redaction: {{requests: true}}\n"
        f"alerts: {{destinations: {{secops: {{type: file, path: {data_dir / 'alerts.jsonl'}}}}}}}\n{extra}",
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def proxy_processes(pid: int) -> list[int]:
    """The processes that serve traffic: a supervisor's workers (the children of the process they are
    forked from, a child of the supervisor), or the process itself."""
    workers = [
        int(worker)
        for child in _children(pid)
        if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
        for worker in _children(child)
    ]
    return workers or [pid]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def process(
    command: list[str], port: int, workdir: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    log = (workdir / f"{port}.log").open("wb")
    child = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90  # a supervisor and its workers start slowly on a busy machine
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.2)
                break
            except httpx.HTTPError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not start; see {log.name}") from None
                time.sleep(0.05)
        yield child
    finally:
        child.terminate()
        child.wait(timeout=10)
        log.close()


def mitmdump() -> str:
    """The mitmdump installed with this Python's mitmproxy (a virtual environment's, which need not be on
    PATH), else the one on PATH."""
    beside = Path(sys.executable).with_name("mitmdump")
    return str(beside) if beside.exists() else shutil.which("mitmdump") or "mitmdump"


def proxy_commands(
    workdir: Path, upstream_ca: Path, bare_port: int, guard_port: int
) -> tuple[list[str], list[str]]:
    """The commands that run bare mitmdump (its CA under ``workdir/bare-ca``) and egressguard (with
    ``workdir/policy.yaml``), both trusting the fake upstream's CA."""
    bare = [
        mitmdump(),
        "-q",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(bare_port),
        "--set",
        f"confdir={workdir / 'bare-ca'}",
        "--set",
        f"ssl_verify_upstream_trusted_ca={upstream_ca}",
    ]
    guard = [
        sys.executable,
        "-m",
        "proxy",
        "run",
        "--config",
        str(workdir / "policy.yaml"),
        "--listen-port",
        str(guard_port),
        "--workers",
        "1",
        "--set",
        f"ssl_verify_upstream_trusted_ca={upstream_ca}",
    ]
    return bare, guard


def ask(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


def read_file(content: str) -> list[dict[str, Any]]:
    """A turn that hands the model what a read_file tool returned."""
    call = {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
    return [
        {"role": "user", "content": "Summarise the configuration section of the docs."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": content},
    ]


Request = Callable[[str], dict[str, Any]]
"""The JSON body of a request that carries the given prompt."""


def chat(*, stream: bool, turn: Callable[[str], list[dict[str, Any]]] = ask) -> Request:
    return lambda prompt: {"model": "gpt-4o-mini", "messages": turn(prompt), "stream": stream}


STREAMS: dict[str, tuple[str, Request]] = {
    "chat": ("/v1/chat/completions", chat(stream=True)),
    "responses": ("/v1/responses", lambda prompt: {"model": "gpt-4o-mini", "input": prompt, "stream": True}),
    "gemini": (
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        lambda prompt: {"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
    ),
}
"""Per streaming API: the path of a streamed answer and the request that asks for it."""
EVENT_PAUSE = 0.002
"""The pause after each event of a stream whose events arrive one at a time (a model that writes slower
than the proxy reads): each event is read, filtered and sent on its own."""
CPU_ROUNDS = 4


def measure(
    clients: dict[str, httpx.Client],
    url: str,
    count: int,
    *,
    request: Request,
    prompt: str = PROMPT,
) -> dict[str, list[tuple[float, float]]]:
    """(time to first body byte, total) per request and path, after a warm-up that opens each connection.
    The paths take turns request by request, each in each place of the order in turn, so that all of them
    meet the machine's other load at the same moments."""
    names = list(clients)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for index in range(count + 5):
        body = request(f"{index:06d} {prompt}"[: len(prompt)])
        for step in range(len(names)):
            name = names[(index + step) % len(names)]
            start = time.perf_counter()
            with clients[name].stream("POST", url, json=body) as response:
                response.raise_for_status()
                first = None
                for _ in response.iter_raw():
                    first = first or time.perf_counter()
            end = time.perf_counter()
            if index >= 5:
                timings[name].append(((first or end) - start, end - start))
    return timings


def totals(timings: dict[str, list[tuple[float, float]]]) -> dict[str, list[float]]:
    return {name: [total for _, total in pairs] for name, pairs in timings.items()}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * share) - 1)]


def report(title: str, results: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"  {'path':<14}{'median ms':>12}{'p99 ms':>10}")
    for name, values in results.items():
        print(
            f"  {name:<14}{statistics.median(values) * 1000:>12.2f}{percentile(values, 0.99) * 1000:>10.2f}"
        )
    bare, guard, direct = (
        statistics.median(results[name]) for name in ("bare mitmdump", "egressguard", "direct")
    )
    bare_p99, guard_p99 = (percentile(results[name], 0.99) for name in ("bare mitmdump", "egressguard"))
    added_bare, added_guard = (bare - direct) * 1000, (guard - direct) * 1000
    print(
        f"  egressguard / bare mitmdump: median {guard / bare:.2f}x, p99 {guard_p99 / bare_p99:.2f}x   "
        f"(added over direct: bare {added_bare:.2f} ms, egressguard {added_guard:.2f} ms)"
    )
    if AGAINST in results:
        against, against_p99 = statistics.median(results[AGAINST]), percentile(results[AGAINST], 0.99)
        print(
            f"  against / bare mitmdump: median {against / bare:.2f}x, p99 {against_p99 / bare_p99:.2f}x; "
            f"egressguard / against: median {guard / against:.2f}x, p99 {guard_p99 / against_p99:.2f}x"
        )


def stream_cpu(
    clients: dict[str, httpx.Client], pids: dict[str, int], url: str, request: Request, streams: int
) -> dict[str, float]:
    """CPU seconds each proxy spends per streamed text event over ``streams`` streamed replies (a 2 KB
    reply in deltas of DELTA_CHARACTERS), the proxies taking turns in rounds so that all of them meet the
    machine's other load at the same moments."""
    spent = dict.fromkeys(clients, 0.0)
    names = list(clients)
    per_round = max(1, streams // CPU_ROUNDS)
    for round_number in range(CPU_ROUNDS):
        for step in range(len(names)):
            name = names[(round_number + step) % len(names)]
            before = cpu_seconds(pids[name])
            measure({name: clients[name]}, url, per_round, request=request)
            spent[name] += cpu_seconds(pids[name]) - before
    events = len(pieces(REPLY, DELTA_CHARACTERS)) * (per_round + 5) * CPU_ROUNDS
    return {name: seconds / events for name, seconds in spent.items()}


def proxy_client(port: int, verify: Path, credentials: str = "") -> httpx.Client:
    return httpx.Client(
        proxy=f"http://{credentials}127.0.0.1:{port}", timeout=30, verify=str(verify), headers=CONTEXT
    )


def report_stream_cpu(results: dict[str, dict[str, float]]) -> None:
    print(
        f"\nSSE CPU per streamed text event ({len(pieces(REPLY, DELTA_CHARACTERS))} events of "
        f"{DELTA_CHARACTERS} characters), one worker each"
    )
    against = any(AGAINST in spent for spent in results.values())
    columns = f"{'bare':>9}{'streaming':>11}{'egressguard':>13}{'/ bare':>9}{'/ streaming':>13}"
    columns += f"{'against':>10}{'/ streaming':>13}{'this / against':>16}" if against else ""
    print(f"  {'stream':<32}{columns}")
    for case, spent in results.items():
        bare, streaming, guard = (spent[name] for name in ("bare mitmdump", STREAMING_BARE, "egressguard"))
        line = (
            f"  {case:<32}{bare * 1e6:>6.1f} us{streaming * 1e6:>8.1f} us{guard * 1e6:>10.1f} us"
            f"{guard / bare:>8.2f}x{guard / streaming:>12.2f}x"
        )
        if against:
            other = spent[AGAINST]
            line += f"{other * 1e6:>7.1f} us{other / streaming:>12.2f}x{guard / other:>15.2f}x"
        print(line)
    print("  (bare: mitmdump holding each reply until it ends; streaming: with stream_large_bodies=1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--stream-requests", type=int, default=20)
    parser.add_argument(
        "--stream-cpu-only", action="store_true", help="measure only the CPU per streamed event"
    )
    parser.add_argument("--against", type=Path, help="another checkout whose egressguard takes turns beside")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="egressguard-bench-"))
    pki = make_pki(workdir / "pki")
    upstream = FakeUpstream(pki)
    url = f"{upstream.url}/v1/chat/completions"
    env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
    # Each egressguard runs the code of its own checkout, whatever the installed package points at.
    guard_env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    bare_port, guard_port, streaming_port = free_port(), free_port(), free_port()
    (workdir / "policy.yaml").write_text(bench_policy(workdir / "data"))
    bare, guard = proxy_commands(workdir, pki.ca_cert, bare_port, guard_port)
    # Bare mitmdump holds a reply until it ends unless told to stream it: the same CPU per event of a
    # mitmdump that relays every event as it arrives, as egressguard does.
    streaming = [*proxy_commands(workdir, pki.ca_cert, streaming_port, guard_port)[0]]
    streaming += ["--set", "stream_large_bodies=1"]
    bare_ca = workdir / "bare-ca" / "mitmproxy-ca-cert.pem"
    guard_ca = workdir / "data" / "ca" / "mitmproxy-ca-cert.pem"
    clients: dict[str, Callable[[], httpx.Client]] = {
        "direct": lambda: httpx.Client(verify=str(pki.ca_cert), timeout=30, headers=CONTEXT),
        "bare mitmdump": lambda: proxy_client(bare_port, bare_ca),
        "egressguard": lambda: proxy_client(guard_port, guard_ca, f"{AGENT}:{AGENT_TOKEN}@"),
        STREAMING_BARE: lambda: proxy_client(streaming_port, bare_ca),
    }
    event_cpu: dict[str, dict[str, float]] = {}
    rss: dict[str, float] = {}
    with ExitStack() as stack:
        bare_process = stack.enter_context(process(bare, bare_port, workdir, env))
        guard_process = stack.enter_context(process(guard, guard_port, workdir, guard_env))
        streaming_process = stack.enter_context(process(streaming, streaming_port, workdir, env))
        pids = {
            "bare mitmdump": bare_process.pid,
            "egressguard": guard_process.pid,
            STREAMING_BARE: streaming_process.pid,
        }
        if args.against is not None:
            against = workdir / "against"
            against.mkdir()
            (against / "policy.yaml").write_text(bench_policy(against / "data"))
            against_port = free_port()
            command = proxy_commands(against, pki.ca_cert, bare_port, against_port)[1]
            against_env = {**env, "PYTHONPATH": str(args.against.resolve())}
            pids[AGAINST] = stack.enter_context(process(command, against_port, against, against_env)).pid
            against_ca = against / "data" / "ca" / "mitmproxy-ca-cert.pem"
            clients[AGAINST] = lambda: proxy_client(against_port, against_ca, f"{AGENT}:{AGENT_TOKEN}@")
        opened = {name: stack.enter_context(make_client()) for name, make_client in clients.items()}
        paths = {
            name: opened[name]
            for name in ("direct", "bare mitmdump", "egressguard", AGAINST)
            if name in opened
        }
        print(f"{args.requests} requests per path, paths in turn, {len(REPLY)} B reply, TLS, keep-alive;")
        print(f"egressguard: 1 worker, enforce mode, every detector on; {os.cpu_count()} cores, shared")
        print(f"load average at the start: {os.getloadavg()[0]:.1f}")
        if not args.stream_cpu_only:
            latency(paths, upstream, url, args.requests, args.stream_requests)
        cpu_paths = {name: opened[name] for name in pids}
        for api, (route, request) in STREAMS.items():
            for pause, arriving in ((0.0, "arriving together"), (EVENT_PAUSE, "one at a time")):
                upstream.reply = Reply(text=REPLY, piece_size=DELTA_CHARACTERS, pause_between_events=pause)
                event_cpu[f"{api}, {arriving}"] = stream_cpu(
                    cpu_paths, pids, f"{upstream.url}{route}", request, args.stream_requests
                )
        rss = {name: rss_mib(pid) for name, pid in pids.items()}
    upstream.close()
    report_stream_cpu(event_cpu)
    print(
        f"  ({EVENT_PAUSE * 1000:.0f} ms after each event when one at a time; load average at the end: "
        f"{os.getloadavg()[0]:.1f})"
    )
    print("\nresident memory after the run")
    for name, mib in rss.items():
        print(f"  {name:<30}{mib:>9.1f} MiB")
    shutil.rmtree(workdir, ignore_errors=True)


def latency(
    paths: dict[str, httpx.Client], upstream: FakeUpstream, url: str, requests: int, stream_requests: int
) -> None:
    """Measures and prints the latency of JSON and streamed answers per path."""
    upstream.reply = Reply(text=REPLY, piece_size=64)
    json_results = totals(measure(paths, url, requests, request=chat(stream=False)))
    short_results = totals(measure(paths, url, requests, request=chat(stream=False), prompt=SHORT_PROMPT))
    tool_results = totals(
        measure(paths, url, requests, request=chat(stream=False, turn=read_file), prompt=TOOL_RESULT)
    )
    upstream.reply = Reply(text=REPLY, piece_size=64, think_seconds=THINK_SECONDS)
    thinking_results = totals(measure(paths, url, stream_requests, request=chat(stream=False)))
    upstream.reply = Reply(text=REPLY, piece_size=64, pause_after_first_event=STREAM_PAUSE)
    timings = measure(paths, url, stream_requests, request=chat(stream=True))
    first_event = {name: [first for first, _ in pairs] for name, pairs in timings.items()}
    report(f"JSON chat completion, {len(PROMPT)} B prompt: total per request", json_results)
    report(f"JSON chat completion, {len(SHORT_PROMPT)} B prompt: total per request", short_results)
    report(f"JSON chat completion, {len(TOOL_RESULT)} B tool result: total per request", tool_results)
    report(
        f"JSON chat completion, {len(PROMPT)} B prompt, the model thinks {THINK_SECONDS * 1000:.0f} ms: "
        "total per request",
        thinking_results,
    )
    report(
        f"SSE stream (upstream pauses {STREAM_PAUSE * 1000:.0f} ms after the first event): "
        "time to first byte",
        first_event,
    )
    report("SSE stream: total", totals(timings))


if __name__ == "__main__":
    main()
