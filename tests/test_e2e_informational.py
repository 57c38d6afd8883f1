"""End to end: an upstream that sends interim answers (``103 Early Hints``, ``102 Processing``) before its
answer, through a real egressguard, the agent the official ``openai`` SDK: the answer that follows is the
one the agent reads, inspected as any answer (a key in it redacted where enforced, JSON and streamed), and
the record says the interim answers were not relayed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import AWS_KEY, ask, enforce, last_record, observe, openai_client  # noqa: F401
from tests.upstream import FakeUpstream, Reply

HINTS: tuple[int, dict[str, str]] = (
    103,
    {"link": "</style.css>; rel=preload; as=style", "x-note": f"hint {AWS_KEY}"},
)
PROCESSING: tuple[int, dict[str, str]] = (102, {})


def interim_errors(record: dict[str, Any]) -> list[str]:
    return [error for error in record["errors"] if "interim" in error]


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_after_early_hints_is_read_and_inspected(
    stream: bool,
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """103 then 102 then the 200: the agent reads the 200's text with its key redacted, JSON or streamed;
    the record has the 200 and the key's finding, and says which interim answers were not relayed."""
    upstream.reply = Reply(text=f"the key is {AWS_KEY} now", informational=[HINTS, PROCESSING])
    client = openai_client(upstream).with_options(timeout=20)
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o-mini", messages=ask(), stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    else:
        answer = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask())
        assert "x-note" not in answer.headers
        text = answer.parse().choices[0].message.content or ""
    assert text == "the key is [REDACTED:aws-access-key-id] now"
    record = last_record(enforce)
    assert record["status"] == 200
    assert "aws-access-key-id" in {f["rule"] for f in record["findings"]}
    assert interim_errors(record) == ["response: the upstream's interim answers 103, 102 were not relayed"]
    assert AWS_KEY not in str(record)


def test_the_connection_serves_the_next_request_after_an_interim_answer(
    observe: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """The answer after interim ones is the answer to its request, not to the one the agent sends next on
    the same connection: each request reads its own, however many interim answers came first."""
    client = openai_client(upstream).with_options(timeout=20)
    for number in range(3):
        upstream.reply = Reply(text=f"answer {number}", informational=[HINTS, *[PROCESSING] * 500])
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=ask())
        assert answer.choices[0].message.content == f"answer {number}"
    records = observe.wait_for_records(3)
    assert [interim_errors(record) for record in records] == [
        ["response: the upstream's interim answers 103, 102 (500 times) were not relayed"]
    ] * 3
