"""CPU the audit path costs the request thread per turn: scrubbing the agent-controlled fields of the
audit event, and handing the record to the alert router's evaluator thread.

Scrub: the same shape of event (ids, host, path, model, tools, one finding) with a fresh event id and a
user id from a small pool each time, as a busy agent fleet produces. Hand-off: a request thread does about
1 ms of pure-Python work per turn and submits the record; the figures are the extra wall time and the
extra CPU time of the process per turn with the router's evaluator running (its evaluation, its wake-ups
and the GIL hand-overs they cause), against the same loop without it. Wall time is what a request waits
and moves with other load on the machine; CPU time moves less.

Append: what writing each turn's record to the audit log (``fsync: batch``, the default: every 100
records synced, a checkpoint signed every 1000) keeps the appending thread, the proxy's event loop,
waiting: median, 99th percentile and the longest, in a directory on the disk ``--audit-dir`` names
(default: the system's temporary directory).

    python3 bench/audit_path.py [--turns 2000] [--audit-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.alerts import AlertRouter, load_alerts_config
from proxy.audit.events import scrub
from proxy.audit.log import AuditLog
from proxy.scanning.rulepack import Scanner, load_packaged_packs

KEY = b"k" * 32


def event(number: int) -> dict[str, Any]:
    return {
        "type": "agent.turn",
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "event_id": f"e{number}",
        "agent_id": "support-bot",
        "role": "support",
        "user_id": f"user-{number % 50}@example.com",
        "session_id": f"session-{number % 200}",
        "purpose": "customer support",
        "consent_id": "consent-2026-01",
        "approval_id": None,
        "egress_host": "api.openai.com",
        "path": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "tools": ["search_docs", "get_order"],
        "errors": [],
        "decision": "allow",
        "findings": [{"signal": "pattern", "rule": "pii.email", "extra": {"where": "messages[1]"}}],
    }


def request_work() -> int:
    total = 0
    for value in range(20_000):
        total += value * value
    return total


def scrub_ms(turns: int) -> float:
    scanner = Scanner(load_packaged_packs())
    for number in range(100):
        scrub(event(number), scanner, KEY)
    events = [event(number) for number in range(turns)]
    started = time.perf_counter()
    for item in events:
        scrub(item, scanner, KEY)
    return (time.perf_counter() - started) / turns * 1000


def hand_off_ms(turns: int) -> tuple[float, float]:
    """Extra (wall, CPU) milliseconds per turn with the router running."""
    with tempfile.TemporaryDirectory() as data_dir:
        router = AlertRouter(load_alerts_config(None), data_dir=Path(data_dir))
        for _ in range(50):
            request_work()
        with_router = _timed(lambda number: router.submit(event(number)), turns, router.close)
        without = _timed(event, turns, lambda: None)
    return (with_router[0] - without[0]) / turns * 1000, (with_router[1] - without[1]) / turns * 1000


def append_ms(turns: int, parent: str | None) -> list[float]:
    """Milliseconds each append of a turn's record took on the appending thread, in order."""
    with tempfile.TemporaryDirectory(dir=parent) as directory:
        audit = AuditLog(Path(directory), fsync="batch", fsync_batch=100, checkpoint_every=1000)
        waits = []
        for number in range(turns):
            record = event(number)
            started = time.perf_counter()
            audit.append(record)
            waits.append((time.perf_counter() - started) * 1000)
        audit.close()
    return waits


def _timed(per_turn: Callable[[int], object], turns: int, finish: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for number in range(turns):
        request_work()
        per_turn(number)
    finish()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--audit-dir", default=None, help="where the append figure's audit log is written")
    args = parser.parse_args()
    print(f"scrub of an audit event: {scrub_ms(args.turns):.3f} ms per turn")
    wall, cpu = hand_off_ms(args.turns)
    print(f"hand-off to the alert evaluator: {wall:.3f} ms wall, {cpu:.3f} ms CPU per turn")
    waits = sorted(append_ms(args.turns, args.audit_dir))
    print(
        f"audit append on the appending thread: median {waits[len(waits) // 2]:.3f} ms, "
        f"p99 {waits[int(len(waits) * 0.99)]:.3f} ms, longest {waits[-1]:.3f} ms"
    )


if __name__ == "__main__":
    main()
