"""End to end: a secret in a streamed completion is redacted however the upstream splits the text into
events, through a real egressguard process and the official SDKs; each event arrives on its own, so each
delta is read alone and not as part of a burst."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Callable

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import anthropic_client, ask, chat_stream_text, last_record, openai_client
from tests.upstream import FakeUpstream, Reply, ToolCallReply

# The keyword that names the value ("PASSWORD") is split over two events of fifteen characters, at a
# point where the text before it filled a keyword's length of the watch's memory only in part.
PASSWORD = "Xk9mP2vL7qR4wZa8Tq3"
ASSIGNMENT = f"config to of for config DB_PASSWORD={PASSWORD} and that is all."
REDACTED = ASSIGNMENT.replace(PASSWORD, "[REDACTED:generic-password-assignment]")


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    proxy = start_proxy(mode="enforce")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return proxy


@pytest.mark.parametrize("piece_size", [15])
def test_a_keyword_split_over_events_still_names_its_value_in_a_chat_stream(
    enforce: Proxy, upstream: FakeUpstream, piece_size: int
) -> None:
    upstream.reply = Reply(text=ASSIGNMENT, piece_size=piece_size, pause_between_events=0.01)
    stream = openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    assert chat_stream_text(stream) == REDACTED
    record = last_record(enforce)
    assert "generic-password-assignment" in [finding["rule"] for finding in record["findings"]]


def test_a_keyword_split_over_events_still_names_its_value_in_an_anthropic_stream(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    upstream.reply = Reply(
        text=ASSIGNMENT, piece_size=15, pause_between_events=0.01, model="claude-test-model"
    )
    with anthropic_client(upstream).messages.stream(
        model="claude-test-model", max_tokens=64, messages=ask()
    ) as events:
        message = events.get_final_message()
    assert message.content[0].text == REDACTED  # type: ignore[union-attr]


GITHUB_TOKEN = "ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
NOTE = f"notes for the week: the ci runners use {GITHUB_TOKEN} for deploys".encode()
HEX_DUMP = " ".join(f"{byte:02x}" for byte in NOTE)
WRAPPED = "\n".join(textwrap.wrap(base64.b64encode(NOTE * 3).decode(), 76))


@pytest.mark.parametrize("encoded", [HEX_DUMP, WRAPPED], ids=["hex pairs", "wrapped base64"])
def test_a_token_encoded_over_whitespace_leaves_a_chat_stream_redacted_whole(
    enforce: Proxy, upstream: FakeUpstream, encoded: str
) -> None:
    """Not one byte of the encoded token goes out ahead of the decoded view that finds it."""
    upstream.reply = Reply(text=f"Here it is:\n{encoded}\nDone.", piece_size=4)
    stream = openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    assert chat_stream_text(stream) == "Here it is:\n[REDACTED:github-pat]\nDone."


DISGUISED = {
    "base64": base64.b64encode(NOTE).decode(),
    "full-width": "".join(chr(ord(char) + 0xFEE0) for char in GITHUB_TOKEN),
    "look-alike": GITHUB_TOKEN.replace("o", "\u043e").replace("A", "\u0410"),
    "hex pairs": HEX_DUMP,
}


def test_streamed_tool_arguments_are_redacted_as_the_same_arguments_in_json(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """A secret written right after a line break in a streamed call's arguments (JSON text, where the
    break is the escape \\n) is redacted as in the same call answered as JSON, in every disguise."""
    for name, disguised in DISGUISED.items():
        call = [ToolCallReply(name="save_note", arguments={"note": f"Here:\n{disguised}\nDone."})]
        upstream.reply = Reply(text="ok", tool_calls=call)
        answer = openai_client(upstream).chat.completions.create(model="m", messages=ask())
        (made,) = answer.choices[0].message.tool_calls or []
        assert made.type == "function"
        expected = json.loads(made.function.arguments)
        assert expected == {"note": "Here:\n[REDACTED:github-pat]\nDone."}, name
        for piece_size in (1, 7):
            upstream.reply = Reply(text="ok", tool_calls=call, piece_size=piece_size)
            arguments = ""
            for chunk in openai_client(upstream).chat.completions.create(
                model="m", messages=ask(), stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.tool_calls:
                    arguments += chunk.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr]
            assert json.loads(arguments) == expected, (name, piece_size)
