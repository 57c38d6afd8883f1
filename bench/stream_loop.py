"""CPU per streamed text event of the stream path alone, in one process, against another checkout.

Builds the chat, Responses, Gemini and Anthropic streams that ``bench/latency.py``'s fake upstream sends
(171 text events of 12 characters) and feeds each, through the filtering session and the read-back the
proxy builds for an answer in enforce mode with every detector on, one event at a time (back to back, and
``EVENT_PAUSE`` apart, as the latency bench sends them: what the pause lets other work evict from the
processor's caches is paid again at every event) or eight events a chunk (as events arriving together are
read). Prints the thread's CPU per text event, best of the rounds. With
``--against DIR`` the same is measured with the code of another checkout, the two taking turns round by
round in processes of their own, so that both meet the machine's other load at the same moments, and the
ratio this checkout / that one is printed.

    python3 bench/stream_loop.py [--streams 20] [--rounds 3] [--against /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
TOGETHER = 8
"""Events a chunk when a stream's events arrive together."""
ARRIVALS = (
    ("one at a time", 1, False),
    ("one at a time, apart", 1, True),
    ("arriving together", TOGETHER, False),
)
"""How a stream's events arrive: events a chunk, and whether each chunk comes ``EVENT_PAUSE`` after the
last."""


def measure(tree: Path, streams: int) -> dict[str, float]:
    """Microseconds of CPU per text event, per stream and arrival, with the code of ``tree``."""
    sys.path.insert(0, str(tree))
    from addons.inspect import ReadBack, stream_session
    from bench.latency import DELTA_CHARACTERS, EVENT_PAUSE, REPLY, bench_policy
    from proxy.config.policy import parse_policy
    from proxy.dialects import Anthropic, Gemini, OpenAIChat, OpenAIResponses
    from proxy.inspection import Detectors, TurnInspector
    from proxy.state import SqliteStateStore
    from proxy.turn import Turn, TurnContext
    from tests.harness import AGENT_TOKEN, AGENT_TOKEN_ENV
    from tests.upstream import (
        Reply,
        anthropic_events,
        gemini_events,
        openai_chat_events,
        pieces,
        responses_events,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="egressguard-stream-loop-"))
    policy = parse_policy(bench_policy(data_dir), "policy.yaml", environ={AGENT_TOKEN_ENV: AGENT_TOKEN})
    detectors = Detectors(policy, b"k" * 32)
    state = SqliteStateStore(None)
    reply = Reply(text=REPLY, piece_size=DELTA_CHARACTERS)
    dialects: dict[str, Any] = {
        "chat": (OpenAIChat, openai_chat_events),
        "responses": (OpenAIResponses, responses_events),
        "gemini": (lambda: Gemini(model_hint="gemini-2.0-flash"), gemini_events),
        "anthropic": (Anthropic, anthropic_events),
    }
    text_events = len(pieces(REPLY, DELTA_CHARACTERS))
    results: dict[str, float] = {}
    for api, (make, events_of) in dialects.items():
        events = list(events_of(reply))
        for arriving, size, pause in ARRIVALS:
            chunks = [b"".join(events[at : at + size]) for at in range(0, len(events), size)]
            spent = 0.0
            for _ in range(streams):
                context = TurnContext(
                    agent_id="bench", role="support", user_id="u", purpose="p", consent_id="c"
                )
                inspector = TurnInspector(detectors, policy, state, Turn(context))
                inspector.begin_response()
                inspector.begin_answer()
                dialect = make()
                session = stream_session(dialect, inspector.stream_filters(), policy)
                read_back = ReadBack(dialect, inspector, session)
                for chunk in [*chunks, b""]:
                    if pause:
                        time.sleep(EVENT_PAUSE)
                    started = time.thread_time()
                    read_back.feed(session(chunk))
                    spent += time.thread_time() - started
                started = time.thread_time()
                read_back.session.finish()
                spent += time.thread_time() - started
            results[f"{api}, {arriving}"] = spent / (streams * text_events) * 1e6
    return results


def run(tree: Path, streams: int) -> dict[str, float]:
    """``measure`` in a process of its own, importing the code of ``tree``."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        str(tree),
        "--streams",
        str(streams),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=tree).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout, measured in turn with this one")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.streams)))
        return
    trees = {"this": HERE, **({"against": args.against.resolve()} if args.against else {})}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    for round_number in range(args.rounds):
        order = list(trees) if round_number % 2 == 0 else list(reversed(trees))
        for name in order:
            for case, micros in run(trees[name], args.streams).items():
                best[name][case] = min(best[name].get(case, micros), micros)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"  {'stream':<32}{'this':>10}" + (f"{'against':>10}{'ratio':>9}" if args.against else ""))
    for case, micros in best["this"].items():
        line = f"  {case:<32}{micros:>7.1f} us"
        if args.against:
            other = best["against"][case]
            line += f"{other:>7.1f} us{micros / other:>8.2f}x"
        print(line)


if __name__ == "__main__":
    main()
