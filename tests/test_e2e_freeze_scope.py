"""A user id is the agent's word for whom it serves: repeated prompt-injection attempts freeze a user for
the agent that named it, never another agent's user of that name; and an agent's users together (named,
renamed or unnamed) get the agent blocked at ``freeze.agent_after``. With the OpenAI SDK through a real
egressguard in enforce mode, on SQLite and on a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.harness import Proxy
from tests.redis_server import RedisServer
from tests.test_e2e_inspect import INJECTION, ask
from tests.upstream import FakeUpstream

OTHER = "billing-bot"


def client_of(
    proxy: Proxy, upstream: FakeUpstream, user: str | None, agent: str | None = None
) -> openai.OpenAI:
    headers = {"X-Purpose": "support", "X-Consent-Id": "c-1", **({"X-User-Id": user} if user else {})}
    credentials = {} if agent is None else {"agent": agent, "token": agent[::-1]}
    return proxy.openai_client(upstream.url, headers=headers, **credentials)


def answer(client: openai.OpenAI, content: str) -> str:
    try:
        client.chat.completions.create(model="m", messages=ask(content))
    except openai.PermissionDeniedError as refused:
        return str(refused)
    return "served"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_user_is_frozen_for_its_agent_and_renaming_users_blocks_the_agent(
    backend: str, start_proxy: Callable[..., Proxy], upstream: FakeUpstream, request: pytest.FixtureRequest
) -> None:
    state = ""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        state = f"state: {{backend: redis, url: '{server.url}', timeout: 5s, on_error: closed}}\n"
    proxy = start_proxy(
        mode="enforce",
        other_agent=OTHER,
        extra=f"{state}compliance: {{required: []}}\nfreeze: {{after: 3, agent_after: 6, duration: 1h}}\n",
    )
    victim_elsewhere = client_of(proxy, upstream, "victim-ceo", OTHER)
    attacker = client_of(proxy, upstream, "victim-ceo")
    for _ in range(3):
        assert "served" not in answer(attacker, INJECTION)
    assert "user 'victim-ceo' is frozen" in answer(attacker, "What is the weather like?")
    # The same user id through another agent is another agent's user: not frozen.
    assert answer(victim_elsewhere, "What is the weather like?") == "served"
    # Three more attempts under new ids, and none: the agent's sixth blocks it, whoever it names next.
    for user in ("rot-1", "rot-2", None):
        assert "served" not in answer(client_of(proxy, upstream, user), INJECTION)
    for user in ("rot-99", None):
        assert "agent 'support-bot' is blocked" in answer(client_of(proxy, upstream, user), "Hello?")
    assert answer(victim_elsewhere, "Hello?") == "served"
