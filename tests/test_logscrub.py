"""mitmproxy's own log lines quote what agents send (a TLS server name, a host, an exception's message):
each is written with its secrets and token-like runs masked, its control characters escaped and its
length bounded."""

from __future__ import annotations

import io
import json
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy.test import taddons

from addons.process.logscrub import ScrubbedLogs
from proxy.commands.localca import UpstreamPKI
from proxy.commands.logs import MAX_LOG_TEXT, _cut, configure_logging, safe_log_text
from proxy.config.policy import parse_policy
from proxy.model import Decision
from proxy.runtime import Runtime
from tests.harness import Proxy, proxy_authorization

GITHUB_TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"
KEY = b"k" * 32


@pytest.mark.parametrize(
    "text",
    [
        f"The client does not trust the proxy's certificate for evil-{GITHUB_TOKEN.lower()}.example",
        f"Bad request line: b'GET /{GITHUB_TOKEN} HTTP/1.1'",
        f"invalid literal for int() with base 10: '{GITHUB_TOKEN}'",
        "server connect api.AKIAQWERTY234567ABCD.example:443",
        "x" * 3 + "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9n",
        "host q9Zx3Lp7Rt2Vw8Ky4Nm6Bc1Df5Gh0Jk.example.com",
    ],
)
def test_a_quoted_secret_never_reaches_the_line(text: str) -> None:
    """A secret a rule knows, or a token-like run no rule knows, is replaced, upper or lower case."""
    runtime = loaded_runtime()
    detectors = runtime.detectors
    line = safe_log_text(text, detectors.sensitive, detectors.fingerprint_key)
    for secret in (GITHUB_TOKEN, "AKIAQWERTY234567ABCD", "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9n"):
        assert secret.lower() not in line.lower()
    assert "q9Zx3Lp7Rt2Vw8Ky4Nm6Bc1Df5Gh0Jk" not in line
    assert "REDACTED" in line


@pytest.mark.parametrize("control", ["\n", "\r\n", "\x1b[2J", "\x00", "\u2028", "\x85", "\u202e"])
def test_a_control_character_cannot_forge_a_line(control: str) -> None:
    """A newline, a terminal escape or a bidi override quoted from a request is written as an escape."""
    line = safe_log_text(f"bad host a{control}2026-01-01 [info] agent.turn decision=allowed", None, KEY)
    assert line.isprintable() and "\\" in line


def test_text_is_bounded() -> None:
    """A megabyte quoted from a request costs its first characters and a count."""
    line = safe_log_text("word " * 200_000, None, KEY)
    assert len(line) < MAX_LOG_TEXT + 50 and line.endswith(f"({1_000_000 - MAX_LOG_TEXT} more characters)")


def test_ordinary_lines_read_as_they_were() -> None:
    """Words, addresses, ports and short ids are left alone."""
    text = "[12:00:01.123][127.0.0.1:52086] client disconnect: api.openai.com:443 (HTTP/2 stream 3 reset)"
    assert safe_log_text(text, loaded_runtime().detectors.sensitive, KEY) == text


def loaded_runtime() -> Runtime:
    return Runtime(parse_policy("version: 1\nagents: {}\nroles: {default: {}}\n", "p.yaml", environ={}))


@pytest.fixture
def root_handler() -> Iterator[io.StringIO]:
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    logging.getLogger().addHandler(handler)
    yield written
    logging.getLogger().removeHandler(handler)


def test_the_addon_scrubs_every_root_handler_and_traceback(root_handler: io.StringIO) -> None:
    """A record logged through the standard library, with its arguments and its exception, is written
    scrubbed by a handler of the root logger; the filter goes at ``done``."""
    addon = ScrubbedLogs(loaded_runtime())
    with taddons.context(addon):
        addon.running()
        try:
            int(GITHUB_TOKEN)
        except ValueError:
            logging.getLogger("mitmproxy.proxy.server").warning(
                "client said %s\nforged", GITHUB_TOKEN, exc_info=True
            )
        addon.done()
    text = root_handler.getvalue()
    assert GITHUB_TOKEN not in text and "client said [REDACTED:github-pat" in text
    assert text.count("\n") == 1  # the record's own end of line only: the traceback is escaped with it
    assert all(addon.filter not in handler.filters for handler in logging.getLogger().handlers)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    started = Proxy(tmp_path_factory.mktemp("logscrub"), upstream_pki.ca_cert, allow="[api.openai.com]")
    yield started
    started.stop()


def test_e2e_a_token_in_a_failed_handshake_s_server_name_is_not_logged(proxy: Proxy) -> None:
    """An agent that does not trust the proxy's CA fails its handshake; mitmproxy logs the server name it
    asked for, which here carries a token (a DNS label is lower case, so is the token)."""
    secret_host = f"evil-{GITHUB_TOKEN.lower()}.example"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
            connection.sendall(
                f"CONNECT {secret_host}:443 HTTP/1.1\r\nHost: {secret_host}:443\r\n".encode()
                + proxy_authorization()
                + b"\r\n"
            )
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            untrusting = ssl.create_default_context()
            with pytest.raises(ssl.SSLError):
                untrusting.wrap_socket(connection, server_hostname=secret_host).close()
    output = proxy.output()
    assert "handshake failed" in output.lower()
    assert GITHUB_TOKEN.lower() not in output.lower()


def test_e2e_a_huge_context_header_and_path_are_bounded_in_the_record(proxy: Proxy) -> None:
    """A user id of 20,000 characters and a path of 30,000 are recorded as their first characters, a
    count and a keyed hash: the record, its log line and the alerts built from it stay small."""
    before = len(proxy.wait_for_records(0, timeout=0))
    proxy.raw(
        f"GET http://localhost:1/{'p' * 30_000} HTTP/1.1\r\nHost: localhost:1\r\n".encode()
        + f"X-User-Id: {'u' * 20_000}\r\n".encode()
        + proxy_authorization()
        + b"\r\n"
    )
    (record,) = proxy.wait_for_records(before + 1)[before:]
    assert record["user_id"].startswith("u" * 100) and "more characters" in record["user_id"]
    assert len(record["user_id"]) < 600 and len(record["path"]) < 600
    assert len(json.dumps(record)) < 4000


def test_every_line_of_egressguard_is_bounded_and_follows_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A field of any length (an exception's message quoting a peer) is cut to ``MAX_LOG_TEXT``, and lines
    go to ``sys.stderr`` as it is when they are written, not to the stream it was when logging was set up
    (which its owner may have closed)."""
    configure_logging()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    structlog.get_logger().error("state.tallies_unwritten", error="y" * (MAX_LOG_TEXT + 500))
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    structlog.get_logger().error("state.tallies_unwritten", error="short")
    line = json.loads(second.getvalue())
    assert line["error"] == "short"
    monkeypatch.setattr("sys.stderr", third := io.StringIO())
    structlog.get_logger().error("audit.sync_failed", error="z" * (MAX_LOG_TEXT + 500))
    cut = json.loads(third.getvalue())["error"]
    assert cut == "z" * MAX_LOG_TEXT + "... (500 more characters)"


class _Described:
    def __structlog__(self) -> str:
        return "described"


def _rendered_by_default(event: dict[str, Any]) -> str:
    """``event`` with every text cut, rendered by ``JSONRenderer(sort_keys=True)``."""
    cut = {
        name: _cut(value, MAX_LOG_TEXT) if isinstance(value, str) else value for name, value in event.items()
    }
    rendered = structlog.processors.JSONRenderer(sort_keys=True)(None, "info", cut)
    assert isinstance(rendered, str)
    return rendered


def test_a_line_is_rendered_as_structlog_renders_it_by_default() -> None:
    """The configured chain's last step (cutting texts, rendering JSON with an encoder built once) writes
    each event byte for byte as cutting every text and ``JSONRenderer(sort_keys=True)`` did, the lines
    longer than ``MAX_LOG_TEXT`` with no text to cut too."""
    configure_logging()
    render = structlog.get_config()["processors"][-1]
    events: list[dict[str, Any]] = [
        {"event": "agent.turn", "agent": "bot", "status": 200, "latency_ms": 1.5, "findings": ["a", "b"]},
        {"event": "x", "error": "y" * (MAX_LOG_TEXT + 1), "exact": "z" * MAX_LOG_TEXT, "none": None},
        {
            "event": "ünïcode \u2028",
            "path": Path("a/b"),
            "other": _Described(),
            "nested": {"b": 1, "a": [2.0]},
        },
        {"event": "kind", "decision": Decision.BLOCKED, "long": Decision.BLOCKED * 1000},
        {"event": "many", **{f"field{number}": "w" * 100 for number in range(40)}},
        {"event": "nested", "texts": ["v" * (MAX_LOG_TEXT + 10)], "escaped": "\n" * (MAX_LOG_TEXT // 2 + 1)},
        {"event": "edge", "error": "e" * (MAX_LOG_TEXT - 20)},
    ]
    for event in events:
        expected = _rendered_by_default(event)
        for _ in range(2):
            assert render(None, "info", dict(event)) == expected


_LOG_VALUES = st.one_of(
    st.text(max_size=MAX_LOG_TEXT + 40),
    st.integers(min_value=0, max_value=MAX_LOG_TEXT + 40).map(lambda size: "x" * size),
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=50), max_size=3),
)


@given(st.dictionaries(st.text(min_size=1, max_size=20), _LOG_VALUES, max_size=6))
def test_any_line_is_rendered_as_cutting_every_text_did(event: dict[str, Any]) -> None:
    """Texts are looked through only in lines longer than ``MAX_LOG_TEXT``: never a line that differs."""
    configure_logging()
    render = structlog.get_config()["processors"][-1]
    assert render(None, "info", dict(event)) == _rendered_by_default(event)
