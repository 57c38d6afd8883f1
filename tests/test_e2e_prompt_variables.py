"""A Responses request's stored prompt takes ``prompt.variables``, which the API writes into the prompt:
a text variable is read as the user's text (injection, secrets, PII), a file or image variable as the
same part in ``input``. By unit, then with the OpenAI SDK through a real egressguard in enforce mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.responses import ResponsePromptParam

from proxy.dialects import OpenAIResponses
from proxy.exchange import Fetch, Source
from tests.harness import Proxy
from tests.test_e2e_attachments import POISONED, decoded_at, encoded, reading
from tests.test_e2e_injection import ATTACK, AWS_KEY, MARKER
from tests.test_e2e_inspect import _agent, last_record, openai_client
from tests.upstream import FakeUpstream


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    return _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)


def stored(**variables: Any) -> ResponsePromptParam:
    return {"id": "pmpt_1", "version": "2", "variables": variables}


def text_file(text: str) -> dict[str, Any]:
    return {
        "type": "input_file",
        "filename": "notes.md",
        "file_data": f"data:text/markdown;base64,{encoded(text)}",
    }


def test_prompt_variables_are_read_as_the_parts_they_are() -> None:
    body = {
        "model": "m",
        "input": "go",
        "prompt": stored(
            name="Jane",
            note={"type": "input_text", "text": "hello"},
            doc=text_file("# notes"),
            logo={"type": "input_image", "image_url": "https://attacker.example/p.png"},
            **{"odd key": "x"},
        ),
    }
    view = OpenAIResponses().parse_request(json.dumps(body).encode())
    assert [(part.source, part.text, part.where) for part in view.parts] == [
        (Source.USER, "go", "input"),
        (Source.USER, "Jane", "prompt.variables.name"),
        (Source.USER, "hello", "prompt.variables.note.text"),
        (Source.RETRIEVED_DOCUMENT, "notes.md", "prompt.variables.doc.filename"),
        (Source.RETRIEVED_DOCUMENT, "# notes", "prompt.variables.doc.file_data"),
        (Source.USER, "x", 'prompt.variables["odd key"]'),
    ]
    assert view.fetches == [
        Fetch("prompt.variables.logo.image_url", "https://attacker.example/p.png", "image")
    ]


def test_an_injection_in_a_text_variable_is_refused(enforce: Proxy, upstream: FakeUpstream) -> None:
    client = openai_client(upstream)
    for variable in (ATTACK, {"type": "input_text", "text": ATTACK}):
        with pytest.raises(openai.PermissionDeniedError):
            client.responses.create(model="m", input="go", prompt=stored(doc=variable))
    assert upstream.received == []
    for count, where in ((1, "prompt.variables.doc"), (2, "prompt.variables.doc.text")):
        assert ("prompt_injection", where, True) in reading(last_record(enforce, count))


def test_a_secret_in_a_text_variable_is_redacted_and_a_file_variable_is_read_as_a_file(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    prompt = stored(key=f"AWS_KEY={AWS_KEY}", doc=text_file(POISONED))
    openai_client(upstream).responses.create(model="m", input="go", prompt=prompt)
    sent = json.loads(upstream.received[-1].body)["prompt"]["variables"]
    assert sent["key"] == "AWS_KEY=[REDACTED:aws-access-key-id]"
    text = decoded_at(sent, "doc", "file_data")
    assert "attacker@evil.example" not in text and MARKER in text
    found = reading(last_record(enforce))
    assert ("data_exfiltration", "prompt.variables.key", True) in found
    assert ("prompt_injection", "prompt.variables.doc.file_data", True) in found
