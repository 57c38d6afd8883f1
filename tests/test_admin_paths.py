"""Every guarded admin route, asked for by a path that normalises to it (doubled or trailing slashes,
percent-encoded dots and slashes, dot segments, other case, a trailing newline) or with an agent's proxy
credentials instead of an admin token: never answered with its data, only 401, 404 or 405."""

from __future__ import annotations

import base64
import re
import socket

from proxy.admin import gateway
from proxy.admin.api import ROUTES, Route
from proxy.admin.dashboard import DASHBOARD_ROUTES
from tests.harness import AGENT, AGENT_TOKEN
from tests.test_admin import Admin, admin, start_admin  # noqa: F401 - fixtures

GUARDED = [route for route in [*ROUTES, *DASHBOARD_ROUTES] if route.access is not None]


def _spellings(path: str) -> list[str]:
    head, _, last = path.rpartition("/")
    return [
        path,
        "/" + path,
        path + "/",
        path.replace("/", "//"),
        path.upper(),
        path.replace("/", "/./"),
        f"/x/..{path}",
        path.replace("/", "%2f"),
        path.replace("/", "%2F"),
        path.replace("v1", "%76%31"),
        f"{head}/%2e/{last}",
        path + "%0a",
        path + "%00",
        path + "?",
        path + "#",
        path + ";x",
        f"http://127.0.0.1{path}",
    ]


def _status(listener: Admin, method: str, target: str, authorization: str | None) -> tuple[int, bytes]:
    port = int(listener.url.rsplit(":", 1)[1])
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Length: 0",
        "Connection: close",
    ]
    if authorization is not None:
        lines.append(authorization)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while chunk := connection.recv(65536):
            answer += chunk
            if b"text/event-stream" in answer:
                break
    return int(answer.split(b" ", 2)[1]), answer


def _concrete(route: Route) -> str:
    return re.sub(r"\{\w+\}", "x", route.pattern)


def test_no_spelling_of_a_guarded_path_answers_without_an_admin_token(admin: Admin) -> None:  # noqa: F811
    agent_basic = "Basic " + base64.b64encode(f"{AGENT}:{AGENT_TOKEN}".encode()).decode()
    presentations = [
        None,
        f"Authorization: {agent_basic}",
        f"Proxy-Authorization: {agent_basic}",
        f"Authorization: Bearer {AGENT_TOKEN}",
        "Authorization: Bearer ",
        f"authorization: bearer {admin.full}x",
        f"X-Authorization: Bearer {admin.full}",
    ]
    for route in GUARDED:
        for target in _spellings(_concrete(route)):
            for presented in presentations:
                status, answer = _status(admin, route.method, target, presented)
                assert status in (400, 401, 404, 405), (route.method, target, presented, answer[:200])


CONTROL_SUFFIXES = ["\n", "\r\n", "\r", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028"]
"""Characters a pattern anchored with ``$`` lets follow a route (the first), and others of its kind."""


def test_a_route_matches_its_whole_path_and_nothing_after_it() -> None:
    """Each route (the dashboard's too) matches a path whole: not with a newline or another control
    character after it (``$`` also matches before a final newline), nor with one inside a parameter."""
    for route in [*ROUTES, *DASHBOARD_ROUTES]:
        path = _concrete(route)
        assert route.match(route.method, path) is not None, path
        for suffix in CONTROL_SUFFIXES:
            assert route.match(route.method, path + suffix) is None, (path, suffix)
            if "{" in route.pattern:
                inside = re.sub(r"\{\w+\}", f"x{suffix}y", route.pattern, count=1)
                assert route.match(route.method, inside) is None, (inside, suffix)


def test_the_gateway_joins_only_whole_paths() -> None:
    """The host's gateway answers a drill or a delivery listing from every worker only for the path itself."""
    for path in ("/api/v1/drills/d1", "/api/v1/alerts/a1/deliveries"):
        assert gateway.joined_route(path)
        for suffix in CONTROL_SUFFIXES:
            assert not gateway.joined_route(path + suffix), (path, suffix)


def test_a_path_with_a_control_character_is_no_route_even_with_the_admin_token(
    admin: Admin,  # noqa: F811
) -> None:
    """With the full admin token, a readable route spelled with an encoded newline or other control
    character after it, or inside its parameter, is answered 404, never with the route's data."""
    suffixes = ["%0a", "%0d%0a", "%0d", "%00", "%09", "%0b", "%1b", "%7f", "%c2%85", "%e2%80%a8"]
    for route in GUARDED:
        if route.method != "GET":
            continue
        targets = [_concrete(route) + suffix for suffix in suffixes]
        if "{" in route.pattern:
            targets += [re.sub(r"\{\w+\}", f"x{suffix}y", route.pattern) for suffix in suffixes]
        for target in targets:
            status, answer = _status(admin, "GET", target, f"Authorization: Bearer {admin.full}")
            assert status in (400, 404), (target, answer[:200])
