"""Flow helpers shared by the addons, and the ids of turns."""

from __future__ import annotations

import os
import uuid
from random import Random

import pytest
from mitmproxy.test import tflow

from addons.gate import turns
from addons.gate.turns import pretty_host
from proxy.turn import new_event_id

HOST_VALUES = [
    "api.openai.com",
    "API.OpenAI.com:443",
    "127.0.0.1:8443",
    "[::1]:8080",
    "[2001:db8::1]",
    "bücher.example",
    "xn--bcher-kva.example:444",
    "evil.example:99999",
    "a b",
    "",
]


@pytest.mark.parametrize("value", HOST_VALUES)
def test_pretty_host_is_mitmproxys_for_every_host_value(value: str) -> None:
    """The kept host part of a Host value is what mitmproxy's ``pretty_host`` reads, read twice."""
    request = tflow.tflow().request
    request.headers["host"] = value
    assert pretty_host(request) == request.pretty_host
    assert pretty_host(request) == request.pretty_host


def test_pretty_host_of_http2_reads_the_authority() -> None:
    request = tflow.tflow().request
    request.http_version = "HTTP/2.0"
    request.authority = "models.example:8443"
    assert pretty_host(request) == request.pretty_host == "models.example"


def test_pretty_host_follows_a_changed_host_value() -> None:
    """A request whose Host value changed is read anew, never served the host kept for the old value."""
    request = tflow.tflow().request
    request.headers["host"] = "allowed.example"
    assert pretty_host(request) == "allowed.example"
    request.headers["host"] = "other.example:8080"
    assert pretty_host(request) == "other.example"
    del request.headers["host"]
    assert pretty_host(request) == request.host


def test_pretty_hosts_kept_are_bounded() -> None:
    request = tflow.tflow().request
    for number in range(turns.PRETTY_HOSTS + 5):
        request.headers["host"] = f"host{number}.example"
        assert pretty_host(request) == f"host{number}.example"
    assert len(turns._pretty_hosts) <= turns.PRETTY_HOSTS


@pytest.mark.parametrize("seed", range(20))
def test_event_ids_are_version_4_uuids_of_16_random_bytes(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event id is what ``uuid.UUID(bytes=..., version=4).hex`` spells for the same random bytes."""
    raw = Random(seed).randbytes(16) if seed else b"\xff" * 16  # noqa: S311 - reproducible test bytes
    monkeypatch.setattr(os, "urandom", lambda size: raw[:size])
    assert new_event_id() == uuid.UUID(bytes=raw, version=4).hex


def test_event_ids_differ() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(hex=event_id).version == 4 for event_id in ids)
