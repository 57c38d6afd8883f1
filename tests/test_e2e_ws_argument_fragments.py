"""End to end: a call the Gemini Live API (``BidiGenerateContent``) streams as ``partialArgs``, a string
continued over two messages at its JSON path, through a real egressguard, to the google-genai SDK's Live
client: decided on the arguments the pieces make merged (a list's item, named by its index, in the list a
client grows), a destructive command or a credential read
withheld where enforced (the session closed, naming why), reaching the agent as sent where observed,
recorded either way."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.genai import errors

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_live import LiveUpstream, converse, findings
from tests.test_message_argument_fragments import CREDENTIALS, live_turn

CALLS: dict[str, tuple[str, str, list[str], str]] = {
    "a destructive command": ("run_shell_command", "command", ["rm -r", "f ~"], "tool_abuse"),
    "a credential read": ("read_file", "path", CREDENTIALS, "credential_theft"),
    "a credential read of a list's item": ("read_many_files", "paths[0]", CREDENTIALS, "credential_theft"),
}


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_call_streamed_as_partial_args_is_decided_on_them_merged(
    call: str, mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    name, field, pieces, threat = CALLS[call]
    proxy = start_proxy(mode=mode)
    server = LiveUpstream(upstream_pki, *live_turn(name, field, pieces))
    try:
        if mode == "enforce":
            with pytest.raises(errors.APIError) as closed:
                converse(proxy, server)
            assert closed.value.code == 1008 and threat in str(closed.value)
        else:
            received = converse(proxy, server)
            streamed = [
                partial.string_value
                for message in received
                if message.tool_call is not None
                for function_call in message.tool_call.function_calls or []
                for partial in function_call.partial_args or []
            ]
            assert streamed == pieces
    finally:
        server.close()
    found = [(where, enforced) for threat_found, where, enforced in findings(proxy, threat)]
    assert found and {enforced for _, enforced in found} == {mode == "enforce"}
