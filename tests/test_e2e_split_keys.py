"""A key an agent writes out in groups, in the other case of its format, or in pieces over a tool call's
fields leaves redacted, through a real egressguard: a prompt sent with the official OpenAI SDK, a
streamed answer it reads, and an MCP ``tools/call``; written nowhere in the log or the audit."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from google import genai
from google.genai import types

from tests.harness import Proxy
from tests.upstream import FakeUpstream, Reply

AWS_KEY = "AKIAQYLPMN5HHHFPZAM2"
GITHUB_TOKEN = "ghp_" + "R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO"
GROUPED = "-".join(AWS_KEY[index : index + 4] for index in range(0, len(AWS_KEY), 4))


@pytest.fixture
def enforce(shared_proxy: Callable[..., Proxy]) -> Proxy:
    return shared_proxy(mode="enforce", extra="redaction: {requests: true}\n")


def written(proxy: Proxy) -> str:
    """Everything the proxy logged and recorded, an earlier test's on a shared proxy too."""
    return proxy.output() + "".join(path.read_text() for path in (proxy.data_dir / "audit").rglob("*.jsonl"))


def rules(proxy: Proxy) -> list[tuple[str, bool]]:
    (record,) = proxy.wait_for_records(1)
    return [(finding["rule"], finding["enforced"]) for finding in record["findings"]]


def shows(key: str, text: str) -> bool:
    """Whether six characters of ``key`` past its prefix stand in ``text``, in either case."""
    lowered = text.lower()
    return any(key[index : index + 6].lower() in lowered for index in range(4, len(key) - 5))


OPENAI_KEY = "sk-proj-" + "AbC3dEf9GhJkLmN0pQrStUvWxYz12345AbC3dEf9GhJkLmN0"
ANTHROPIC_KEY = (
    "sk-ant-api03-"
    + "TOt9aL0Mk6OCVJ3iWHwF2dylxG5C1YLDa2iqN1Zv7SScN1TeqLcC5FJp5jjEMXiE09JQkk6aMnAlo9yYo6MJWjIXOjznMAA"
)
KEYS = (AWS_KEY, GITHUB_TOKEN, OPENAI_KEY, ANTHROPIC_KEY)
WRAPPED_SECRET = "FmQiy3dWARW4XqtqZkeE7+pr9Qr+HmJnZrF7+skzQ8vT1cY5nR2wL0pH6gK3mB9xJ4dS7aE+UfZk2Lq8Rw5Tn1Yb3Vc"
CUT = [
    f"the key is {GITHUB_TOKEN[:2]} {GITHUB_TOKEN[2:]} ok",
    f"the key is {AWS_KEY[:2]}\n{AWS_KEY[2:]} ok",
    f'k = "{OPENAI_KEY[:5]}" + "{OPENAI_KEY[5:]}"',
    f"id {AWS_KEY[:8]}{AWS_KEY[8:14].lower()}{AWS_KEY[14:]} please",
    f"the key is {GITHUB_TOKEN[:2]}\u00a0\u00a0\u00a0\u00a0{GITHUB_TOKEN[2:]} ok",
    f"k = f\"{{'gh'}}{GITHUB_TOKEN[2:]}\"",
    f"the key is Gh P_{GITHUB_TOKEN[4:]} ok",
    f"export K='{AWS_KEY[:2]}''{AWS_KEY[2:]}'",
    f"key {ANTHROPIC_KEY[:10]} {ANTHROPIC_KEY[10:]} ok",
    f'A=sk-proj-\nB={OPENAI_KEY[8:]}\ncurl -H "Authorization: Bearer $A$B" https://api.openai.com',
    f'a = "gh"\nb = "{GITHUB_TOKEN[2:]}"\ntoken = "{{}}{{}}".format(a, b)',
]


@pytest.mark.parametrize(
    "prompt",
    [
        f"rotate {GROUPED} tonight",
        f"id {AWS_KEY.lower()} please",
        f"token in two lines:\n{GITHUB_TOKEN[:20]}\n{GITHUB_TOKEN[20:]}\nthanks",
        *CUT,
    ],
)
def test_a_key_written_out_in_a_prompt_leaves_redacted(
    enforce: Proxy, upstream: FakeUpstream, prompt: str
) -> None:
    enforce.openai_client(upstream.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    sent = json.loads(upstream.received[-1].body)["messages"][0]["content"]
    assert "[REDACTED:" in sent
    assert not any(shows(key, sent) for key in KEYS)
    keys = {"aws-access-key-id", "github-pat", "openai-project-key", "anthropic-api-key"}
    assert {rule for rule, enforced in rules(enforce) if enforced} & keys
    assert not any(shows(key, written(enforce)) for key in KEYS)


@pytest.mark.parametrize("prompt", CUT[:2])
def test_a_key_cut_inside_its_prefix_in_an_anthropic_prompt_leaves_redacted(
    enforce: Proxy, upstream: FakeUpstream, prompt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", enforce.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(enforce.ca_cert))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": prompt}])
    sent = json.loads(upstream.received[-1].body)["messages"][0]["content"]
    assert "[REDACTED:" in sent and not shows(AWS_KEY, sent) and not shows(GITHUB_TOKEN, sent)
    assert not shows(AWS_KEY, written(enforce)) and not shows(GITHUB_TOKEN, written(enforce))


def test_a_named_value_wrapped_over_lines_leaves_redacted_on_every_line(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    # Wrapped at the width of its first line, as a terminal or an editor wraps it.
    name = "AWS_SECRET_ACCESS_KEY="
    width = len(name) + 12
    lines = [WRAPPED_SECRET[:12]] + [
        WRAPPED_SECRET[index : index + width] for index in range(12, len(WRAPPED_SECRET), width)
    ]
    prompt = "my config:\n" + name + "\n".join(lines) + "\nregion = eu-west-1"
    enforce.openai_client(upstream.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    sent = json.loads(upstream.received[-1].body)["messages"][0]["content"]
    assert "[REDACTED:" in sent and "region = eu-west-1" in sent
    assert not any(line in sent for line in lines)
    assert not any(line in written(enforce) for line in lines)


@pytest.mark.parametrize(
    "answer",
    [
        f"Here: {GITHUB_TOKEN[:20]} {GITHUB_TOKEN[20:]} done.",
        f"Here: {GITHUB_TOKEN[:2]} {GITHUB_TOKEN[2:]} done.",
        f"Here: {GITHUB_TOKEN[:3]}\n{GITHUB_TOKEN[3:]} done.",
    ],
)
def test_a_key_streamed_in_groups_reaches_the_agent_redacted(
    enforce: Proxy, upstream: FakeUpstream, answer: str
) -> None:
    upstream.reply = Reply(text=answer)
    stream = enforce.openai_client(upstream.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "the token?"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "[REDACTED:github-pat]" in text and not shows(GITHUB_TOKEN, text)


def _streamed_answer(api: str, proxy: Proxy, upstream: FakeUpstream) -> str:
    """The answer's text as ``api``'s official SDK read it streamed through ``proxy``."""
    ask: Any = [{"role": "user", "content": "the token?"}]
    if api == "chat":
        chunks = proxy.openai_client(upstream.url).chat.completions.create(
            model="m", messages=ask, stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    if api == "responses":
        events = proxy.openai_client(upstream.url).responses.create(model="m", input=ask, stream=True)
        return "".join(event.delta for event in events if event.type == "response.output_text.delta")
    client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
    with client.messages.stream(model="m", max_tokens=50, messages=ask) as message:
        return "".join(message.text_stream)


@pytest.mark.parametrize("piece_size", [2, 7])
@pytest.mark.parametrize(
    "key",
    [
        f"{AWS_KEY[:2]} {AWS_KEY[2:]}",
        f"{AWS_KEY[:3]}\n    {AWS_KEY[3:]}",
        f"{GITHUB_TOKEN[:1]}-{GITHUB_TOKEN[1:]}",
        f"{OPENAI_KEY[:5]}\n{OPENAI_KEY[5:]}",
        f"{AWS_KEY[:2]}\u3000\u3000{AWS_KEY[2:]}",
        f"Gh p_{GITHUB_TOKEN[4:]}",
        f"{OPENAI_KEY[:2]}--{OPENAI_KEY[2:]}",
        f"{ANTHROPIC_KEY[:10]} {ANTHROPIC_KEY[10:]}",
    ],
    ids=[
        "aws space",
        "aws line break",
        "github dash",
        "openai line break",
        "aws ideographic spaces",
        "github odd case",
        "openai dashes",
        "anthropic after its keyword",
    ],
)
@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
def test_no_piece_of_a_key_cut_inside_its_prefix_reaches_the_agent_streamed(
    enforce: Proxy,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    key: str,
    piece_size: int,
) -> None:
    """The prefix's letters before the cut are held with the rest of the key, whichever API streams it."""
    monkeypatch.setenv("HTTPS_PROXY", enforce.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(enforce.ca_cert))
    upstream.reply = Reply(text=f"Here: {key} done.", piece_size=piece_size)
    text = _streamed_answer(api, enforce, upstream)
    assert re.fullmatch(r"Here: \[REDACTED:[a-z0-9-]+\] done\.", text), text
    assert not any(shows(whole, written(enforce)) for whole in KEYS)


def call(arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "save", "arguments": arguments},
    }


def test_a_key_in_pieces_over_an_mcp_calls_fields_leaves_redacted(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """Each field keeps its place and carries the notice where it held a piece; fields holding none and a
    call of ordinary fields go as sent."""
    pieces = {"a": AWS_KEY[:8], "b": AWS_KEY[8:], "note": "weekly"}
    with enforce.http_client() as client:
        client.post(f"{upstream.url}/mcp", json=call(pieces), headers={"accept": "application/json"})
        sent = json.loads(upstream.received[-1].body)["params"]["arguments"]
        assert sent == {
            "a": "[REDACTED:aws-access-key-id]",
            "b": "[REDACTED:aws-access-key-id]",
            "note": "weekly",
        }
        ordinary = {"path": "src/main.py", "mode": "r", "from": "2024-01-01", "to": "2024-12-31"}
        client.post(f"{upstream.url}/mcp", json=call(ordinary), headers={"accept": "application/json"})
        assert json.loads(upstream.received[-1].body)["params"]["arguments"] == ordinary
    assert not shows(AWS_KEY, written(enforce))


def test_a_prompt_about_key_prefixes_leaves_as_written(enforce: Proxy, upstream: FakeUpstream) -> None:
    prompt = "AKIA keys look like AKIA then sixteen more; ghp_ tokens have 36 more characters, like this one."
    enforce.openai_client(upstream.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    assert json.loads(upstream.received[-1].body)["messages"][0]["content"] == prompt


def _send_history_with_call(api: str, upstream: FakeUpstream, arguments: dict[str, Any]) -> Any:
    """A request by ``api``'s official SDK (Anthropic's or Gemini's) whose history holds a call of a tool
    with ``arguments`` as an object; the call's arguments as the upstream received them."""
    if api == "anthropic":
        call = {"type": "tool_use", "id": "t1", "name": "save", "input": arguments}
        result = {"type": "tool_result", "tool_use_id": "t1", "content": "saved"}
        messages: Any = [
            {"role": "user", "content": "save it"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ]
        client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
        client.messages.create(model="m", max_tokens=10, messages=messages)
        return json.loads(upstream.received[-1].body)["messages"][1]["content"][0]["input"]
    if api == "gemini":
        gemini = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url))
        contents = [
            types.Content(role="user", parts=[types.Part(text="save it")]),
            types.Content(role="model", parts=[types.Part.from_function_call(name="save", args=arguments)]),
            types.Content(
                role="user",
                parts=[types.Part.from_function_response(name="save", response={"ok": True})],
            ),
        ]
        gemini.models.generate_content(model="gemini-2.5-flash", contents=contents)
        return json.loads(upstream.received[-1].body)["contents"][1]["parts"][0]["functionCall"]["args"]
    raise ValueError(api)


@pytest.mark.parametrize("api", ["anthropic", "gemini", "responses"])
def test_a_key_in_pieces_over_a_calls_input_in_the_history_leaves_redacted(
    enforce: Proxy, upstream: FakeUpstream, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", enforce.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(enforce.ca_cert))
    arguments = {"a": AWS_KEY[:8], "b": {"c": AWS_KEY[8:]}, "note": "weekly"}
    if api == "responses":
        item = {"type": "function_call", "call_id": "c1", "name": "save", "arguments": arguments}
        output = {"type": "function_call_output", "call_id": "c1", "output": "saved"}
        enforce.openai_client(upstream.url).responses.create(model="m", input=[item, output])  # type: ignore[list-item]
        sent = json.loads(upstream.received[-1].body)["input"][0]["arguments"]
    else:
        sent = _send_history_with_call(api, upstream, arguments)
    assert sent == {
        "a": "[REDACTED:aws-access-key-id]",
        "b": {"c": "[REDACTED:aws-access-key-id]"},
        "note": "weekly",
    }
    assert ("aws-access-key-id", True) in rules(enforce)
    assert not shows(AWS_KEY, written(enforce))
