"""What an agent sets to go through egressguard, and what in its environment would route around it.

Pure: the CLI prints these lines (the banner, the demo's env file) and warns with these findings.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.config.policy import Policy
from proxy.egress import HostPattern, PatternKind

DEFAULT_TOKEN_ENV = "EGRESSGUARD_AGENT_TOKEN"  # noqa: S105 - the name of a variable, not a token
"""Where the embedded policy's agent reads its token (`run` fills it in from the data dir when unset)."""

CA_CERT_NAME = "mitmproxy-ca-cert.pem"
"""The CA certificate's file name in the CA directory (``data_dir/ca``)."""

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
"""Python (ssl, httpx, aiohttp), requests, curl and Node each read their own variable for extra CAs."""

NODE_PROXY_SWITCH = "NODE_USE_ENV_PROXY=1"
"""Node reads HTTP(S)_PROXY only when told to, and only from 22.21 and 24.5 on."""

SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
"""Both spellings of both: clients pick the https one for https:// URLs and the http one for http://
ones (without it a plain-HTTP call leaves unseen); curl reads ``http_proxy`` only in lower case, Python's
urllib prefers lower case, Go and Node's undici read either."""

NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")
"""Exported empty: a value inherited from the agent's surroundings would send what it names around
egressguard, neither inspected nor audited."""


def proxy_variables(url: str) -> dict[str, str]:
    """What an agent exports to send every request through the proxy at ``url``."""
    return dict.fromkeys(PROXY_VARIABLES, url) | dict.fromkeys(NO_PROXY_VARIABLES, "")


def proxy_lines(agent: str, token: str, address: str, role: str) -> list[str]:
    """The proxy variables of one agent, as the banner prints them."""
    url = f"http://{agent}:{token}@{address}"
    return [
        f"{name}={url}" + (f"   # role {role}" if not number else "")
        for number, name in enumerate(PROXY_VARIABLES)
    ]


def no_proxy_lines() -> list[str]:
    first, *others = NO_PROXY_VARIABLES
    return [f"{first}=   # empty: nothing goes around egressguard", *(f"{name}=" for name in others)]


def trust_lines(ca: Path) -> list[str]:
    return [f"{name}={ca}" for name in CA_VARIABLES]


def system_ca_file() -> Path | None:
    """The operating system's bundle of trusted CAs (never what SSL_CERT_FILE happens to point at)."""
    candidates = [ssl.get_default_verify_paths().openssl_cafile, *SYSTEM_CA_FILES]
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


@dataclass(frozen=True, slots=True)
class Bypass:
    """A NO_PROXY entry that sends traffic for an allowed destination straight out, unseen."""

    entry: str
    pattern: str
    role: str

    def __str__(self) -> str:
        return (
            f"NO_PROXY entry {self.entry!r} sends {self.pattern!r} (allowed for role {self.role!r}) "
            f"around egressguard: an agent with this NO_PROXY is neither inspected nor audited there"
        )


def no_proxy_entries(environ: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
    """Every NO_PROXY entry from ``NO_PROXY``, ``no_proxy`` and ``extra`` values (comma or space
    separated, as curl, Go, Python and Node read them)."""
    values = [environ.get("NO_PROXY", ""), environ.get("no_proxy", ""), *extra]
    entries: list[str] = []
    for value in values:
        for entry in value.replace(",", " ").split():
            if entry not in entries:
                entries.append(entry)
    return entries


def no_proxy_bypasses(entries: Iterable[str], policy: Policy) -> list[Bypass]:
    """The entries that cover a destination some role allows. Clients differ in how they match (requests
    compares plain suffixes, curl and Go whole labels), so the widest reading is taken."""
    found: list[Bypass] = []
    for entry in entries:
        for role in policy.roles.values():
            for pattern in (*role.egress.allow, *role.tunnelled.allow):
                if _covers(entry, pattern):
                    found.append(Bypass(entry, pattern.text, role.name))
    return found


def _covers(entry: str, pattern: HostPattern) -> bool:
    host = _entry_host(entry)
    if host == "*":
        return True
    if not host:
        return False
    network = _as_network(host)
    if pattern.kind is PatternKind.ANY_PUBLIC:
        return host not in _LOOPBACK_NAMES and not (network is not None and not network.is_global)
    if pattern.kind is PatternKind.NETWORK:
        assert pattern.network is not None
        if network is None or network.version != pattern.network.version:
            return False
        return network.overlaps(pattern.network)
    if network is not None:
        return False
    suffix = host.lstrip("*").lstrip(".")
    if pattern.kind is PatternKind.HOST:
        return pattern.name.endswith(suffix)
    # A wildcard pattern: the entry covers some of its hosts when it is a suffix of the pattern's domain
    # or names one of the subdomains.
    return pattern.name.endswith(suffix) or suffix.endswith("." + pattern.name)


def _entry_host(entry: str) -> str:
    host = entry.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def _as_network(host: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(host, strict=False)
    except ValueError:
        return None
