"""The admin listener's handling of credentials on a real proxy: an admin token written in a URL is refused,
however it is written there, and an agent's token issued through the CLI is printed once, works, and is
found in no log, audit record or state file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from tests.harness import AGENT, AGENT_TOKEN, Proxy, proxy_authorization
from tests.test_admin import Admin, start_admin  # noqa: F401 - the fixture is used by name


def url_forms(token: str) -> list[str]:
    return [
        f"/api/v1/status?token={token}",
        f"/api/v1/status?access_token={quote(token)}",
        f"/api/v1/status?{token}",
        f"/api/v1/status?x=1&auth=Bearer+{token}",
        f"/api/v1/status?auth=Bearer%20{token}",
        f"/api/v1/approvals?status=pending&key={token}",
        f"/{token}",
        f"/api/v1/tokens/{quote(token)}",
        "/api/v1/status/" + "".join(f"%{byte:02X}" for byte in token.encode()),
        # Glued inside a longer value, as a server's log keeps it all the same.
        f"/api/v1/status?x=foo:{token}",
        f"/api/v1/status?x={token},y",
        f"/api/v1/status?x=zz{token}zz",
        f"/api/v1/status?x=%2522{quote(token)}%2522",
        f"/api/v1/status;{token}",
    ]


def files_under(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def test_an_admin_token_in_the_url_is_refused_with_or_without_a_header(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    admin = start_admin()
    for token in (admin.full, admin.read):
        for path in url_forms(token):
            for header in (None, admin.full):
                answer = admin.get(path, header)
                assert answer.status_code == 400, (path, answer.text)
                assert "sent in the URL" in answer.json()["error"]["message"]
                assert token not in answer.text
    assert admin.get("/api/v1/approvals?status=pending", admin.read).status_code == 200
    # A token that is no admin token (a wrong one, an agent's) is no reason to refuse: 401 as without it.
    assert admin.get("/api/v1/status?token=not-the-token").status_code == 401


def test_an_admin_token_in_the_url_is_refused_by_the_listener_of_several_workers(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """The supervisor's listener passes the query on as it came: a token written as a parameter without a
    value reaches the workers, which refuse it."""
    admin = start_admin(args=("--workers", "2"))
    for path in (f"/api/v1/status?{admin.read}", f"/api/v1/status?token={admin.full}"):
        assert admin.get(path, admin.read).status_code == 400, path
    assert admin.get("/api/v1/approvals?status=pending", admin.read).status_code == 200


def connect_status(proxy: Proxy, token: str) -> int:
    status, _ = proxy.raw(
        b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n"
        + proxy_authorization(AGENT, token)
        + b"\r\n"
    )
    return status


def test_an_issued_token_is_printed_once_works_and_is_kept_nowhere(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    admin = start_admin()
    assert connect_status(admin.proxy, AGENT_TOKEN) == 200
    first = admin.cli("tokens", "issue", AGENT, "--by", "ops")
    assert first.returncode == 0, first.stderr
    issued = first.stdout.strip()
    assert issued.startswith("eg_agt_")
    assert connect_status(admin.proxy, AGENT_TOKEN) == 407
    assert connect_status(admin.proxy, issued) == 200
    listed = admin.cli("tokens", "list")
    assert "issued by ops (admin token)" in listed.stdout and issued not in listed.stdout
    second = admin.cli("tokens", "issue", AGENT).stdout.strip()
    assert second.startswith("eg_agt_") and second != issued
    assert connect_status(admin.proxy, issued) == 407 and connect_status(admin.proxy, second) == 200
    unknown = admin.cli("tokens", "issue", "no-such-agent")
    assert unknown.returncode != 0 and "no agent 'no-such-agent' in the policy" in unknown.stderr
    assert admin.get(f"/api/v1/tokens/{AGENT}", admin.full).status_code == 405
    assert admin.post(f"/api/v1/tokens/{AGENT}", {"by": "x"}, admin.read).status_code == 403
    issuances = [
        record for record in admin.proxy.audit_records() if record.get("type") == "admin.token_issued"
    ]
    assert [record["agent_id"] for record in issuances] == [AGENT, AGENT]
    assert issuances[0]["by"] == "ops (admin token)"
    kept = files_under(admin.proxy.data_dir) + admin.proxy.output().encode()
    for token in (issued, second):
        assert token.encode() not in kept
