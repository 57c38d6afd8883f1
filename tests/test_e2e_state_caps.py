"""End to end: two workers sharing SQLite under ``state.keys_per_kind``, driven by an agent that sends a
new session and user id with every request."""

from __future__ import annotations

import sqlite3
import ssl
import time
from collections.abc import Callable

import httpx
import openai

from proxy.state import digest
from proxy.state.sqlite import DATABASE_NAME
from tests.harness import AGENT, Proxy
from tests.upstream import FakeUpstream, Reply, ToolCallReply

CAP = 5
REQUESTS = 16
AGENT_LIMIT = 10


def minting_agent(proxy: Proxy, upstream: FakeUpstream, index: int) -> openai.OpenAI:
    transport = httpx.Client(proxy=proxy.url(), verify=ssl.create_default_context(cafile=str(proxy.ca_cert)))
    headers = {
        "X-User-Id": f"minted-user-{index}",
        "X-Session-Id": f"minted-session-{index}",
        "X-Purpose": "support",
        "X-Consent-Id": "c-1",
    }
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=transport,
        default_headers=headers,
    )


def test_minted_ids_stay_within_the_cap_and_the_agent_limit_still_withholds(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(
        mode="enforce",
        args=("--workers", "2"),
        tools=f'{{limits: {{"lookup_*": {AGENT_LIMIT}/1h}}}}',
        extra=f"state: {{keys_per_kind: {CAP}}}\n",
    )
    deadline = time.monotonic() + 30
    while proxy.output().count("worker.ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    upstream.reply = Reply(text="Looking it up.", tool_calls=[ToolCallReply("lookup_order", {"id": 7})])
    received = []
    for index in range(REQUESTS):
        reply = minting_agent(proxy, upstream, index).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Where is order 7?"}]
        )
        received.append(bool(reply.choices[0].message.tool_calls))
    records = proxy.wait_for_records(REQUESTS)
    assert received == [True] * AGENT_LIMIT + [False] * (REQUESTS - AGENT_LIMIT)
    withheld = [record for record in records if "tool-rate-limit" in str(record["findings"])]
    assert len(withheld) == REQUESTS - AGENT_LIMIT

    database = sqlite3.connect(proxy.data_dir / "state" / DATABASE_NAME)
    try:

        def windows(pattern: str) -> int:
            [(rows,)] = database.execute("SELECT COUNT(*) FROM windows WHERE key LIKE ?", (pattern,))
            return int(rows)

        assert windows("turns:session:%") == CAP
        assert windows(f"tool.limit:{digest('lookup_*')}:user:%") == CAP
        [(agent_turns,)] = database.execute(
            "SELECT SUM(events) FROM buckets WHERE key = ?", (f"turns:agent:{AGENT}",)
        )
        assert agent_turns == REQUESTS
    finally:
        database.close()
