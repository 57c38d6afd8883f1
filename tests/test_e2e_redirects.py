"""A redirect an allowed host answers is followed by the agent's client as a new request through the
proxy, and decided afresh: one pointing at the cloud metadata service or a host outside the role's
allowlist, in any spelling, is refused there. (IPv6 spellings are left to the decision's own tests:
httpx writes a bracketed address into an absolute-form request line without its brackets, which the
proxy refuses as malformed, 400, before deciding anything.)"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.harness import Proxy

LOCATIONS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://0xa9fea9fe/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/",
    "http://127.1:9/",
    "http://evil.example/collect",
    "https://evil.example/collect",
]


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    """A plain-HTTP server on loopback that redirects ``/N`` to ``LOCATIONS[N]``; it records every path
    it is asked for."""
    asked: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(302)
            self.send_header("Location", LOCATIONS[int(self.path.strip("/"))])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"localhost:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_redirect_to_an_internal_or_unlisted_host_is_decided_afresh(
    start_proxy: Callable[..., Proxy], redirector: tuple[str, list[str]], mode: str
) -> None:
    proxy = start_proxy(mode=mode)
    origin, asked = redirector
    with httpx.Client(
        proxy=proxy.url(),
        follow_redirects=True,
        trust_env=False,
        timeout=10,
        verify=ssl.create_default_context(cafile=proxy.ca_cert),
    ) as client:
        for index, location in enumerate(LOCATIONS):
            try:
                answer = client.get(f"http://{origin}/{index}")
            except httpx.HTTPError:
                assert mode == "observe", location  # observe lets it through; nothing answers there
                continue
            if mode == "enforce":
                assert answer.status_code == 403, (location, answer.status_code, answer.text[:300])
                assert answer.history and answer.history[0].status_code == 302
    assert asked == [f"/{index}" for index in range(len(LOCATIONS))]
    refused = [
        finding
        for record in proxy.wait_for_records(2 * len(LOCATIONS))
        for finding in record.get("findings", [])
        if finding["threat"] == "lateral_movement" and finding["rule"] != "egress.first_seen"
    ]
    assert len(refused) >= len(LOCATIONS)
    assert all(finding["enforced"] is (mode == "enforce") for finding in refused)
