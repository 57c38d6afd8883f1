"""A key in a destination's name leaves with the first lookup and in the TLS server name: refused before
either where requests are redacted, through a real egressguard."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.harness import Proxy
from tests.upstream import FakeUpstream

UNREWRITABLE = "name holds what is redacted in requests, and cannot be rewritten"
AWS_ID = "AKIAQYLPMN5HHHFPZAM2"
NAME = f"{AWS_ID.lower()}.svc.test"
"""A wildcard-allowed name whose first label is an AWS key id, lower-cased as a name may be."""


def post(proxy: Proxy, url: str) -> httpx.Response:
    with proxy.http_client() as client:
        return client.post(url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def written(proxy: Proxy) -> str:
    return proxy.output() + "".join(path.read_text() for path in (proxy.data_dir / "audit").rglob("*.jsonl"))


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_in_a_wildcard_allowed_name_is_refused_before_it_is_looked_up(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str
) -> None:
    """Enforce mode answers 403 without looking the name up (it resolves to nothing here: a lookup would
    refuse it as unresolved instead), and records the key and the refusal as enforced; observe mode lets
    it go and records both as not enforced. The key is never written to the log or the audit."""
    port = upstream.url.rsplit(":", 1)[1]
    proxy = start_proxy(
        mode=mode,
        allow="['*.svc.test:*', 'localhost:*']",
        extra="redaction: {requests: true}\ncompliance: {required: []}\n",
    )
    answer = post(proxy, f"https://{NAME}:{port}/v1/chat/completions")
    (record,) = proxy.wait_for_records(1)
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    enforced = mode == "enforce"
    assert {("aws-access-key-id", "host", enforced), ("inspection.host", "host", enforced)} <= found
    if enforced:
        assert answer.status_code == 403 and UNREWRITABLE in answer.text
        assert record["decision"] == "blocked"
        assert not any(rule.startswith("egress.") for rule, _, _ in found)
    else:
        assert ("egress.unresolved", "egress", False) in found
    assert upstream.received == []
    assert AWS_ID not in written(proxy) and AWS_ID.lower() not in written(proxy)


def test_a_key_in_the_query_is_redacted_and_a_name_without_one_is_reached(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The name check reads names agents reach every day as holding nothing, and a key in the query of
    an allowed name is still redacted from the target as before."""
    port = upstream.url.rsplit(":", 1)[1]
    proxy = start_proxy(mode="enforce", extra="redaction: {requests: true}\ncompliance: {required: []}\n")
    answer = post(proxy, f"https://localhost:{port}/v1/chat/completions?note={AWS_ID}")
    assert answer.status_code == 200
    assert AWS_ID not in upstream.received[-1].path
    (record,) = proxy.wait_for_records(1)
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    assert ("aws-access-key-id", "url", True) in found
    assert not any(where == "host" for _, where, _ in found)


def test_a_key_in_a_name_no_rule_allows_is_refused_where_only_lateral_movement_is_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observing lateral movement lets a name the role may not reach be connected to, and looked up on
    the way: where exfiltration is enforced, a key in that name is refused before any lookup all the
    same, and recorded as enforced."""
    port = upstream.url.rsplit(":", 1)[1]
    proxy = start_proxy(
        mode="enforce",
        extra=(
            "threats: {lateral_movement: observe}\nredaction: {requests: true}\ncompliance: {required: []}\n"
        ),
    )
    answer = post(proxy, f"https://{NAME.replace('svc.test', 'elsewhere.test')}:{port}/v1/chat/completions")
    assert answer.status_code == 403 and UNREWRITABLE in answer.text
    (record,) = proxy.wait_for_records(1)
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    assert {("aws-access-key-id", "host", True), ("inspection.host", "host", True)} <= found
    assert upstream.received == []
