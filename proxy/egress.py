"""Egress decisions: a role's host allowlist, the internal-address guard and domain-fronting checks.

Everything here is pure except ``resolve``, which asks the system resolver and should run in a thread.
The caller resolves first, decides on the resolved addresses, and then connects to one of exactly those
addresses, so a DNS answer that changes between the check and the connect (rebinding) is never used.

Pattern language (one string per allow or deny entry):

- ``api.openai.com`` one host; ``*.openai.com`` any subdomain of it (not the apex itself);
- ``203.0.113.5`` or ``2001:db8::1`` one address; ``10.0.0.0/8`` or ``fd00::/8`` a network;
- ``*`` any public host;
- any of these may carry a port: ``api.openai.com:443``, ``*:443``, ``10.0.0.0/8:5432``, ``[fd00::/8]:443``,
  or ``:*`` for every port (``localhost:*``, ``[::1]:*``). An allow entry without a port covers the web
  ports, 443 and 80, only: ``api.openai.com`` does not open ``api.openai.com:22`` or ``:6379``. A deny entry
  without a port covers every port of what it names.

Deny entries win over allow entries. Internal destinations (loopback, private, link-local, CGNAT,
unique-local, multicast, reserved, cloud metadata) are refused even under ``*``; only an allow entry that
names the host exactly, or an address or network entry containing the internal address, opens one. A
cloud-metadata address is opened only by an address or network entry containing it, or by naming a
metadata host (``metadata.google.internal``) itself: naming some other host never lets its DNS answer
point at the metadata service.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

import idna

from proxy.model import Action, Finding, Severity, Threat
from proxy.state import StateStore, digest

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
type GetAddrInfo = Callable[[str, int, int, int], Sequence[tuple[Any, ...]]]
type OwnListener = Callable[[IPAddress, int], bool]
"""Whether a connection to this address and port would reach one of egressguard's own listeners."""

DEFAULT_ROLE = "default"
FIRST_SEEN_WINDOW_S = 30 * 24 * 3600.0

_MAX_HOST_LENGTH = 253
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z", re.ASCII)
_IPV4_PART = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
WEB_PORTS = frozenset({443, 80})
"""The ports an allow entry without a port covers: what a security team reads ``api.openai.com`` to allow."""
EVERY_PORT = "*"
"""The port written for every port (``localhost:*``); a deny entry without a port means it too."""
_UNICODE_DOTS = ("\u3002", "\uff0e", "\uff61")


# --- host names and IP literals ------------------------------------------------------------------------


def canonical_host(host: str) -> str:
    """Lowercase, IDNA-encoded, without brackets or a trailing dot: the form every comparison uses."""
    text = host.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        for dot in _UNICODE_DOTS:
            text = text.replace(dot, ".")
        text = _to_ascii(text)
    text = text.lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.endswith("."):
        text = text[:-1]
    return text


def _to_ascii(name: str) -> str:
    """A Unicode name as clients look it up: UTS 46 without transitional mapping (browsers, curl, Go,
    Node), so ``straße.de`` is ``xn--strae-oqa.de``, not ``strasse.de``. A name UTS 46 refuses, which no
    such client connects to, still gets the older IDNA 2003 mapping, so ``localhost`` hidden behind an
    invisible character stays ``localhost``; one neither takes is left as is, fails host validation and
    matches nothing."""
    with contextlib.suppress(idna.IDNAError, UnicodeError):
        return str(idna.encode(name, uts46=True, transitional=False).decode("ascii"))
    with contextlib.suppress(UnicodeError):
        return name.encode("idna").decode("ascii")
    return name


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes to any common parser, or None when it is a name.

    IPv4 follows inet_aton, which resolvers and HTTP clients share: one to four dot-separated parts,
    each decimal, octal (leading ``0``) or hex (``0x``), the last part filling the remaining bytes, so
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1`` and ``0x7f.1`` all mean 127.0.0.1.
    IPv6 may be bracketed and carry a zone (``fe80::1%eth0``), which is dropped.
    """
    text = canonical_host(host)
    if not text or len(text) > _MAX_HOST_LENGTH:
        return None
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    return _parse_ipv4_any_spelling(text)


def _parse_ipv4_any_spelling(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _IPV4_PART.fullmatch(part):
            return None
        if part.startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _is_valid_name(host: str) -> bool:
    return 0 < len(host) <= _MAX_HOST_LENGTH and all(_HOST_LABEL.match(label) for label in host.split("."))


# --- the internal-address guard --------------------------------------------------------------------------

# The most specific reason comes first; metadata addresses also fall in the ranges below them.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task credentials
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud Classic
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_INTERNAL_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "this-network address"),
        ("10.0.0.0/8", "private address (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback address"),
        ("169.254.0.0/16", "link-local address"),
        ("172.16.0.0/12", "private address (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.168.0.0/16", "private address (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking address"),
        ("224.0.0.0/4", "multicast address"),
        ("240.0.0.0/4", "reserved address"),
    )
)
_INTERNAL_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified address"),
        ("::1/128", "loopback address"),
        ("64:ff9b:1::/48", "local-use NAT64 address"),
        ("100::/64", "discard-only address"),
        ("fc00::/7", "unique-local address"),
        ("fe80::/10", "link-local address"),
        ("fec0::/10", "site-local address"),
        ("ff00::/8", "multicast address"),
    )
)
# IPv6 forms that carry an IPv4 address in their last 32 bits; 6to4 and Teredo are handled apart.
_LOW_32_EMBEDDINGS: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(network), form)
    for network, form in (
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b::/96", "NAT64"),
        ("::/96", "IPv4-compatible"),
    )
)


def internal_address_reason(address: IPAddress) -> str | None:
    """Why ``address`` is internal (loopback, private, metadata, ...), or None for a public address."""
    if address in _METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(address, ipaddress.IPv4Address):
        return next((reason for network, reason in _INTERNAL_V4 if address in network), None)
    own = next((reason for network, reason in _INTERNAL_V6 if address in network), None)
    if own is not None:
        return own
    for embedded, form in _embedded_ipv4(address):
        reason = internal_address_reason(embedded)
        if reason is not None:
            return f"{reason} ({form} IPv6 form)"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    found = [
        (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), form)
        for network, form in _LOW_32_EMBEDDINGS
        if address in network
    ]
    if address.sixtofour is not None:
        found.append((address.sixtofour, "6to4"))
    if address.teredo is not None:
        server, client = address.teredo
        found += [(server, "Teredo"), (client, "Teredo")]
    return found


def internal_name_reason(host: str) -> str | None:
    """Why a host *name* is internal by itself (cloud metadata or loopback names), or None."""
    name = canonical_host(host)
    if name in _METADATA_NAMES:
        return "cloud metadata host"
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return "loopback host name"
    return None


def _comparable(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 address for matching against networks."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --- patterns and rules ----------------------------------------------------------------------------------


class PatternKind(StrEnum):
    ANY_PUBLIC = "any_public"
    SUBDOMAIN = "subdomain"
    HOST = "host"
    NETWORK = "network"


@dataclass(frozen=True, slots=True)
class HostPattern:
    """One compiled allow or deny entry; ``text`` is the entry as written, reported as the rule."""

    text: str
    kind: PatternKind
    name: str = ""
    network: IPNetwork | None = None
    port: frozenset[int] | None = None
    """The ports covered; None for every port."""

    @classmethod
    def parse(cls, text: str, unported: frozenset[int] | None = WEB_PORTS) -> HostPattern:
        """Compile one entry, which covers the ports ``unported`` (None: every port) when it names none;
        raise ValueError naming the entry and what is wrong with it."""
        try:
            return cls._parse(text, unported)
        except ValueError as error:
            raise ValueError(f"invalid egress pattern {text!r}: {error}") from None

    @classmethod
    def _parse(cls, text: str, unported: frozenset[int] | None) -> HostPattern:
        entry = text.strip()
        if not entry:
            raise ValueError("empty pattern")
        host, port = _split_pattern_port(entry, unported)
        if host == "*":
            return cls(entry, PatternKind.ANY_PUBLIC, port=port)
        if host.startswith("*."):
            suffix = canonical_host(host[2:])
            if "*" in suffix or not _is_valid_name(suffix) or parse_ip_literal(suffix) is not None:
                raise ValueError("'*.' must be followed by a domain name")
            return cls(entry, PatternKind.SUBDOMAIN, name=suffix, port=port)
        host = canonical_host(host)
        if "*" in host:
            raise ValueError("a wildcard is only allowed as '*' or as a leading '*.'")
        if "/" in host:
            try:
                network = ipaddress.ip_network(host, strict=True)
            except ValueError as error:
                raise ValueError(f"bad network: {error}") from None
            return cls(entry, PatternKind.NETWORK, network=network, port=port)
        address = parse_ip_literal(host)
        if address is not None:
            return cls(entry, PatternKind.NETWORK, network=ipaddress.ip_network(address), port=port)
        if ":" in host or not _is_valid_name(host):
            raise ValueError("not a host name, address or network")
        return cls(entry, PatternKind.HOST, name=host, port=port)

    def port_matches(self, port: int) -> bool:
        return self.port is None or port in self.port

    def names(self, host: str) -> bool:
        """Whether this entry covers the (canonical) name or address ``host``, whatever the port and
        without resolving it."""
        literal = parse_ip_literal(host)
        return self.matches(_Destination(host, literal, 0, ()), every_address=True, any_port=True)

    def matches(self, destination: _Destination, *, every_address: bool, any_port: bool = False) -> bool:
        """Whether this entry covers ``destination``.

        A network entry covers a named host through its resolved addresses: all of them for an allow
        entry (``every_address``), any of them for a deny entry.
        """
        if not (any_port or self.port_matches(destination.port)):
            return False
        if self.kind is PatternKind.ANY_PUBLIC:
            return True
        if self.kind is PatternKind.NETWORK:
            assert self.network is not None
            if destination.literal is not None:
                return _comparable(destination.literal) in self.network
            if not destination.resolved:
                return False
            covered = (_comparable(address) in self.network for address in destination.resolved)
            return all(covered) if every_address else any(covered)
        if destination.literal is not None:
            return False
        if self.kind is PatternKind.HOST:
            return destination.host == self.name
        return destination.host.endswith("." + self.name)


def _split_pattern_port(entry: str, unported: frozenset[int] | None) -> tuple[str, frozenset[int] | None]:
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0:
            raise ValueError("unclosed '['")
        host, rest = entry[1:close], entry[close + 1 :]
        if not rest:
            return host, unported
        if not rest.startswith(":"):
            raise ValueError("unexpected text after ']'")
        return host, _parse_port(rest[1:])
    if entry.count(":") == 1:
        host, port_text = entry.split(":")
        return host, _parse_port(port_text)
    return entry, unported  # no port, or a bare IPv6 address or network


def _parse_port(text: str) -> frozenset[int] | None:
    if text == EVERY_PORT:
        return None
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535 or '*', not {text!r}")
    return frozenset({int(text)})


class EgressRules:
    """One role's compiled allow and deny entries. Raises ValueError on the first invalid entry. An allow
    entry without a port covers ``WEB_PORTS``; a deny entry without one, every port."""

    __slots__ = ("allow", "deny")

    def __init__(self, allow: Sequence[str], deny: Sequence[str] = ()) -> None:
        self.allow: tuple[HostPattern, ...] = tuple(HostPattern.parse(text) for text in allow)
        self.deny: tuple[HostPattern, ...] = tuple(HostPattern.parse(text, None) for text in deny)

    def __repr__(self) -> str:
        allow = [pattern.text for pattern in self.allow]
        deny = [pattern.text for pattern in self.deny]
        return f"EgressRules(allow={allow!r}, deny={deny!r})"


DENY_ALL = EgressRules(allow=())


def rules_for_role(rules_by_role: Mapping[str, EgressRules], role: str | None) -> tuple[str, EgressRules]:
    """The role's rules, else the ``default`` role's, else deny-all; with the role name that applied."""
    if role is not None and role in rules_by_role:
        return role, rules_by_role[role]
    return DEFAULT_ROLE, rules_by_role.get(DEFAULT_ROLE, DENY_ALL)


# --- the decision ----------------------------------------------------------------------------------------


class EgressCode(StrEnum):
    """Why, in one machine-readable word; ``reason`` says it for people."""

    ALLOWLISTED = "allowlisted"
    INTERNAL_OPENED = "internal_opened"
    DENYLISTED = "denylisted"
    NOT_ALLOWLISTED = "not_allowlisted"
    INTERNAL_ADDRESS = "internal_address"
    CLOUD_METADATA = "cloud_metadata"
    INVALID_DESTINATION = "invalid_destination"
    UNRESOLVED = "unresolved"
    OWN_LISTENER = "own_listener"
    SECRET_IN_NAME = "secret_in_name"  # noqa: S105  (a reason code, not a secret)


@dataclass(frozen=True, slots=True)
class EgressDecision:
    result: Literal["allow", "deny"]
    reason: str
    rule: str
    role: str
    code: EgressCode
    agent: str
    host: str
    port: int

    @property
    def allowed(self) -> bool:
        return self.result == "allow"


def unresolved(decision: EgressDecision, error: str) -> EgressDecision:
    """The name allowed by the role did not resolve. Refused: letting it through unpinned would let the
    connection resolve it again, and a rebinding name server answer with an internal address then."""
    return replace(
        decision,
        result="deny",
        reason=f"{decision.host} does not resolve ({error})",
        code=EgressCode.UNRESOLVED,
    )


@dataclass(frozen=True, slots=True)
class _Destination:
    host: str
    literal: IPAddress | None
    port: int
    resolved: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class _InternalHit:
    reason: str
    address: IPAddress | None
    metadata: bool


def decide(
    agent: str,
    role: str,
    rules: EgressRules,
    host: str,
    port: int,
    resolved_ips: Sequence[str],
    *,
    own_listener: OwnListener | None = None,
) -> EgressDecision:
    """Allow or deny a connection from ``agent`` (acting as ``role``) to ``host:port``.

    ``resolved_ips`` are the addresses the caller will connect to (``resolve``'s answer); each is
    checked like the host itself. Order: egressguard's own listeners (``own_listener``: its proxy port and
    admin listener, which no entry opens: an agent reaching them through the proxy would loop or talk to
    the admin API), deny entries, then the internal-address guard, then allow entries; nothing matched
    means deny.
    """
    name = canonical_host(host)

    def verdict(
        result: Literal["allow", "deny"], code: EgressCode, reason: str, rule: str = ""
    ) -> EgressDecision:
        return EgressDecision(result, reason, rule, role, code, agent, name, port)

    literal = parse_ip_literal(name)
    if literal is None and not _is_valid_name(name):
        return verdict("deny", EgressCode.INVALID_DESTINATION, f"{host!r} is not a valid host")
    if not 1 <= port <= 65535:
        return verdict("deny", EgressCode.INVALID_DESTINATION, f"port {port} is out of range")
    resolved: list[IPAddress] = []
    for text in resolved_ips:
        address = parse_ip_literal(text)
        if address is None:
            return verdict("deny", EgressCode.INVALID_DESTINATION, f"resolved address {text!r} is not an IP")
        resolved.append(address)
    destination = _Destination(name, literal, port, tuple(resolved))

    if own_listener is not None:
        for address in (*([literal] if literal is not None else []), *resolved):
            if own_listener(_comparable(address), port):
                return verdict(
                    "deny",
                    EgressCode.OWN_LISTENER,
                    f"{name}:{port} is egressguard's own listener ({address})",
                )

    for pattern in rules.deny:
        if pattern.matches(destination, every_address=False):
            return verdict("deny", EgressCode.DENYLISTED, f"denied by rule {pattern.text!r}", pattern.text)

    hits = _internal_hits(destination)
    if hits:
        opened_by: list[HostPattern] = []
        for hit in hits:
            opener = next((pattern for pattern in rules.allow if _opens(pattern, destination, hit)), None)
            if opener is None:
                code = EgressCode.CLOUD_METADATA if hit.metadata else EgressCode.INTERNAL_ADDRESS
                if any(_opens(replace(pattern, port=None), destination, hit) for pattern in rules.allow):
                    return verdict("deny", code, _port_not_allowed(name, port, role))
                return verdict(
                    "deny", code, f"{_describe(name, literal, hit)}; only an explicit allow entry opens it"
                )
            opened_by.append(opener)
        rule = opened_by[0].text
        return verdict(
            "allow", EgressCode.INTERNAL_OPENED, f"internal destination opened by rule {rule!r}", rule
        )

    for pattern in rules.allow:
        if pattern.matches(destination, every_address=True):
            return verdict("allow", EgressCode.ALLOWLISTED, f"allowed by rule {pattern.text!r}", pattern.text)
    if any(replace(pattern, port=None).matches(destination, every_address=True) for pattern in rules.allow):
        return verdict("deny", EgressCode.NOT_ALLOWLISTED, _port_not_allowed(name, port, role))
    return verdict("deny", EgressCode.NOT_ALLOWLISTED, f"{name} is not in the allowlist of role {role!r}")


def _port_not_allowed(name: str, port: int, role: str) -> str:
    """The reason for a refusal that only the port decided, saying how to open the port."""
    return (
        f"port {port} of {name} is not in the allowlist of role {role!r} (an entry without a port covers "
        f"443 and 80 only: allow {name}:{port}, or {name}:* for every port)"
    )


def _internal_hits(destination: _Destination) -> list[_InternalHit]:
    hits: list[_InternalHit] = []
    if destination.literal is None:
        name_reason = internal_name_reason(destination.host)
        if name_reason is not None:
            hits.append(_InternalHit(name_reason, None, destination.host in _METADATA_NAMES))
    addresses = [destination.literal] if destination.literal is not None else []
    for address in (*addresses, *destination.resolved):
        reason = internal_address_reason(address)
        if reason is not None:
            hits.append(_InternalHit(reason, address, _is_metadata_address(address)))
    return hits


def _describe(name: str, literal: IPAddress | None, hit: _InternalHit) -> str:
    if hit.address is None:
        return f"{name} is a {hit.reason}"
    if hit.address != literal:
        return f"{name} resolves to {hit.address}, a {hit.reason}"
    if name == str(literal):
        return f"{name} is a {hit.reason}"
    return f"{name} means {literal}, a {hit.reason}"


def _is_metadata_address(address: IPAddress) -> bool:
    if address in _METADATA_ADDRESSES:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        return any(embedded in _METADATA_ADDRESSES for embedded, _ in _embedded_ipv4(address))
    return False


def _opens(pattern: HostPattern, destination: _Destination, hit: _InternalHit) -> bool:
    if not pattern.port_matches(destination.port):
        return False
    if pattern.kind is PatternKind.HOST:
        names_host = destination.literal is None and pattern.name == destination.host
        return names_host and (not hit.metadata or destination.host in _METADATA_NAMES)
    if pattern.kind is PatternKind.NETWORK and hit.address is not None:
        assert pattern.network is not None
        return _comparable(hit.address) in pattern.network
    return False


# --- resolution, fronting, first-seen -------------------------------------------------------------------


def own_listeners(ports: Set[int], is_local_address: Callable[[IPAddress], bool]) -> OwnListener:
    """The ``own_listener`` check for listeners on ``ports``: any address of this host (loopback, or one
    ``is_local_address`` says is assigned here) on one of those ports. Whatever address a listener is
    bound to, taking every local address with its port closes it in every spelling and behind any name
    that resolves to it, at the cost of another local service sharing the port number."""

    def reaches(address: IPAddress, port: int) -> bool:
        return port in ports and (address.is_loopback or address.is_unspecified or is_local_address(address))

    return reaches


def resolve(host: str, port: int, *, getaddrinfo: GetAddrInfo = socket.getaddrinfo) -> list[str]:
    """The addresses ``host`` resolves to, in resolver order without repeats: the ones to check and use.

    An IP literal in any spelling is returned in canonical form without a lookup. Blocking: run it in a
    thread. Raises OSError (``socket.gaierror``) when the name does not resolve.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        return [str(literal)]
    answers = getaddrinfo(canonical_host(host), port, 0, socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in answers:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def fronting_mismatch(connect_host: str | None, sni: str | None, host_header: str | None) -> str | None:
    """Why the CONNECT host, the TLS SNI and the HTTP Host header disagree, or None when they agree.

    Absent values are skipped. Ports are ignored; names compare case-insensitively without a trailing
    dot, and addresses by value whatever their spelling.
    """
    # Every request through a tunnel asks again for the tunnel's host and server name.
    length = sum(len(value) for value in (connect_host, sni, host_header) if value)
    mismatch = _kept_mismatch if length <= FRONTING_KEPT_CHARS else _mismatch
    return mismatch(connect_host, sni, host_header)


def _mismatch(connect_host: str | None, sni: str | None, host_header: str | None) -> str | None:
    connect = _host_without_port(connect_host)
    server_name = canonical_host(sni) if sni else ""
    header = _host_without_port(host_header)
    if connect and server_name and not _same_host(connect, server_name):
        return f"TLS SNI {server_name!r} differs from CONNECT host {connect!r}"
    if header:
        expected, label = (server_name, "TLS SNI") if server_name else (connect, "CONNECT host")
        if expected and not _same_host(header, expected):
            return f"Host header {header!r} differs from {label} {expected!r}"
    return None


_kept_mismatch = functools.lru_cache(maxsize=1024)(_mismatch)


_AUTHORITY = re.compile(
    r"(?:\[(?P<bracketed>[^\]\s]+)\]|(?P<name>[^\s:@,/\\?#\[\]]+))(?::(?P<port>[0-9]{1,5}))?\Z"
)
_FORWARDED_HOST = re.compile(r"(?:^|[;,\s])host\s*=\s*(?:\"([^\"]*)\"|([^;,\s]*))", re.IGNORECASE)
_MAX_SHOWN = 80


def request_fronting(
    destination: tuple[str, int],
    authority: str,
    host_headers: Sequence[str],
    *,
    x_forwarded_host: Sequence[str] = (),
    forwarded: Sequence[str] = (),
) -> str | None:
    """Why a request names a destination other than the one it is sent to, or None when it names none.

    ``destination`` is where the connection goes (a CONNECT tunnel's target, or the URL of a plain-HTTP
    request); ``authority`` the one an absolute-form request target or HTTP/2 ``:authority`` names ("" when
    none); ``host_headers`` every Host header; ``x_forwarded_host`` and ``forwarded`` the values of those
    headers. Each must name the destination's host (any case, trailing dot or IP spelling) and, where it
    names a port, its port. More than one Host header is refused on its own, since servers and
    intermediaries disagree on which one counts; so is a value that is not a well-formed authority
    (whitespace, a folded line, userinfo, a list, an unbracketed IPv6 address).
    """
    named = (authority, tuple(host_headers), tuple(x_forwarded_host), tuple(forwarded))
    length = (
        len(authority)
        + sum(map(len, host_headers))
        + sum(map(len, x_forwarded_host))
        + sum(map(len, forwarded))
    )
    # An agent names the same host the same way turn after turn: a short spelling's verdict is kept.
    return (_kept_fronting if length <= FRONTING_KEPT_CHARS else _fronting)(destination, *named)


FRONTING_KEPT_CHARS = 512
"""The longest spelling of a request's destination (its request target's authority and header values, or
its tunnel's host and server name) whose ``request_fronting`` or ``fronting_mismatch`` verdict is kept."""


def _fronting(
    destination: tuple[str, int],
    authority: str,
    host_headers: tuple[str, ...],
    x_forwarded_host: tuple[str, ...],
    forwarded: tuple[str, ...],
) -> str | None:
    host, port = destination
    if len(host_headers) > 1:
        return f"{len(host_headers)} Host headers in one request"
    named = [("request target", authority)] if authority else []
    named += [("Host header", value) for value in host_headers]
    named += [("X-Forwarded-Host", part.strip()) for value in x_forwarded_host for part in value.split(",")]
    for value in forwarded:
        named += [("Forwarded host", quoted or bare) for quoted, bare in _FORWARDED_HOST.findall(value)]
    for label, value in named:
        parsed = _AUTHORITY.match(value)
        if parsed is None or (parsed["bracketed"] and ":" not in parsed["bracketed"]):
            return f"malformed {label} {_shown(value)}"
        name = canonical_host(parsed["bracketed"] or parsed["name"])
        if not (_is_valid_name(name) or parse_ip_literal(name)):
            return f"malformed {label} {_shown(value)}"
        if not _same_host(name, canonical_host(host)):
            return f"{label} {_shown(name)} differs from {_shown(canonical_host(host))}"
        if parsed["port"] is not None and int(parsed["port"]) != port:
            return f"{label} port {parsed['port']} differs from {port}"
    return None


_kept_fronting = functools.lru_cache(maxsize=1024)(_fronting)


def _shown(value: str) -> str:
    return repr(value[:_MAX_SHOWN] + ("..." if len(value) > _MAX_SHOWN else ""))


def _host_without_port(value: str | None) -> str:
    if not value:
        return ""
    text = value.strip()
    if text.startswith("["):
        return canonical_host(text[1 : text.find("]")] if "]" in text else text)
    if text.count(":") == 1:
        text = text.split(":")[0]
    return canonical_host(text)


def _same_host(first: str, second: str) -> bool:
    if first == second:
        return True
    first_address, second_address = parse_ip_literal(first), parse_ip_literal(second)
    return first_address is not None and first_address == second_address


def first_seen(store: StateStore, agent: str, host: str, window_s: float = FIRST_SEEN_WINDOW_S) -> bool:
    """True the first time ``agent`` reaches ``host`` within ``window_s`` (the window runs from then)."""
    return store.add_if_new(f"egress.first_seen:{agent}", digest(canonical_host(host)), window_s)


def secret_in_name(decision: EgressDecision, reason: str) -> EgressDecision:
    """The name allowed by the role holds a secret, refused before it is looked up. Its findings are the
    secret's (``TurnInspector.scan_host``), under the secret's threat: ``egress_finding`` adds none."""
    return replace(decision, result="deny", reason=reason, code=EgressCode.SECRET_IN_NAME)


def egress_finding(decision: EgressDecision, *, enforced: bool) -> Finding | None:
    """The lateral-movement finding for a denied destination; None when the decision allows, or refuses
    a name for the secret it holds."""
    if decision.allowed or decision.code is EgressCode.SECRET_IN_NAME:
        return None
    # The taxonomy rates lateral movement high; the cloud metadata service hands out credentials.
    severity = Severity.CRITICAL if decision.code is EgressCode.CLOUD_METADATA else Severity.HIGH
    return Finding(
        threat=Threat.LATERAL_MOVEMENT,
        rule=f"egress.{decision.code}",
        signal=decision.reason,
        severity=severity,
        action=Action.BLOCK,
        where="egress",
        owasp="LLM08",
        enforced=enforced,
    )


def first_seen_finding(host: str) -> Finding:
    """The flag raised when an agent reaches a destination it has not reached within the window."""
    return Finding(
        threat=Threat.LATERAL_MOVEMENT,
        rule="egress.first_seen",
        signal=f"first connection to {canonical_host(host)}",
        severity=Severity.LOW,
        action=Action.FLAG,
        where="egress",
        owasp="LLM05",
    )
