from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import settings

from proxy.commands.localca import UpstreamPKI, make_pki
from proxy.config.paths import DATA_DIR_ENV
from tests.harness import Proxy
from tests.redis_server import RedisServer
from tests.upstream import SHUTDOWN_POLL_S, FakeUpstream, Reply
from tests.webhook_receiver import Receiver

# A Hypothesis deadline is a timing assertion: on a machine that runs the suite beside other work an
# example's time says nothing of the code, and the tests assert behaviour only.
settings.register_profile("egressguard", deadline=None)
settings.load_profile("egressguard")

PROXY_OUTPUT_SHOWN = 20_000
"""Characters from the end of a proxy's output shown in a failed test's report."""

ENVIRONMENT_LEAKS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the developer's proxy, CA bundle or API endpoints, nor writes to the per-user default
    data dir: each gets its own state home (which the default data dir follows)."""
    for name in ENVIRONMENT_LEAKS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    own = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "state-home" / own))


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """``egressguard`` commands configure structlog to the stderr of the moment; undo it after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session", autouse=True)
def asyncio_complaints_stay_out_of_mitmproxy_masters() -> Iterator[None]:
    """A test's `taddons.context` closes its loop but leaves its master's log handler on the root logger.
    When the collector later meets a task another test left pending, the dead loop's complaint travels
    up to that handler, which raises on its own closed loop, and pytest fails whichever test is running
    at that moment. The complaints go to stderr instead, as they would with no handler installed."""
    complaints = logging.getLogger("asyncio")
    complaints.propagate = False
    yield
    complaints.propagate = True


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session's tests that only read and write (skipped if not installed)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_server(shared_redis: RedisServer) -> RedisServer:
    """The session's redis-server, emptied for this test."""
    shared_redis.client().flushall()
    return shared_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstream_pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    return make_pki(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture(scope="session")
def upstream_server(upstream_pki: UpstreamPKI) -> Iterator[FakeUpstream]:
    server = FakeUpstream(upstream_pki)
    yield server
    server.close()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The shared fake upstream, with a fresh default reply and an empty request log for each test."""
    upstream_server.reply = Reply()
    upstream_server.answer = None
    upstream_server.received.clear()
    return upstream_server


STARTED_PROXIES = pytest.StashKey[list[Proxy]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the output of each egressguard it started: what the proxy saw is
    most of what tells a failure of the product from one of the test's machine."""
    report: pytest.TestReport = yield
    if report.failed:
        for proxy in item.stash.get(STARTED_PROXIES, []):
            report.sections.append(
                (f"egressguard {proxy.workdir.name} output", proxy.output()[-PROXY_OUTPUT_SHOWN:])
            )
    return report


@pytest.fixture
def start_proxy(
    tmp_path: Path, upstream_pki: UpstreamPKI, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(upstream_ca: Path | None = None, **kwargs: Any) -> Proxy:
        workdir = tmp_path / f"proxy{len(started)}"
        workdir.mkdir()
        proxy = Proxy(workdir, upstream_ca or upstream_pki.ca_cert, **kwargs)
        started.append(proxy)
        request.node.stash.setdefault(STARTED_PROXIES, []).append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


SHARED_POOL = 200
"""Agents each proxy a module shares declares: one for each test that takes it, with room to spare."""


class SharedProxies:
    """The proxies a module's tests share, one for each set of policy options, started when a test first
    asks for it: starting and stopping one costs a test more than most of what it checks."""

    def __init__(self, root: Path, upstream_ca: Path) -> None:
        self.root = root
        self.upstream_ca = upstream_ca
        self.started: dict[str, Proxy] = {}

    def take(self, **options: Any) -> Proxy:
        """The proxy of ``options``, speaking as an agent of its pool no earlier test spoke as, its records
        those written from now on."""
        key = json.dumps(options, sort_keys=True)
        proxy = self.started.get(key)
        if proxy is None:
            workdir = self.root / f"proxy{len(self.started)}"
            workdir.mkdir()
            proxy = self.started[key] = Proxy(workdir, self.upstream_ca, pool=SHARED_POOL, **options)
        elif proxy.process.poll() is not None:
            code = proxy.process.returncode
            raise RuntimeError(f"the proxy of {key} exited ({code}) after an earlier test:\n{proxy.output()}")
        proxy.take_pool_agent()
        proxy.forget_records()
        return proxy

    def stop(self) -> None:
        for proxy in self.started.values():
            proxy.stop()


@pytest.fixture(scope="module")
def module_proxies(
    tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI
) -> Iterator[SharedProxies]:
    proxies = SharedProxies(tmp_path_factory.mktemp("shared-proxies"), upstream_pki.ca_cert)
    yield proxies
    proxies.stop()


@pytest.fixture
def shared_proxy(module_proxies: SharedProxies, request: pytest.FixtureRequest) -> Callable[..., Proxy]:
    """``start_proxy`` for tests that leave nothing behind another test could read: the module's proxy of
    these policy options, this test an agent of its own on it that has sent nothing yet, and the audit
    records it reads those of its own requests. A test that changes what every agent meets (a reload, a
    restart, a freeze of no agent), or looks in the proxy's output or data dir for what it made the proxy
    write there, starts its own; one that finds there nothing that must never be written reads earlier
    tests' writing too, which asks more of the proxy."""

    def take(**options: Any) -> Proxy:
        proxy = module_proxies.take(**options)
        request.node.stash.setdefault(STARTED_PROXIES, []).append(proxy)
        return proxy

    return take


@pytest.fixture
def proxy(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy()


@pytest.fixture
def agent_env(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """Configure this process like an agent behind egressguard: proxy URL and CA bundle, nothing else."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return proxy


@pytest.fixture
def named_upstream(tmp_path: Path) -> Iterator[tuple[FakeUpstream, str, Path]]:
    """The fake upstream under this machine's host name: Java's and Go's proxy selection always connects
    directly to `localhost` and loopback addresses, so a test on loopback needs a name they do not
    recognise. Yields the upstream, its base URL and the CA that signed it."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if address != "127.0.0.1":
        pytest.skip(f"this machine's name {name!r} does not resolve to 127.0.0.1")
    pki = make_pki(tmp_path / "named-pki", hostnames=(name,))
    server = FakeUpstream(pki)
    yield server, f"https://{name}:{server.port}", pki.ca_cert
    server.close()


@pytest.fixture
def named_proxy(named_upstream: tuple[FakeUpstream, str, Path], start_proxy: Callable[..., Proxy]) -> Proxy:
    """An egressguard whose policy allows the named upstream and trusts its CA."""
    _, url, ca = named_upstream
    return start_proxy(upstream_ca=ca, allow=f"['{url.split('//')[1].split(':')[0]}:*']")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver that accepts every delivery (a module may override it)."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def plain_upstream() -> Iterator[list[dict[str, Any]]]:
    """A plain-HTTP server that records the headers of each request it gets."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            seen.append({"port": self.connection.getsockname()[1], "headers": self.headers.items()})
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
    ).start()
    seen.append({"port": server.server_address[1]})
    yield seen
    server.shutdown()
    server.server_close()
