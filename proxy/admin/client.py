"""The CLI side of the admin API: ``egressguard approvals``, ``freezes``, ``reload`` and ``status``.

Where the API is and which token to send come from flags, then the environment, then the policy
(``admin.listen`` and the token file under its data dir), so on the proxy's own host the commands work
with the same ``--config`` the proxy was started with and nothing else.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from proxy.admin.tokens import DEFAULT_FULL_ENV, FULL_TOKEN_FILE
from proxy.commands.logs import escape_controls
from proxy.config.policy import AdminSettings, Policy, load_policy
from proxy.config.yamlschema import SchemaError

ADMIN_URL_ENV = "EGRESSGUARD_ADMIN_URL"
ADMIN_CA_ENV = "EGRESSGUARD_ADMIN_CA"
UNREAD_TOKEN = "-"  # noqa: S105 - stands in for agent tokens the client has no use for


class AdminError(Exception):
    """The admin API could not be reached or refused the request; the message says why."""


class _AnyToken(dict[str, str]):
    """An environment in which every agent token is set: the client reads the policy for its admin
    section and data dir, and must not need the agents' secrets to do so."""

    def get(self, key: str, default: Any = None) -> Any:
        return os.environ.get(key) or UNREAD_TOKEN


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the proxy's policy (for admin.listen and the token file)")
    parser.add_argument("--admin", help=f"admin API URL (default: ${ADMIN_URL_ENV}, else the policy's)")
    parser.add_argument("--token", help=f"admin token (default: ${DEFAULT_FULL_ENV}, else the token file)")
    parser.add_argument(
        "--admin-ca",
        help=f"a PEM file of certificates to trust for an https admin API (default: ${ADMIN_CA_ENV}; the "
        "policy's admin.tls.cert_file and the system's trusted CAs are trusted either way)",
    )


class AdminClient:
    def __init__(
        self, base_url: str, token: str, timeout_s: float = 30.0, trusted: Sequence[Path] = ()
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            timeout=timeout_s,
            trust_env=False,
            headers={"Authorization": f"Bearer {token}"},
            verify=_trusting(trusted),
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> AdminClient:
        policy = client_policy(args.config)
        admin = policy.admin or AdminSettings()
        url = args.admin or os.environ.get(ADMIN_URL_ENV) or admin.url
        extra_ca = args.admin_ca or os.environ.get(ADMIN_CA_ENV)
        trusted = [
            *([admin.tls.cert_file] if admin.tls and admin.tls.cert_file.is_file() else []),
            *([Path(extra_ca)] if extra_ca else []),
        ]
        token = args.token or os.environ.get(DEFAULT_FULL_ENV)
        if token is None:
            token_path = policy.data_dir / FULL_TOKEN_FILE
            try:
                token = token_path.read_text().strip()
            except OSError as error:
                raise AdminError(
                    f"no admin token: pass --token or set {DEFAULT_FULL_ENV} ({error})"
                ) from None
        return cls(url, token, trusted=trusted)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            reply = self.http.request(method, self.base_url + path, json=body)
        except httpx.HTTPError as error:
            raise AdminError(f"cannot reach the admin API at {self.base_url}: {error}") from None
        try:
            payload = reply.json()
        except ValueError:
            payload = {"error": {"message": reply.text.strip()}}
        if reply.status_code >= 400:
            detail = payload.get("errors") or payload.get("error", {}).get("message") or reply.reason_phrase
            if isinstance(detail, list):
                detail = "\n".join(str(line) for line in detail)
            raise AdminError(f"{reply.status_code}: {detail}")
        return payload

    def close(self) -> None:
        self.http.close()


def _trusting(certificates: Sequence[Path]) -> ssl.SSLContext:
    """The system's trusted CAs and ``certificates``, each trusted as it is: the listener's own
    certificate (self-signed or not, as the proxy's host has it) or a private CA's."""
    context = ssl.create_default_context()
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    for certificate in certificates:
        try:
            context.load_verify_locations(cafile=certificate)
        except (OSError, ValueError) as error:
            raise AdminError(f"cannot read the certificates in {certificate}: {error}") from None
    return context


def client_policy(config: str | None) -> Policy:
    try:
        return load_policy(Path(config) if config else None, environ=_AnyToken(os.environ))
    except SchemaError as error:
        raise AdminError("\n".join(str(problem) for problem in error.problems)) from None


def operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def table(rows: list[list[str]], header: list[str]) -> str:
    """Agents chose most of what is listed (user ids, session ids, tool calls): none of their control
    characters reaches the operator's terminal."""
    lines = [header, *[[escape_controls(str(cell)) for cell in row] for row in rows]]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*lines, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines
    )


def with_client(handler: Any) -> Any:
    """Run a command with a client, turning API errors into a message and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            client = AdminClient.from_arguments(args)
        except AdminError as error:
            print(f"egressguard: {error}", file=sys.stderr)
            return 2
        try:
            return int(handler(client, args))
        except AdminError as error:
            print(f"egressguard: {error}", file=sys.stderr)
            return 1
        finally:
            client.close()

    return run


def approvals_list(client: AdminClient, args: argparse.Namespace) -> int:
    query = f"?status={args.status}" if args.status else ""
    listed = client.call("GET", f"/api/v1/approvals{query}")["approvals"]
    if args.json:
        print(json.dumps(listed, indent=1))
        return 0
    rows = [
        [
            a["id"],
            a["status"],
            a["agent_id"],
            a["user_id"] or "-",
            a["summary"],
            _when(a["expires"]),
            f"{a['used']}/{a['uses']}",
        ]
        for a in listed
    ]
    print(
        table(rows, ["ID", "STATUS", "AGENT", "USER", "CALL", "EXPIRES", "USED"]) if rows else "no approvals"
    )
    return 0


def approvals_decide(client: AdminClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"by": args.by or operator()}
    if args.action == "approve":
        body["uses"] = args.uses
        if args.ttl:
            body["ttl"] = args.ttl
    decided = client.call("POST", f"/api/v1/approvals/{args.id}/{args.action}", body)
    decision = f"{decided['id']}: {decided['status']} by {decided['decided_by']} ({decided['summary']})"
    print(escape_controls(decision))
    return 0


def freezes_list(client: AdminClient, args: argparse.Namespace) -> int:
    listed = client.call("GET", "/api/v1/freezes")["freezes"]
    if args.json:
        print(json.dumps(listed, indent=1))
        return 0
    rows = [
        [f.get("kind", "-"), f.get("identity", "-"), _when(f.get("until")), f.get("reason", "-")]
        for f in listed
    ]
    print(table(rows, ["KIND", "IDENTITY", "UNTIL", "REASON"]) if rows else "no freezes")
    return 0


def freezes_lift(client: AdminClient, args: argparse.Namespace) -> int:
    body = {"kind": args.kind, "identity": args.identity, "by": args.by or operator()}
    lifted = client.call("POST", "/api/v1/freezes/lift", body)
    print(f"lifted {args.kind} {args.identity!r} (by {lifted['by']})")
    return 0


def tokens_list(client: AdminClient, args: argparse.Namespace) -> int:
    listed = client.call("GET", "/api/v1/tokens")["rotations"]
    rows = [[r.get("agent", "-"), _when(r.get("rotated_at")), r.get("reason", "-")] for r in listed]
    print(table(rows, ["AGENT", "ROTATED", "REASON"]) if rows else "no rotated tokens")
    return 0


def tokens_issue(client: AdminClient, args: argparse.Namespace) -> int:
    body = {"by": args.by or operator()}
    print(client.call("POST", f"/api/v1/tokens/{quote(args.agent, safe='')}", body)["token"])
    return 0


def reload(client: AdminClient, args: argparse.Namespace) -> int:
    done = client.call("POST", "/api/v1/reload", {"by": args.by or operator()})
    print(f"policy reloaded: {done['source']} (sha256 {done['sha256']})")
    return 0


def alerts_send(client: AdminClient, args: argparse.Namespace) -> int:
    sent = client.call(
        "POST", f"/api/v1/alerts/{args.action}", {"rule": args.rule, "by": args.by or operator()}
    )
    if sent["alert_id"] is None:
        print(f"{args.rule}: the query returned no rows, so no alert was raised")
        return 0
    deadline = time.monotonic() + args.wait
    while True:
        outcomes = client.call("GET", f"/api/v1/alerts/{sent['alert_id']}/deliveries")["deliveries"]
        settled = all(
            str(outcomes.get(name, "")).startswith(("delivered", "rejected")) for name in sent["destinations"]
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name in sent["destinations"]:
        print(f"{args.rule} -> {name}: {outcomes.get(name, 'not attempted yet')}")
    return 0 if all(outcomes.get(name) == "delivered" for name in sent["destinations"]) else 1


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = commands.add_parser("approvals", help="withheld destructive tool calls awaiting a decision")
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list approvals")
    listing.add_argument("--status", choices=["pending", "granted", "denied"])
    listing.add_argument("--json", action="store_true")
    add_connection_arguments(listing)
    listing.set_defaults(handler=with_client(approvals_list))
    for action, help_text in (("approve", "grant a pending approval"), ("deny", "deny a pending approval")):
        decide = actions.add_parser(action, help=help_text)
        decide.add_argument("id")
        decide.add_argument("--by", help="who decides (default: your user name)")
        if action == "approve":
            decide.add_argument("--uses", type=int, default=1, help="calls it covers (default 1)")
            decide.add_argument("--ttl", help="how long it stays usable (default 1h)")
        add_connection_arguments(decide)
        decide.set_defaults(handler=with_client(approvals_decide), action=action)

    freezes = commands.add_parser("freezes", help="frozen users, revoked sessions, blocked agents")
    actions = freezes.add_subparsers(dest="freezes_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list freezes in force")
    listing.add_argument("--json", action="store_true")
    add_connection_arguments(listing)
    listing.set_defaults(handler=with_client(freezes_list))
    lift = actions.add_parser("lift", help="lift a freeze before it expires")
    lift.add_argument("kind", choices=["agent", "user", "session"])
    lift.add_argument("identity")
    lift.add_argument("--by", help="who lifts it (default: your user name)")
    add_connection_arguments(lift)
    lift.set_defaults(handler=with_client(freezes_lift))

    rotated = commands.add_parser("tokens", help="agent tokens rotated by an alert or issued by an operator")
    actions = rotated.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="agents whose token was rotated, when and why")
    add_connection_arguments(listing)
    listing.set_defaults(handler=with_client(tokens_list))
    issue = actions.add_parser(
        "issue",
        help="issue an agent a new token and print it, once (give it to the agent as its proxy password)",
    )
    issue.add_argument("agent")
    issue.add_argument("--by", help="who issues it (default: your user name)")
    add_connection_arguments(issue)
    issue.set_defaults(handler=with_client(tokens_issue))

    alerts = commands.add_parser("alerts", help="alert rules: send a test alert, run a query rule now")
    actions = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    for action, help_text in (
        ("test", "send one alert of RULE, marked [TEST], to its destinations (exit 1 if one fails)"),
        ("run", "evaluate the query rule RULE now and deliver what it finds"),
    ):
        sending = actions.add_parser(action, help=help_text)
        sending.add_argument("rule")
        sending.add_argument("--wait", type=float, default=15.0, help="seconds to wait for delivery")
        sending.add_argument("--by", help="who (default: your user name)")
        add_connection_arguments(sending)
        sending.set_defaults(handler=with_client(alerts_send), action=action)

    reloading = commands.add_parser("reload", help="make the running proxy re-read its policy")
    reloading.add_argument("--by", help="who reloads (default: your user name)")
    add_connection_arguments(reloading)
    reloading.set_defaults(handler=with_client(reload))
