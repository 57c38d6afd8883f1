"""End to end: a key whose prefix is its own (``AKIA``, ``ghp_``, ``sk-ant-``, ...) is redacted glued to
other characters on either side, as a model that hides one in an identifier writes it; a word that only
holds such letters is left alone."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.harness import Proxy
from tests.upstream import FakeUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
GITHUB_TOKEN = "ghp_R7mQx2bT9vK4pL8nW3sY6dF1hJ5gZ0cA2eU4"
ANTHROPIC_KEY = (
    "sk-ant-api03-"
    + "Qw7Rt2Yu9Io4Pa1Sd6Fg3Hj8Kl5Zx0Cv7Bn2Mq4Wq8Er3Ty6Ui1Op9As5Df2Gh7Jk4Lz0Xc3Vb8Nm1"
    + "QwErTyAA"
)
KEYS = (AWS_KEY, GITHUB_TOKEN, ANTHROPIC_KEY)


def sent_upstream(upstream: FakeUpstream) -> str:
    return "".join(sent.path + json.dumps(sent.headers) + sent.body.decode() for sent in upstream.received)


@pytest.mark.parametrize(
    "text",
    [
        f"note_{AWS_KEY}",
        f"1{AWS_KEY}",
        f"x{GITHUB_TOKEN}",
        f"{GITHUB_TOKEN}x",
        f"id_{GITHUB_TOKEN}_backup",
        f"cfg{ANTHROPIC_KEY}",
    ],
)
def test_a_key_glued_to_a_word_is_redacted(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, text: str
) -> None:
    proxy = start_proxy(mode="enforce", extra="redaction: {requests: true}\ncompliance: {required: []}\n")
    body = {"model": "m", "messages": [{"role": "user", "content": f"keep this: {text}"}]}
    with proxy.http_client() as client:
        client.post(f"{upstream.url}/v1/chat/completions", json=body)
    sent = sent_upstream(upstream)
    assert "[REDACTED:" in sent
    for key in KEYS:
        assert key not in sent


def test_words_that_hold_a_prefix_leave_as_written(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce", extra="redaction: {requests: true}\ncompliance: {required: []}\n")
    prose = (
        "The SLOVAKIA office and the EASTASIA team share ghp_ and AKIA notes; run task-ant-api03 "
        "after the sk-ant- prefix check, then open /repos/ghp_docs/README."
    )
    body = {"model": "m", "messages": [{"role": "user", "content": prose}]}
    with proxy.http_client() as client:
        client.post(f"{upstream.url}/v1/chat/completions", json=body)
    assert prose in json.loads(upstream.received[-1].body)["messages"][0]["content"]
