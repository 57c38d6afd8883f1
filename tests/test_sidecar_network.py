"""The sidecar's promise without Docker: the compose file's networks rebuilt with Linux network namespaces.

Three namespaces stand for the compose services: the agent's, on the internal network alone; egressguard's,
on the internal network and the outside one; the model's, outside. egressguard's namespace does not forward
packets (as a container does not), so the agent's one way to the model is the proxy: the official SDK with
the banner's environment gets its answer and the turn is audited, while the same SDK ignoring the proxy, a
raw connection, and even a default route through egressguard's address all fail to reach the model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest

from proxy.commands.localca import UpstreamPKI, make_pki
from tests.harness import Proxy
from tests.upstream import FakeUpstream

NAMES = {role: f"eg{os.getpid()}-{role}" for role in ("agent", "guard", "model")}
GUARD_INTERNAL = "10.77.0.1"  # egressguard's address on the internal network: the proxy agents dial
AGENT_ADDRESS = "10.77.0.2"
GUARD_OUTSIDE = "10.77.1.1"
MODEL_ADDRESS = "10.77.1.2"  # the model API, reachable from egressguard's namespace only
ANSWER = "Hello from the upstream model."
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


IP = shutil.which("ip")


def ip(*arguments: str) -> None:
    if IP is None:
        raise OSError("the `ip` command (iproute2) is not installed")
    result = subprocess.run([IP, *arguments], capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")


def link(
    namespace: str, name: str, peer_namespace: str, peer_name: str, address: str, peer_address: str
) -> None:
    """A veth pair between two namespaces, both ends addressed in one /24 and up."""
    ip(
        "-n",
        namespace,
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        peer_name,
        "netns",
        peer_namespace,
    )
    ip("-n", namespace, "addr", "add", f"{address}/24", "dev", name)
    ip("-n", peer_namespace, "addr", "add", f"{peer_address}/24", "dev", peer_name)
    ip("-n", namespace, "link", "set", name, "up")
    ip("-n", peer_namespace, "link", "set", peer_name, "up")


@pytest.fixture(scope="module")
def namespaces() -> Iterator[dict[str, str]]:
    """agent <-> guard <-> model, with forwarding off in the guard's namespace."""
    created: list[str] = []
    try:
        for name in NAMES.values():
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
    except OSError as refused:
        for name in created:
            ip("netns", "del", name)
        pytest.skip(f"network namespaces are not available here (needs root and `ip netns`): {refused}")
    try:
        link(NAMES["guard"], "internal0", NAMES["agent"], "eth0", GUARD_INTERNAL, AGENT_ADDRESS)
        link(NAMES["guard"], "outside0", NAMES["model"], "eth0", GUARD_OUTSIDE, MODEL_ADDRESS)
        ip(
            "-n", NAMES["model"], "route", "add", "default", "via", GUARD_OUTSIDE
        )  # the internet answers anyone
        forwarding(NAMES["guard"], on=False)
        yield NAMES
    finally:
        for name in created:
            ip("netns", "del", name)


def forwarding(namespace: str, *, on: bool) -> None:
    ip("netns", "exec", namespace, "sysctl", "-q", "-w", f"net.ipv4.ip_forward={int(on)}")


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run this thread in a network namespace: sockets it opens (and processes it starts) live there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            yield
        finally:
            os.setns(own, os.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


@pytest.fixture(scope="module")
def model_pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    return make_pki(tmp_path_factory.mktemp("model-pki"), addresses=(MODEL_ADDRESS,))


@pytest.fixture
def model(namespaces: dict[str, str], model_pki: UpstreamPKI) -> Iterator[FakeUpstream]:
    with inside(namespaces["model"]):
        server = FakeUpstream(model_pki, host=MODEL_ADDRESS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def guard(
    namespaces: dict[str, str], model_pki: UpstreamPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """egressguard in its own namespace, listening on the internal network, the model on its allowlist:
    one for the module, as a proxy in a namespace starts in a fresh interpreter (most of a test's time)."""
    with inside(namespaces["guard"]):
        started = Proxy(
            tmp_path_factory.mktemp("guard"),
            model_pki.ca_cert,
            listen_host=GUARD_INTERNAL,
            allow=f"['{MODEL_ADDRESS}:*']",
        )
    yield started
    started.stop()


@pytest.fixture
def agent_environment(guard: Proxy, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The agent set up with the banner's lines alone, as the compose file sets it."""
    environment = guard.banner_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def chat(model: FakeUpstream) -> str | None:
    client = openai.OpenAI(
        base_url=f"https://{MODEL_ADDRESS}:{model.port}/v1", api_key="sk-test", max_retries=0
    )
    reply = client.with_options(timeout=5).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    return str(reply.choices[0].message.content)


def test_through_the_proxy_the_agent_gets_its_answer_and_the_turn_is_audited(
    namespaces: dict[str, str], model: FakeUpstream, guard: Proxy, agent_environment: dict[str, str]
) -> None:
    """The banner's proxy address is the guard's internal one, and the official SDK reaches the model
    through it."""
    assert agent_environment["HTTPS_PROXY"].endswith(f"@{GUARD_INTERNAL}:{guard.port}")
    before = len(guard.wait_for_records(0))
    with inside(namespaces["agent"]):
        assert chat(model) == ANSWER
    [record] = guard.wait_for_records(before + 1)[before:]
    assert (record["egress_host"], record["status"], record["dialect"]) == (MODEL_ADDRESS, 200, "openai_chat")
    assert len(model.received) == 1


def test_an_agent_ignoring_the_proxy_cannot_reach_the_model(
    namespaces: dict[str, str],
    model: FakeUpstream,
    guard: Proxy,
    agent_environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No silent bypass: without the proxy variables the SDK gets a connection error, a raw socket gets
    'network unreachable', and nothing reaches the model."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name)
    before = len(guard.wait_for_records(0))
    with inside(namespaces["agent"]):
        with pytest.raises(openai.APIConnectionError):
            chat(model)
        with pytest.raises(OSError, match="unreachable"):
            socket.create_connection((MODEL_ADDRESS, model.port), timeout=2).close()
    assert model.received == []
    assert guard.wait_for_records(before + 1, timeout=1)[before:] == []


def test_a_route_through_the_guard_does_not_forward(
    namespaces: dict[str, str], model: FakeUpstream, guard: Proxy, agent_environment: dict[str, str]
) -> None:
    """An agent able to add a default route via egressguard's address still gets nowhere, because
    egressguard's namespace does not forward (a container does not): packets not for the proxy itself are
    dropped, and nothing but the proxy listens there. The same route into a forwarding namespace does
    reach the model, which is what forwarding off prevents."""
    ip("-n", namespaces["agent"], "route", "add", "default", "via", GUARD_INTERNAL)
    try:
        with inside(namespaces["agent"]):
            with pytest.raises(OSError):
                socket.create_connection((MODEL_ADDRESS, model.port), timeout=2).close()
            with pytest.raises(OSError):
                socket.create_connection((GUARD_INTERNAL, model.port), timeout=2).close()
            socket.create_connection((GUARD_INTERNAL, guard.port), timeout=2).close()
        forwarding(namespaces["guard"], on=True)
        try:
            with inside(namespaces["agent"]):
                socket.create_connection((MODEL_ADDRESS, model.port), timeout=2).close()
        finally:
            forwarding(namespaces["guard"], on=False)
    finally:
        ip("-n", namespaces["agent"], "route", "del", "default")
    assert model.received == []
