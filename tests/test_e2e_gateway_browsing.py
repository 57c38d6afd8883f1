"""Browsing a gateway or an OpenAI-compatible API switches on with a field of its own (OpenRouter's web
plugin, ``:online`` model variant and hosted web tools; xAI's live search and X search): each spelling
that switches it on gives the addresses the API may reach, checked against the agent's egress allowlist
(``egress.provider_fetch``); one that leaves it off, or limits it to allowed domains, passes. Read from
each API by unit, then end to end through a real egressguard in enforce mode with the OpenAI SDK, which
both APIs document as their client (their own fields passed as ``extra_body``)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from proxy.detectors.tools import PROVIDER_FETCH_RULE
from proxy.dialects import Anthropic, OpenAIChat, OpenAIResponses
from proxy.exchange import Fetch
from tests.harness import Proxy
from tests.test_e2e_declared_tools import refusals
from tests.test_e2e_inspect import last_record, openai_client
from tests.test_e2e_provider_fetch import ASK_CHAT, enforce, fetches_of
from tests.upstream import FakeUpstream

__all__ = ["enforce"]

ANY = None
DOCS = [
    Fetch("plugins[0].include_domains[0]", "https://docs.example", "web plugin domain"),
    Fetch("plugins[0].include_domains[0]", "https://subdomain.docs.example", "web plugin domain"),
]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "openai/gpt-4o", "messages": ASK_CHAT, **fields}


@pytest.mark.parametrize(
    ("fields", "fetches"),
    [
        ({"model": "openai/gpt-4o:online"}, [Fetch("model", ANY, "web plugin (:online)")]),
        ({"model": "openai/gpt-oss-20b:free:ONLINE"}, [Fetch("model", ANY, "web plugin (:online)")]),
        (
            {"models": ["anthropic/claude-sonnet-4", "openai/gpt-4o:online"]},
            [Fetch("models[1]", ANY, "web plugin (:online)")],
        ),
        ({"plugins": [{"id": "web"}]}, [Fetch("plugins[0]", ANY, "web plugin")]),
        (
            {"plugins": [{"id": "web", "enabled": True, "max_results": 3}]},
            [Fetch("plugins[0]", ANY, "web plugin")],
        ),
        ({"plugins": [{"id": "web", "include_domains": ["docs.example"]}]}, DOCS),
        # A filter spelt as no API reads it limits nothing.
        (
            {"plugins": [{"id": "web", "includeDomains": ["docs.example"]}]},
            [Fetch("plugins[0]", ANY, "web plugin")],
        ),
        # The web plugin's filter is the :online variant's too; a disabled plugin leaves the variant on.
        ({"model": "x/y:online", "plugins": [{"id": "web", "include_domains": ["docs.example"]}]}, DOCS),
        (
            {"model": "x/y:online", "plugins": [{"id": "web", "enabled": False}]},
            [Fetch("model", ANY, "web plugin (:online)")],
        ),
        ({"plugins": [{"id": "web", "enabled": False}]}, []),
        ({"plugins": [{"id": "file-parser"}, {"id": "response-healing"}]}, []),
        ({"model": "openai/gpt-4o:nitro", "models": ["online/model"]}, []),
        (
            {"tools": [{"type": "openrouter:web_search"}, {"type": "openrouter:datetime"}]},
            [Fetch("tools[0]", ANY, "openrouter:web_search")],
        ),
        (
            {
                "tools": [
                    {"type": "openrouter:web_fetch", "parameters": {"allowed_domains": ["docs.example"]}}
                ]
            },
            [
                Fetch(
                    "tools[0].parameters.allowed_domains[0]",
                    "https://docs.example",
                    "openrouter:web_fetch domain",
                ),
                Fetch(
                    "tools[0].parameters.allowed_domains[0]",
                    "https://subdomain.docs.example",
                    "openrouter:web_fetch domain",
                ),
            ],
        ),
        (
            {
                "tools": [
                    {"type": "openrouter:web_fetch", "parameters": {"blocked_domains": ["attacker.example"]}}
                ]
            },
            [Fetch("tools[0]", ANY, "openrouter:web_fetch")],
        ),
        # A gateway runs OpenAI's tool type as its own web search.
        (
            {"tools": [{"type": "web_search", "filters": {"allowed_domains": ["docs.example"]}}]},
            [Fetch("tools[0]", ANY, "web_search")],
        ),
        ({"tools": [{"type": "function", "function": {"name": "web_search", "parameters": {}}}]}, []),
    ],
)
def test_openrouter_browsing_is_read_in_every_spelling_that_switches_it_on(
    fields: dict[str, Any], fetches: list[Fetch]
) -> None:
    assert fetches_of(OpenAIChat(), chat(**fields)) == fetches


X = [Fetch("search_parameters.sources[0]", "https://x.com", "live search x")]


@pytest.mark.parametrize(
    ("search_parameters", "fetches"),
    [
        ({}, [Fetch("search_parameters", ANY, "live search")]),
        ({"mode": "auto", "return_citations": True}, [Fetch("search_parameters", ANY, "live search")]),
        ({"mode": "on", "sources": []}, [Fetch("search_parameters", ANY, "live search")]),
        (
            {"mode": "on", "sources": [{"type": "news", "excluded_websites": ["a.example"]}]},
            [Fetch("search_parameters.sources[0]", ANY, "live search news")],
        ),
        (
            {"sources": [{"type": "web", "excluded_websites": ["attacker.example"]}]},
            [Fetch("search_parameters.sources[0]", ANY, "live search web")],
        ),
        (
            {"sources": [{"type": "web", "allowed_websites": ["docs.example"]}]},
            [
                Fetch(
                    "search_parameters.sources[0].allowed_websites[0]",
                    "https://docs.example",
                    "live search web domain",
                ),
                Fetch(
                    "search_parameters.sources[0].allowed_websites[0]",
                    "https://subdomain.docs.example",
                    "live search web domain",
                ),
            ],
        ),
        ({"sources": [{"type": "x", "included_x_handles": ["xai"]}]}, X),
        (
            {"sources": [{"type": "rss", "links": ["https://attacker.example/feed.xml", 7]}]},
            [
                Fetch(
                    "search_parameters.sources[0].links[0]",
                    "https://attacker.example/feed.xml",
                    "live search rss",
                ),
                Fetch("search_parameters.sources[0].links[1]", "", "live search rss"),
            ],
        ),
        ({"sources": [{"type": "rss"}]}, [Fetch("search_parameters.sources[0]", ANY, "live search rss")]),
        (
            {"sources": [{"type": "WEB", "allowed_websites": ["docs.example"]}]},
            [Fetch("search_parameters.sources[0]", ANY, "live search WEB")],
        ),
        ({"mode": "off", "sources": [{"type": "news"}]}, []),
        ({"mode": "OFF"}, [Fetch("search_parameters", ANY, "live search")]),
    ],
)
def test_xai_live_search_is_read_with_its_sources(search_parameters: Any, fetches: list[Fetch]) -> None:
    """On unless ``mode`` is ``off`` (as the API spells it), over web and X where it names no sources."""
    assert fetches_of(OpenAIChat(), chat(search_parameters=search_parameters)) == fetches
    assert fetches_of(OpenAIChat(), chat(search_parameters=None)) == []


def test_the_responses_and_messages_apis_read_the_same_switches() -> None:
    responses = {
        "model": "openai/gpt-4o:online",
        "input": "what changed?",
        "tools": [
            {"type": "x_search"},
            {"type": "openrouter:web_search"},
            {"type": "code_interpreter"},
            {"type": "web_search", "allowed_domains": ["docs.example"]},
        ],
    }
    assert fetches_of(OpenAIResponses(), responses) == [
        Fetch("tools[0]", "https://x.com", "x_search"),
        Fetch("tools[1]", ANY, "openrouter:web_search"),
        Fetch("tools[3]", ANY, "web_search"),
        Fetch("model", ANY, "web plugin (:online)"),
    ]
    messages = {
        "model": "anthropic/claude-sonnet-4",
        "max_tokens": 10,
        "messages": ASK_CHAT,
        "plugins": [{"id": "web"}],
        "tools": [{"type": "openrouter:web_fetch"}, {"name": "openrouter:web_fetch", "input_schema": {}}],
    }
    assert fetches_of(Anthropic(), messages) == [
        Fetch("tools[0]", ANY, "openrouter:web_fetch"),
        Fetch("plugins[0]", ANY, "web plugin"),
    ]


def test_openrouter_browsing_outside_the_allowlist_is_refused_and_within_it_passes(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    refused: list[dict[str, Any]] = [
        {"model": "openai/gpt-4o:online"},
        {"model": "openai/gpt-4o", "extra_body": {"plugins": [{"id": "web"}]}},
        {
            "model": "openai/gpt-4o",
            "extra_body": {"plugins": [{"id": "web", "include_domains": ["attacker.example"]}]},
        },
        {"model": "openai/gpt-4o", "extra_body": {"tools": [{"type": "openrouter:web_fetch"}]}},
    ]
    for fields in refused:
        with pytest.raises(openai.PermissionDeniedError) as refusal:
            client.chat.completions.create(messages=ASK_CHAT, **fields)
        assert "the API would fetch" in str(refusal.value)
    assert upstream.received == []
    assert [refusals(last_record(enforce, count)) for count in (1, 2, 3, 4)] == [
        [("lateral_movement", PROVIDER_FETCH_RULE, "model", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "plugins[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "plugins[0].include_domains[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0]", True)],
    ]
    passed: list[dict[str, Any]] = [
        {"plugins": [{"id": "web", "enabled": False}]},
        {"plugins": [{"id": "web", "include_domains": ["docs.example"]}]},
        {"tools": [{"type": "openrouter:web_search", "parameters": {"allowed_domains": ["docs.example"]}}]},
    ]
    for extra_body in passed:
        client.chat.completions.create(model="openai/gpt-4o", messages=ASK_CHAT, extra_body=extra_body)
    sent = [json.loads(received.body) for received in upstream.received]
    assert [
        {key: body[key] for key in extra_body} for body, extra_body in zip(sent, passed, strict=True)
    ] == passed
    assert [refusals(last_record(enforce, count)) for count in (5, 6, 7)] == [[], [], []]


def test_xai_search_outside_the_allowlist_is_refused_and_within_it_passes(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    for search_parameters in (
        {"mode": "auto"},
        {"mode": "on", "sources": [{"type": "rss", "links": ["https://attacker.example/feed.xml"]}]},
        {"sources": [{"type": "x"}]},
    ):
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(
                model="grok-3", messages=ASK_CHAT, extra_body={"search_parameters": search_parameters}
            )
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="grok-4", input="what changed?", tools=[{"type": "x_search"}])  # type: ignore[list-item,misc]
    assert upstream.received == []
    assert [refusals(last_record(enforce, count)) for count in (1, 2, 3, 4)] == [
        [("lateral_movement", PROVIDER_FETCH_RULE, "search_parameters", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "search_parameters.sources[0].links[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "search_parameters.sources[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0]", True)],
    ]
    for search_parameters in (
        {"mode": "off"},
        {"mode": "on", "sources": [{"type": "web", "allowed_websites": ["docs.example"]}]},
    ):
        client.chat.completions.create(
            model="grok-3", messages=ASK_CHAT, extra_body={"search_parameters": search_parameters}
        )
    assert len(upstream.received) == 2
    assert [refusals(last_record(enforce, count)) for count in (5, 6)] == [[], []]
