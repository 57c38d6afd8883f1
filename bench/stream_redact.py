"""CPU per delta of the stream redactor, against the same redactor scanning its whole window every delta.

Feeds texts of several kinds (the latency bench's reply; chat prose full of words that hold keywords of
token formats, "ask", "task", "Great!"; prose naming values; code; JSON; logs) as 12-character deltas
to a StreamRedactor of the secrets and PII packs, and to one that scans its context and held text at
every delta as the redactor did before it watched for triggers, the two taking turns text by text so
that both see the same moments of the machine's load. Prints the microseconds per delta of each, their
ratio, and the share of deltas the watching redactor scanned.

    python3 bench/stream_redact.py [--rounds 5] [--delta 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.scanning.redact import StreamRedactor
from proxy.scanning.rulepack import ScanBudget, Scanner, ScanResult, load_pack, pack_path

REPLY = ("The customer reports that the invoice total does not match the order confirmation. " * 30)[:2048]
TEXTS = {
    "reply (bench/latency.py)": REPLY,
    "chat prose with ask/task/!": (
        "Sure! Ask the team to check the task list, then update the risk register and the desk rota. "
        "Great question! The disk usage stays under 80 % and the release is on 12 May. "
    )
    * 12,
    "prose naming values": (
        "Set the password in the vault, rotate the API token every 90 days and keep the auth key out of "
        "the repository; the secret manager holds the rest. "
    )
    * 14,
    "code": (
        "def fetch(client, token=None):\n"
        "    headers = {'Authorization': f'Bearer {token}'}\n"
        "    return client.get('https://api.example.com/v1/items', headers=headers, timeout=30)\n\n"
    )
    * 12,
    "JSON": (
        '{"id": "msg_01", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 812, "completion_tokens": 96}, '
        '"content": "The order shipped on Monday and arrives on Thursday."}\n'
    )
    * 12,
    "logs": (
        "2026-03-14T09:12:44.201Z INFO [worker-3] method=GET path=/v1/orders/42 status=200 latency_ms=18\n"
    )
    * 20,
}


class CountingScanner(Scanner):
    scans = 0

    def scan(self, text: str, budget: ScanBudget, *, merge: bool = True) -> ScanResult:
        self.scans += 1
        return super().scan(text, budget, merge=merge)


class ScanningEveryDelta(StreamRedactor):
    """The redactor with its trigger watch set aside: every release scans the whole context."""

    def _context_to_scan(self) -> int:
        return len(self._context)


def per_delta(redactor: StreamRedactor, text: str, delta: int) -> float:
    """CPU seconds per delta to stream ``text`` through ``redactor``."""
    deltas = [text[at : at + delta] for at in range(0, len(text), delta)]
    start = time.process_time()
    for piece in deltas:
        redactor.feed(piece)
    redactor.flush()
    return (time.process_time() - start) / len(deltas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delta", type=int, default=12)
    options = parser.parse_args()
    packs = [load_pack(pack_path("secrets")), load_pack(pack_path("pii"))]
    scanner = CountingScanner(packs)
    print(
        f"stream redaction, secrets and PII packs, {options.delta}-character deltas, best of "
        f"{options.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'text':<28}{'watching':>11}{'every delta':>14}{'ratio':>8}{'scanned':>10}")
    for name, text in TEXTS.items():
        watching: list[float] = []
        every: list[float] = []
        scanned = 0.0
        for _ in range(options.rounds):
            scanner.scans = 0
            watching.append(per_delta(StreamRedactor(scanner), text, options.delta))
            scanned = scanner.scans / -(-len(text) // options.delta)
            every.append(per_delta(ScanningEveryDelta(scanner), text, options.delta))
        best, before = min(watching), min(every)
        print(
            f"  {name:<28}{best * 1e6:>8.1f} us{before * 1e6:>11.1f} us{best / before:>7.2f}x"
            f"{scanned:>9.0%}   (medians {statistics.median(watching) * 1e6:.1f} and "
            f"{statistics.median(every) * 1e6:.1f} us)"
        )
    print(f"  (load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
