"""What a Gemini Live session asks the API to fetch or run: the tools of its setup (search, URL context,
code execution) and the files its turns and function responses give by URI, checked as a REST request's
are, against the agent's egress allowlist (``egress.provider_fetch``). Read by unit, then end to end
through a real egressguard with the google-genai SDK's Live client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.genai import types

from proxy.commands.localca import UpstreamPKI
from proxy.detectors.tools import PROVIDER_FETCH_RULE
from proxy.dialects.gemini import live_request, may_ask_fetches
from proxy.exchange import DeclaredTool, Fetch
from tests.harness import Proxy
from tests.test_e2e_live import TOOL_CALL, LiveUpstream, converse, sent_results, session
from tests.wsupstream import WAIT_S

OUTSIDE = "https://attacker.example/c?d=customer-row-jane-doe"
INSIDE = "https://docs.example/changelog.pdf"


def file_part(uri: str) -> dict[str, Any]:
    return {"fileData": {"fileUri": uri, "mimeType": "application/pdf"}}


def test_a_live_setup_and_the_files_a_client_message_gives_are_read() -> None:
    setup = {
        "setup": {
            "model": "models/gemini-live-2.5-flash",
            "tools": [
                {"google_search": {}},
                {"codeExecution": {}},
                {"functionDeclarations": [{"name": "url_context", "description": "look up a page"}]},
            ],
        }
    }
    view = live_request(setup)
    assert view.fetches == [Fetch("setup.tools[0].google_search", None, "googleSearch")]
    assert view.declared_tools == [DeclaredTool("code_execution", "setup.tools[1].codeExecution")]
    response = {
        "tool_response": {
            "functionResponses": [
                {
                    "id": "f1",
                    "name": "get_report",
                    "response": {},
                    "parts": [{"file_data": {"file_uri": OUTSIDE}}],
                }
            ]
        }
    }
    assert live_request(response).fetches == [
        Fetch("tool_response.functionResponses[0].parts[0].file_data.file_uri", OUTSIDE, "file")
    ]
    turns = {"clientContent": {"turns": [{"role": "user", "parts": [file_part(INSIDE), {"text": "sum"}]}]}}
    assert live_request(turns).fetches == [
        Fetch("clientContent.turns[0].parts[0].fileData.fileUri", INSIDE, "file")
    ]
    # A file the API holds, text naming an address, a setup enabling nothing that fetches: nothing to check.
    quiet = [
        {"clientContent": {"turns": [{"parts": [file_part("files/abc-123"), {"text": OUTSIDE}]}]}},
        {"setup": {"model": "m", "tools": [{"functionDeclarations": [{"name": "googleSearch"}]}]}},
        {"realtimeInput": {"text": "setup the fileData"}},
    ]
    assert [live_request(message).fetches for message in quiet] == [[], [], []]
    assert may_ask_fetches(json.dumps(setup)) and may_ask_fetches(json.dumps(turns))
    assert not may_ask_fetches(json.dumps({"realtimeInput": {"text": "hello"}}))


def setup_sent(proxy: Proxy, server: LiveUpstream, config: dict[str, Any]) -> BaseException | None:
    """Opens a Live session with ``config``; what it failed with, if anything."""

    async def run() -> None:
        client = session(proxy, server.port)
        async with client.aio.live.connect(model="gemini-live-2.5-flash", config=config) as live:  # type: ignore[arg-type]
            async for _ in live.receive():
                pass

    try:
        asyncio.run(asyncio.wait_for(run(), 2 * WAIT_S))
    except Exception as failure:
        return failure
    return None


def refused(proxy: Proxy) -> list[tuple[str, str, bool]]:
    (record,) = proxy.wait_for_records(1)
    return [
        (finding["rule"], finding["where"], finding["enforced"])
        for finding in record["findings"]
        if finding["rule"] == PROVIDER_FETCH_RULE
    ]


def test_a_live_session_set_up_to_search_the_web_is_refused(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    proxy = start_proxy(mode="enforce")
    server = LiveUpstream(upstream_pki)
    try:
        failure = setup_sent(proxy, server, {"tools": [{"google_search": {}}, {"url_context": {}}]})
    finally:
        server.close()
    assert failure is not None
    assert server.received == []
    assert refused(proxy) == [
        (PROVIDER_FETCH_RULE, "websocket[0].setup.tools[0].googleSearch", True),
        (PROVIDER_FETCH_RULE, "websocket[0].setup.tools[1].urlContext", True),
    ]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_file_outside_the_allowlist_in_a_live_function_response_is_withheld(
    mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """The function response giving a file at an address the agent may not reach does not reach the API
    where that is enforced (the session closes for it); observed, it and the one after it, whose file the
    allowlist allows, do."""
    proxy = start_proxy(mode=mode, allow="['localhost:*', docs.example]")
    server = LiveUpstream(upstream_pki, TOOL_CALL)

    def result(uri: str) -> types.FunctionResponse:
        part = types.FunctionResponsePart(
            file_data=types.FunctionResponseFileData(file_uri=uri, mime_type="application/pdf")
        )
        return types.FunctionResponse(id="f1", name="get_weather", response={"report": uri}, parts=[part])

    enforcing = mode == "enforce"
    try:
        converse(proxy, server, (result(OUTSIDE),) if enforcing else (result(OUTSIDE), result(INSIDE)))
    finally:
        server.close()
    assert sent_results(server) == ([] if enforcing else [{"report": OUTSIDE}, {"report": INSIDE}])
    assert refused(proxy) == [
        (
            PROVIDER_FETCH_RULE,
            "websocket[4].tool_response.functionResponses[0].parts[0].file_data.file_uri",
            enforcing,
        )
    ]
