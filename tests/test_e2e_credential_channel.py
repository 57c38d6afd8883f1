"""End to end: provider keys in credential headers and query parameters that the destination does not take
are refused in enforce mode (403 in the API's error shape, nothing sent) and recorded in observe mode;
the destination's own kind of key and opaque keys pass. No record or log line carries the key."""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from proxy.commands.localca import UpstreamPKI, make_pki
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.test_credential_channel import ANTHROPIC, AWS, COOKIE_JAR, GITHUB, OPENAI, REQUEST_ID, b64
from tests.upstream import FakeUpstream

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
EXPECTS_OPENAI_KEYS = """\
credentials:
  localhost: {rules: [openai-project-key], fields: [authorization]}
"""


def unexpected(record: dict[str, object]) -> list[dict[str, object]]:
    findings = record["findings"]
    assert isinstance(findings, list)
    return [finding for finding in findings if finding["rule"] == "credential.unexpected"]


def assert_never_written(proxy: Proxy, *secrets: str) -> None:
    written = proxy.output() + "".join(
        path.read_text() for path in (proxy.data_dir / "audit").rglob("*.jsonl")
    )
    assert not any(secret in written for secret in secrets)


@pytest.mark.parametrize(
    ("key", "headers", "rule"),
    [
        pytest.param(GITHUB, {}, "github-pat", id="github-token-as-the-api-key"),
        pytest.param("sk-test", {"X-Api-Key": AWS}, "aws-access-key-id", id="aws-key-in-x-api-key"),
        pytest.param(f"sk-test {GITHUB}", {}, "github-pat", id="a-second-secret-after-the-key"),
        pytest.param(
            OPENAI, {"X-Api-Key": OPENAI}, "openai-project-key", id="the-right-key-in-another-field"
        ),
    ],
)
def test_the_openai_sdk_carrying_a_key_the_host_does_not_take_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, key: str, headers: dict[str, str], rule: str
) -> None:
    """Through the real proxy: a key of a provider's format that the destination does not take in that
    field is refused with a readable 403; nothing reaches the upstream and the record names only the rule."""
    proxy = start_proxy(mode="enforce", extra=EXPECTS_OPENAI_KEYS)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        proxy.openai_client(upstream.url, api_key=key, headers=headers).chat.completions.create(
            model="m", messages=MESSAGES
        )
    assert "credential.unexpected" in str(raised.value) and upstream.received == []
    (record,) = proxy.wait_for_records(1)
    (finding,) = unexpected(record)
    assert (finding["threat"], finding["enforced"], finding["extra"]) == (
        "credential_theft",
        True,
        {"secret_rule": rule},
    )
    assert record["decision"] == "blocked"
    assert_never_written(proxy, GITHUB, AWS, OPENAI)


def test_the_key_the_host_takes_and_an_opaque_key_pass(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The destination's configured kind of key in its field, and a key no rule recognises, go through."""
    proxy = start_proxy(mode="enforce", extra=EXPECTS_OPENAI_KEYS)
    for key in (OPENAI, "sk-test"):
        reply = proxy.openai_client(upstream.url, api_key=key).chat.completions.create(
            model="m", messages=MESSAGES
        )
        assert reply.choices[0].message.content == "Hello from the upstream model."
    sent = [{name.lower(): value for name, value in request.headers.items()} for request in upstream.received]
    assert [headers["authorization"] for headers in sent] == [
        f"Bearer {OPENAI}",
        "Bearer sk-test",
    ]
    assert all(not unexpected(record) for record in proxy.wait_for_records(2))


def test_an_openai_key_in_the_anthropic_sdks_x_api_key_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Anthropic SDK sends its key as ``x-api-key``: an OpenAI key there, to a host that takes none, is
    refused in Anthropic's error shape."""
    proxy = start_proxy(mode="enforce")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    client = anthropic.Anthropic(base_url=upstream.url, api_key=OPENAI, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert upstream.received == []
    (record,) = proxy.wait_for_records(1)
    assert [finding["extra"] for finding in unexpected(record)] == [{"secret_rule": "openai-project-key"}]
    assert_never_written(proxy, OPENAI, ANTHROPIC)


@pytest.mark.parametrize("parameter", ["access_token", "api_key", "key"])
def test_a_key_in_a_credential_query_parameter_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, parameter: str
) -> None:
    """A database's or cloud's key in ``?access_token=`` (or any parameter named as a credential) to a tool
    host that takes none is refused; nothing is sent."""
    proxy = start_proxy(mode="enforce")
    with httpx.Client(
        proxy=proxy.url(),
        verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
        timeout=CLIENT_TIMEOUT_S,
    ) as client:
        reply = client.post(f"{upstream.url}/v1/search?{parameter}={AWS}", json={"q": "x"})
    assert reply.status_code == 403 and upstream.received == []
    (record,) = proxy.wait_for_records(1)
    assert [finding["where"] for finding in unexpected(record)] == [f"url ?{parameter}"]
    assert_never_written(proxy, AWS)


def test_observe_mode_records_without_refusing(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observe mode lets the request through and records what enforce mode would have refused."""
    proxy = start_proxy(mode="observe")
    reply = proxy.openai_client(upstream.url, api_key=GITHUB).chat.completions.create(
        model="m", messages=MESSAGES
    )
    assert reply.choices[0].message.content == "Hello from the upstream model."
    (record,) = proxy.wait_for_records(1)
    (finding,) = unexpected(record)
    assert finding["enforced"] is False and finding["action"] == "block"
    assert_never_written(proxy, GITHUB)


TOOL_HOSTS = ("api.github.com", "slack.com")
SLACK = "xoxb-521530290660-4267974737433-ayOylcQ5XEqdymEUJHa9betV"


@pytest.fixture(scope="module")
def tool_pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("giving the proxy an /etc/hosts of its own needs root and unshare")
    return make_pki(tmp_path_factory.mktemp("tool-pki"), hostnames=TOOL_HOSTS)


@pytest.fixture(scope="module")
def tool_upstream(tool_pki: UpstreamPKI) -> Iterator[FakeUpstream]:
    """A fake upstream whose certificate names the tools' real hosts, which the proxy resolves to it."""
    server = FakeUpstream(tool_pki)
    server.reply.body = b'{"ok": true}'
    yield server
    server.close()


@pytest.mark.parametrize(
    ("host", "path", "authorization", "refused_rule"),
    [
        pytest.param("api.github.com", "/repos/o/r/issues", f"token {GITHUB}", None, id="github-token"),
        pytest.param("slack.com", "/api/chat.postMessage", f"Bearer {SLACK}", None, id="slack-token"),
        pytest.param(
            "api.github.com", "/repos/o/r/issues", f"Bearer {OPENAI}", "openai-project-key", id="openai-key"
        ),
        pytest.param(
            "slack.com", "/api/chat.postMessage", f"token {GITHUB}", "github-pat", id="github-at-slack"
        ),
    ],
)
def test_tool_apis_take_their_own_keys_by_default_and_no_others(
    start_proxy: Callable[..., Proxy],
    tool_pki: UpstreamPKI,
    tool_upstream: FakeUpstream,
    host: str,
    path: str,
    authorization: str,
    refused_rule: str | None,
) -> None:
    """Through the real proxy in enforce mode with no ``credentials`` section, calling the tools by their
    real host names: GitHub's token to api.github.com and Slack's to slack.com reach the tool; an OpenAI key
    to GitHub, or GitHub's token to Slack, is refused and never sent."""
    tool_upstream.received.clear()
    proxy = start_proxy(
        mode="enforce",
        allow="['api.github.com:*', 'slack.com:*']",
        upstream_ca=tool_pki.ca_cert,
        hosts=dict.fromkeys(TOOL_HOSTS, "127.0.0.1"),
    )
    port = tool_upstream.url.rsplit(":", 1)[1]
    with httpx.Client(
        proxy=proxy.url(),
        verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
        timeout=CLIENT_TIMEOUT_S,
    ) as client:
        response = client.post(
            f"https://{host}:{port}{path}",
            json={"text": "build is green"},
            headers={"Authorization": authorization},
        )
    (record,) = proxy.wait_for_records(1)
    if refused_rule is None:
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert [request.headers["Authorization"] for request in tool_upstream.received] == [authorization]
        assert unexpected(record) == []
    else:
        assert response.status_code == 403 and "credential.unexpected" in response.text
        assert tool_upstream.received == []
        assert [finding["extra"] for finding in unexpected(record)] == [{"secret_rule": refused_rule}]
        assert record["decision"] == "blocked"
    assert_never_written(proxy, GITHUB, OPENAI, SLACK)


def test_a_key_in_base64_or_split_across_cookie_values_is_refused_and_a_cookie_jar_passes(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A key written in base64 in a credential header, or split across the values of a cookie's pairs
    (which whoever reads the cookies joins), is refused before anything leaves; a browser's cookie jar (a
    JWT session, analytics ids, a load balancer's stickiness) and a request id in base64 pass as sent."""
    proxy = start_proxy(mode="enforce")
    for headers in (
        {"X-Api-Key": b64(AWS)},
        {"Cookie": f"theme=dark; a={AWS[:8]}; b={AWS[8:]}"},
        {"Cookie": f'a="{GITHUB[:12]}"; b={GITHUB[12:]}'},
    ):
        client = proxy.openai_client(upstream.url, api_key="sk-test", headers=headers)
        with pytest.raises(openai.PermissionDeniedError) as raised:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert "credential.unexpected" in str(raised.value)
    assert upstream.received == []
    records = proxy.wait_for_records(3)
    assert [[finding["where"] for finding in unexpected(record)] for record in records] == [
        ['headers ["x-api-key"]'],
        ['headers ["cookie"]'],
        ['headers ["cookie"]'],
    ]
    benign = {"Cookie": COOKIE_JAR, "X-Request-Id": REQUEST_ID}
    proxy.openai_client(upstream.url, api_key="sk-test", headers=benign).chat.completions.create(
        model="m", messages=MESSAGES
    )
    sent = {name.lower(): value for name, value in upstream.received[-1].headers.items()}
    assert (sent["cookie"], sent["x-request-id"]) == (COOKIE_JAR, REQUEST_ID)
    findings = proxy.wait_for_records(4)[3]["findings"]
    read_as_secrets = [f for f in findings if f["threat"] in ("credential_theft", "data_exfiltration")]
    assert read_as_secrets == []
    assert_never_written(proxy, AWS, GITHUB, b64(AWS))
