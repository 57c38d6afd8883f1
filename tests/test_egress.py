import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.egress import (
    DEFAULT_ROLE,
    WEB_PORTS,
    EgressCode,
    EgressRules,
    HostPattern,
    PatternKind,
    decide,
    egress_finding,
    first_seen,
    first_seen_finding,
    fronting_mismatch,
    internal_address_reason,
    internal_name_reason,
    parse_ip_literal,
    request_fronting,
    resolve,
    rules_for_role,
)
from proxy.model import Action, Severity, Threat
from proxy.state import SqliteStateStore

PUBLIC = "93.184.216.34"


@dataclass(frozen=True)
class Case:
    """One row of the decision table; unspecified fields are a public host on 443."""

    name: str
    allow: tuple[str, ...]
    host: str
    result: str
    code: EgressCode
    rule: str = ""
    deny: tuple[str, ...] = ()
    port: int = 443
    resolved: tuple[str, ...] = (PUBLIC,)


ALLOWED, DENIED, OPENED = EgressCode.ALLOWLISTED, EgressCode.NOT_ALLOWLISTED, EgressCode.INTERNAL_OPENED
DENYLISTED = EgressCode.DENYLISTED
INTERNAL, METADATA, INVALID = (
    EgressCode.INTERNAL_ADDRESS,
    EgressCode.CLOUD_METADATA,
    EgressCode.INVALID_DESTINATION,
)

# fmt: off
DECISIONS = [
    Case("exact host", ("api.openai.com",), "api.openai.com", "allow", ALLOWED, "api.openai.com"),
    Case("host case and trailing dot ignored", ("api.openai.com",), "API.OpenAI.com.", "allow", ALLOWED,
         "api.openai.com"),
    Case("pattern case ignored", ("API.OPENAI.COM",), "api.openai.com", "allow", ALLOWED, "API.OPENAI.COM"),
    Case("other host not allowed", ("api.openai.com",), "api.anthropic.com", "deny", DENIED),
    Case("empty allowlist denies", (), "api.openai.com", "deny", DENIED),
    Case("wildcard matches subdomain", ("*.openai.com",), "api.openai.com", "allow", ALLOWED, "*.openai.com"),
    Case("wildcard matches deep subdomain", ("*.openai.com",), "a.b.openai.com", "allow", ALLOWED,
         "*.openai.com"),
    Case("wildcard excludes apex", ("*.openai.com",), "openai.com", "deny", DENIED),
    Case("wildcard excludes lookalike suffix", ("*.openai.com",), "evilopenai.com", "deny", DENIED),
    Case("port pinned matches", ("api.openai.com:443",), "api.openai.com", "allow", ALLOWED,
         "api.openai.com:443"),
    Case("port pinned other port denied", ("api.openai.com:443",), "api.openai.com", "deny", DENIED,
         port=8443),
    Case("star with port", ("*:443",), "example.com", "allow", ALLOWED, "*:443"),
    Case("star with port other port denied", ("*:443",), "example.com", "deny", DENIED, port=22),
    Case("star allows public host", ("*",), "example.com", "allow", ALLOWED, "*"),
    Case("star allows public IP literal", ("*",), PUBLIC, "allow", ALLOWED, "*"),
    Case("deny wins over exact allow", ("api.openai.com",), "api.openai.com", "deny", DENYLISTED,
         "api.openai.com", deny=("api.openai.com",)),
    Case("deny wildcard wins over star", ("*",), "x.pastebin.com", "deny", DENYLISTED, "*.pastebin.com",
         deny=("*.pastebin.com",)),
    Case("deny CIDR catches a resolved address", ("*",), "example.com", "deny", DENYLISTED,
         "93.184.0.0/16", deny=("93.184.0.0/16",)),
    Case("deny CIDR catches any one resolved address", ("*",), "example.com", "deny", DENYLISTED,
         "93.184.0.0/16", deny=("93.184.0.0/16",), resolved=("8.8.8.8", PUBLIC)),
    Case("deny by port only", ("*",), "mail.example.com", "deny", DENYLISTED, "*:25", deny=("*:25",),
         port=25),
    Case("IP literal allowed", ("8.8.8.8",), "8.8.8.8", "allow", ALLOWED, "8.8.8.8", resolved=("8.8.8.8",)),
    Case("public CIDR allows literal", ("8.8.0.0/16",), "8.8.4.4", "allow", ALLOWED, "8.8.0.0/16",
         resolved=("8.8.4.4",)),
    Case("public CIDR allows name resolving inside", ("8.8.0.0/16",), "dns.google", "allow", ALLOWED,
         "8.8.0.0/16", resolved=("8.8.8.8", "8.8.4.4")),
    Case("allow CIDR needs every resolved address inside", ("8.8.0.0/16",), "dns.google", "deny", DENIED,
         resolved=("8.8.8.8", PUBLIC)),
    Case("star refuses loopback literal", ("*",), "127.0.0.1", "deny", INTERNAL, resolved=("127.0.0.1",)),
    Case("star refuses private literal", ("*",), "10.1.2.3", "deny", INTERNAL, resolved=("10.1.2.3",)),
    Case("wildcard does not open internal resolution", ("*.corp.example",), "db.corp.example", "deny",
         INTERNAL, resolved=("10.1.2.3",)),
    Case("public name resolving to loopback denied", ("*",), "rebind.example.com", "deny", INTERNAL,
         resolved=("127.0.0.1",)),
    Case("one internal among resolved denies", ("*",), "example.com", "deny", INTERNAL,
         resolved=(PUBLIC, "10.0.0.5")),
    Case("CIDR opens internal service literal", ("10.0.0.0/8",), "10.1.2.3", "allow", OPENED, "10.0.0.0/8",
         resolved=("10.1.2.3",)),
    Case("CIDR opens internal service name", ("10.0.0.0/8",), "db.corp.example", "allow", OPENED,
         "10.0.0.0/8", resolved=("10.1.2.3",)),
    Case("IPv6 CIDR opens unique-local", ("fd00::/8",), "svc.corp.example", "allow", OPENED, "fd00::/8",
         resolved=("fd12::7",)),
    Case("CIDR with port opens that port only", ("10.0.0.0/8:5432",), "10.1.2.3", "deny", INTERNAL, port=22,
         resolved=("10.1.2.3",)),
    Case("exact name opens its internal address", ("db.corp.example",), "db.corp.example", "allow", OPENED,
         "db.corp.example", resolved=("10.1.2.3",)),
    Case("deny wins over an internal opener", ("10.0.0.0/8",), "10.9.1.1", "deny", DENYLISTED,
         "10.9.0.0/16", deny=("10.9.0.0/16",), resolved=("10.9.1.1",)),
    Case("star refuses metadata address", ("*",), "169.254.169.254", "deny", METADATA, resolved=()),
    Case("star refuses metadata name", ("*",), "metadata.google.internal", "deny", METADATA, resolved=()),
    Case("naming a host does not open a metadata answer", ("api.partner.example",), "api.partner.example",
         "deny", METADATA, resolved=("169.254.169.254",)),
    Case("metadata opened by its address", ("169.254.169.254",), "169.254.169.254", "allow", OPENED,
         "169.254.169.254", resolved=("169.254.169.254",)),
    Case("metadata name opened by naming it", ("metadata.google.internal",), "metadata.google.internal",
         "allow", OPENED, "metadata.google.internal", resolved=("169.254.169.254",)),
    Case("NAT64 form of metadata is metadata", ("api.partner.example",), "api.partner.example", "deny",
         METADATA, resolved=("64:ff9b::a9fe:a9fe",)),
    Case("mapped IPv6 literal opened by IPv4 CIDR", ("10.0.0.0/8",), "::ffff:10.1.2.3", "allow", OPENED,
         "10.0.0.0/8", resolved=("::ffff:10.1.2.3",)),
    Case("localhost name refused under star", ("*",), "localhost", "deny", INTERNAL, resolved=("127.0.0.1",)),
    Case("invalid host", ("*",), "exa mple.com", "deny", INVALID, resolved=()),
    Case("invalid port", ("*",), "example.com", "deny", INVALID, port=0),
    Case("unparseable resolved address", ("*",), "example.com", "deny", INVALID, resolved=("not-an-ip",)),
]
# fmt: on


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in DECISIONS])
def test_decide_table(case: Case) -> None:
    """Each named case yields the expected result, rule and code."""
    decision = decide(
        "agent-1", "worker", EgressRules(case.allow, case.deny), case.host, case.port, case.resolved
    )
    assert (decision.result, decision.rule, decision.code) == (case.result, case.rule, case.code)
    assert decision.allowed is (case.result == "allow")


def test_decision_names_agent_role_host_and_port() -> None:
    """The decision carries who asked, as which role, for which canonical destination."""
    decision = decide("agent-1", "worker", EgressRules(["*"]), "Example.COM.", 443, [PUBLIC])
    assert (decision.agent, decision.role, decision.host, decision.port) == (
        "agent-1",
        "worker",
        "example.com",
        443,
    )


def test_internal_deny_reason_explains_resolution() -> None:
    """A name refused for its resolved address says which address and why."""
    decision = decide("a", "r", EgressRules(["*"]), "rebind.example.com", 443, ["127.0.0.1"])
    assert decision.reason.startswith("rebind.example.com resolves to 127.0.0.1, a loopback address")


def test_not_allowlisted_reason_names_the_role() -> None:
    """The not-allowlisted reason names the role whose allowlist was used."""
    decision = decide("a", "support", EgressRules([]), "example.com", 443, [PUBLIC])
    assert decision.reason == "example.com is not in the allowlist of role 'support'"


def test_default_role_applies_when_role_unknown() -> None:
    """An unknown or missing role falls back to the default role's rules."""
    by_role = {DEFAULT_ROLE: EgressRules(["api.openai.com"]), "admin": EgressRules(["*"])}
    role, rules = rules_for_role(by_role, "intern")
    assert role == DEFAULT_ROLE
    decision = decide("a", role, rules, "api.openai.com", 443, [PUBLIC])
    assert (decision.result, decision.role) == ("allow", DEFAULT_ROLE)
    assert rules_for_role(by_role, None)[0] == DEFAULT_ROLE


def test_known_role_uses_its_own_rules() -> None:
    """A known role gets its own rules, not the default's."""
    admin_rules = EgressRules(["*"])
    assert rules_for_role({DEFAULT_ROLE: EgressRules([]), "admin": admin_rules}, "admin") == (
        "admin",
        admin_rules,
    )


def test_no_default_role_denies_everything() -> None:
    """Without a default role an unknown role gets deny-all rules."""
    role, rules = rules_for_role({}, "intern")
    assert decide("a", role, rules, "example.com", 443, [PUBLIC]).code is EgressCode.NOT_ALLOWLISTED


# --- patterns --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "ports"),
    [
        pytest.param("api.openai.com", PatternKind.HOST, WEB_PORTS, id="host"),
        pytest.param("*.openai.com", PatternKind.SUBDOMAIN, WEB_PORTS, id="subdomain"),
        pytest.param("api.openai.com:443", PatternKind.HOST, frozenset({443}), id="host-port"),
        pytest.param("*", PatternKind.ANY_PUBLIC, WEB_PORTS, id="star"),
        pytest.param("*:443", PatternKind.ANY_PUBLIC, frozenset({443}), id="star-port"),
        pytest.param("10.0.0.0/8", PatternKind.NETWORK, WEB_PORTS, id="cidr4"),
        pytest.param("10.0.0.0/8:5432", PatternKind.NETWORK, frozenset({5432}), id="cidr4-port"),
        pytest.param("fd00::/8", PatternKind.NETWORK, WEB_PORTS, id="cidr6"),
        pytest.param("[fd00::/8]:443", PatternKind.NETWORK, frozenset({443}), id="cidr6-port"),
        pytest.param("2001:db8::1", PatternKind.NETWORK, WEB_PORTS, id="ipv6"),
        pytest.param("[2001:db8::1]:8443", PatternKind.NETWORK, frozenset({8443}), id="ipv6-port"),
        pytest.param("203.0.113.5", PatternKind.NETWORK, WEB_PORTS, id="ipv4"),
        pytest.param("bücher.example", PatternKind.HOST, WEB_PORTS, id="idn"),
        pytest.param("localhost:*", PatternKind.HOST, None, id="host-every-port"),
        pytest.param("*:*", PatternKind.ANY_PUBLIC, None, id="star-every-port"),
        pytest.param("[fd00::/8]:*", PatternKind.NETWORK, None, id="cidr6-every-port"),
        pytest.param("10.0.0.0/8:*", PatternKind.NETWORK, None, id="cidr4-every-port"),
    ],
)
def test_pattern_parses(text: str, kind: PatternKind, ports: frozenset[int] | None) -> None:
    """Every documented pattern form compiles to the expected kind and ports (None: every port); an allow
    entry without a port covers the web ports only."""
    pattern = HostPattern.parse(text)
    assert (pattern.kind, pattern.port, pattern.text) == (kind, ports, text)


def test_idn_pattern_matches_punycode_host() -> None:
    """A Unicode pattern and its punycode host are the same host."""
    assert decide("a", "r", EgressRules(["bücher.example"]), "xn--bcher-kva.example", 443, [PUBLIC]).allowed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "empty pattern", id="empty"),
        pytest.param("   ", "empty pattern", id="blank"),
        pytest.param("api.openai.com:0", "port must be", id="port-zero"),
        pytest.param("api.openai.com:70000", "port must be", id="port-too-big"),
        pytest.param("api.openai.com:https", "port must be", id="port-name"),
        pytest.param("*.", "'*.' must be followed", id="bare-star-dot"),
        pytest.param("*.*.com", "'*.' must be followed", id="double-star"),
        pytest.param("api*.openai.com", "wildcard is only allowed", id="inner-star"),
        pytest.param("10.0.0.1/8", "bad network", id="host-bits"),
        pytest.param("10.0.0.0/33", "bad network", id="prefix-too-long"),
        pytest.param("exa mple.com", "not a host name", id="space"),
        pytest.param("https://api.openai.com", "", id="url"),
        pytest.param("[::1", "unclosed", id="unclosed-bracket"),
        pytest.param("[::1]443", "after ']'", id="bracket-garbage"),
    ],
)
def test_invalid_pattern_raises_with_message(text: str, message: str) -> None:
    """An invalid entry raises ValueError quoting the entry and saying what is wrong."""
    with pytest.raises(ValueError, match="invalid egress pattern") as raised:
        EgressRules([text])
    assert repr(text) in str(raised.value)
    assert message in str(raised.value)


def test_invalid_deny_pattern_raises() -> None:
    """Deny entries are validated like allow entries."""
    with pytest.raises(ValueError, match="invalid egress pattern"):
        EgressRules(["*"], ["bad host"])


# --- IP spellings and internal addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        pytest.param("127.0.0.1", "127.0.0.1", id="dotted"),
        pytest.param("2130706433", "127.0.0.1", id="decimal"),
        pytest.param("0x7f000001", "127.0.0.1", id="hex"),
        pytest.param("0X7F000001", "127.0.0.1", id="hex-upper"),
        pytest.param("0177.0.0.1", "127.0.0.1", id="octal"),
        pytest.param("0177.0000.0000.0001", "127.0.0.1", id="octal-padded"),
        pytest.param("127.1", "127.0.0.1", id="short-two-parts"),
        pytest.param("127.0.1", "127.0.0.1", id="short-three-parts"),
        pytest.param("10.1", "10.0.0.1", id="short-private"),
        pytest.param("0x7f.1", "127.0.0.1", id="mixed-hex-short"),
        pytest.param("0x7f.0.0.01", "127.0.0.1", id="mixed-hex-octal"),
        pytest.param("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", id="hex-octets"),
        pytest.param("0251.0376.0251.0376", "169.254.169.254", id="octal-octets"),
        pytest.param("2852039166", "169.254.169.254", id="decimal-metadata"),
        pytest.param("169.254.43518", "169.254.169.254", id="short-metadata"),
        pytest.param("0", "0.0.0.0", id="zero"),  # noqa: S104 -- an address under test, not a bind address,
        pytest.param("127.0.0.1.", "127.0.0.1", id="trailing-dot"),
        pytest.param("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11", "127.0.0.1", id="fullwidth"),
        pytest.param("127。0。0。1", "127.0.0.1", id="ideographic-dots"),
        pytest.param("::1", "::1", id="ipv6-loopback"),
        pytest.param("[::1]", "::1", id="ipv6-bracketed"),
        pytest.param("::ffff:127.0.0.1", "::ffff:7f00:1", id="ipv4-mapped-dotted"),
        pytest.param("::FFFF:7F00:1", "::ffff:7f00:1", id="ipv4-mapped-hex"),
        pytest.param("fe80::1%eth0", "fe80::1", id="ipv6-zone"),
    ],
)
def test_parse_ip_literal_spellings(spelling: str, address: str) -> None:
    """Every spelling of an address parses to that address."""
    assert parse_ip_literal(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("example.com", id="name"),
        pytest.param("1.2.3.4.5", id="five-parts"),
        pytest.param("256.0.0.1", id="octet-too-big"),
        pytest.param("127.16777216", id="short-part-too-big"),
        pytest.param("4294967296", id="decimal-too-big"),
        pytest.param("08.0.0.1", id="bad-octal-digit"),
        pytest.param("1..1", id="empty-part"),
        pytest.param("0x7f.example", id="hex-then-name"),
        pytest.param("::ffff:0177.0.0.1", id="ipv6-octal-tail"),
        pytest.param("", id="empty"),
        pytest.param("١٢٧.0.0.1", id="arabic-indic-digits"),
    ],
)
def test_parse_ip_literal_rejects_non_addresses(text: str) -> None:
    """Names and malformed numbers are not addresses."""
    assert parse_ip_literal(text) is None


@pytest.mark.parametrize(
    "spelling",
    [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "10.1",
        "0x7f.1",
        "0xa.0.0.1",
        "012.1",
        "0xc0a80001",
        "3232235521",
        "192.168.1",
        "0xa9fea9fe",
        "0",
        "0.0.0.0",  # noqa: S104 -- an address under test, not a bind address
        "::",
        "[::1]",
        "::ffff:127.0.0.1",
        "::ffff:a00:1",
        "::127.0.0.1",
        "::ffff:0:7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "224.0.0.1",
        "239.255.255.250",
        "100.64.0.1",
        "100.127.255.254",
        "172.16.0.1",
        "172.31.255.255",
        "169.254.1.1",
        "255.255.255.255",
    ],
)
def test_star_refuses_every_internal_spelling(spelling: str) -> None:
    """``*`` never reaches an internal address, whichever way it is spelled."""
    decision = decide("a", "r", EgressRules(["*"]), spelling, 80, [])
    assert decision.result == "deny"
    assert decision.code in (EgressCode.INTERNAL_ADDRESS, EgressCode.CLOUD_METADATA)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        pytest.param("127.0.0.1", "loopback address", id="loopback"),
        pytest.param("10.0.0.1", "private address (RFC 1918)", id="rfc1918-10"),
        pytest.param("172.20.0.1", "private address (RFC 1918)", id="rfc1918-172"),
        pytest.param("192.168.0.1", "private address (RFC 1918)", id="rfc1918-192"),
        pytest.param("169.254.1.1", "link-local address", id="link-local"),
        pytest.param("100.64.0.1", "shared address space (CGNAT)", id="cgnat"),
        pytest.param("0.1.2.3", "this-network address", id="this-network"),
        pytest.param("224.0.0.251", "multicast address", id="multicast4"),
        pytest.param("::", "unspecified address", id="unspecified6"),
        pytest.param("::1", "loopback address", id="loopback6"),
        pytest.param("fe80::1", "link-local address", id="link-local6"),
        pytest.param("fd00::1", "unique-local address", id="ula"),
        pytest.param("ff05::2", "multicast address", id="multicast6"),
        pytest.param("::ffff:10.0.0.1", "private address (RFC 1918) (IPv4-mapped IPv6 form)", id="mapped"),
        pytest.param("::10.0.0.1", "private address (RFC 1918) (IPv4-compatible IPv6 form)", id="compatible"),
        pytest.param("64:ff9b::7f00:1", "loopback address (NAT64 IPv6 form)", id="nat64"),
        pytest.param("2002:c0a8:1::", "private address (RFC 1918) (6to4 IPv6 form)", id="6to4"),
        pytest.param("169.254.169.254", "cloud metadata address", id="metadata-aws"),
        pytest.param("100.100.100.200", "cloud metadata address", id="metadata-alibaba"),
        pytest.param("fd00:ec2::254", "cloud metadata address", id="metadata-aws6"),
        pytest.param(
            "::ffff:169.254.169.254", "cloud metadata address (IPv4-mapped IPv6 form)", id="metadata-mapped"
        ),
    ],
)
def test_internal_address_reason(address: str, reason: str) -> None:
    """Each internal range is recognised with its own reason."""
    assert internal_address_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", PUBLIC, "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::", "100.128.0.1"]
)
def test_public_addresses_are_not_internal(address: str) -> None:
    """Public addresses, including IPv6 forms of public IPv4, pass the guard."""
    assert internal_address_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "name",
    [
        "metadata.google.internal",
        "METADATA.GOOGLE.INTERNAL.",
        "metadata",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    ],
)
def test_metadata_names_refused_under_star(name: str) -> None:
    """Cloud metadata host names are refused even before resolution."""
    decision = decide("a", "r", EgressRules(["*"]), name, 80, [])
    assert (decision.result, decision.code) == ("deny", EgressCode.CLOUD_METADATA)


@pytest.mark.parametrize("name", ["localhost", "LocalHost.", "app.localhost", "ip6-localhost"])
def test_loopback_names_are_internal(name: str) -> None:
    """Loopback host names are internal by name alone."""
    assert internal_name_reason(name) == "loopback host name"


def test_ordinary_name_is_not_internal_by_name() -> None:
    """A public-looking name is judged by its addresses, not its name."""
    assert internal_name_reason("api.openai.com") is None


# --- resolve ---------------------------------------------------------------------------------------------


def fake_getaddrinfo(answers: dict[str, list[str]]) -> Any:
    def lookup(host: str, port: int, family: int, kind: int) -> list[tuple[Any, ...]]:
        assert kind == socket.SOCK_STREAM
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, kind, 6, "", (ip, port))
            for ip in answers[host]
        ]

    return lookup


def test_resolve_returns_unique_addresses_in_order() -> None:
    """Resolution keeps the resolver's order and drops repeats."""
    lookup = fake_getaddrinfo({"example.com": [PUBLIC, "2606:2800::1", PUBLIC]})
    assert resolve("Example.com.", 443, getaddrinfo=lookup) == [PUBLIC, "2606:2800::1"]


def test_resolve_literal_skips_lookup() -> None:
    """An IP literal in any spelling resolves to its canonical form without a lookup."""
    assert resolve("0x7f000001", 80, getaddrinfo=fake_getaddrinfo({})) == ["127.0.0.1"]
    assert resolve("[::1]", 80, getaddrinfo=fake_getaddrinfo({})) == ["::1"]


def test_resolve_failure_raises_oserror() -> None:
    """An unknown name raises the resolver's error for the caller to report."""
    with pytest.raises(OSError):
        resolve("nowhere.invalid", 443, getaddrinfo=fake_getaddrinfo({}))


def test_resolve_then_decide_refuses_rebinding_name() -> None:
    """A public name whose DNS answer is loopback is refused on the resolved address."""
    addresses = resolve(
        "rebind.example.com", 443, getaddrinfo=fake_getaddrinfo({"rebind.example.com": ["127.0.0.1"]})
    )
    decision = decide("a", "r", EgressRules(["*"]), "rebind.example.com", 443, addresses)
    assert (decision.result, decision.code) == ("deny", EgressCode.INTERNAL_ADDRESS)


# --- fronting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connect", "sni", "host_header"),
    [
        pytest.param("api.openai.com", "api.openai.com", "api.openai.com", id="all-equal"),
        pytest.param("api.openai.com", "API.openai.com.", "api.openai.com:443", id="case-dot-port"),
        pytest.param("api.openai.com", None, "api.openai.com", id="no-sni"),
        pytest.param("api.openai.com", "api.openai.com", None, id="no-host-header"),
        pytest.param("127.0.0.1", None, "2130706433:8080", id="same-ip-other-spelling"),
        pytest.param("::1", None, "[::1]:8443", id="ipv6-bracketed-header"),
        pytest.param(None, None, "example.com", id="nothing-to-compare"),
    ],
)
def test_fronting_consistent(connect: str | None, sni: str | None, host_header: str | None) -> None:
    """Matching CONNECT host, SNI and Host header are not fronting."""
    assert fronting_mismatch(connect, sni, host_header) is None


@pytest.mark.parametrize(
    ("connect", "sni", "host_header", "reason"),
    [
        pytest.param(
            "allowed.example",
            "blocked.example",
            None,
            "TLS SNI 'blocked.example' differs from CONNECT",
            id="sni-vs-connect",
        ),
        pytest.param(
            "cdn.example",
            "cdn.example",
            "hidden.example",
            "Host header 'hidden.example' differs from TLS",
            id="host-vs-sni",
        ),
        pytest.param(
            "cdn.example",
            None,
            "hidden.example:443",
            "Host header 'hidden.example' differs from CONNECT",
            id="host-vs-connect",
        ),
    ],
)
def test_fronting_mismatch_reported(
    connect: str, sni: str | None, host_header: str | None, reason: str
) -> None:
    """A disagreement names the two values that differ."""
    mismatch = fronting_mismatch(connect, sni, host_header)
    assert mismatch is not None
    assert mismatch.startswith(reason)


DESTINATION = ("api.example.com", 443)


@pytest.mark.parametrize(
    ("authority", "hosts", "forwarded_hosts", "forwarded"),
    [
        pytest.param("", ["api.example.com"], [], [], id="host"),
        pytest.param("", ["API.Example.com.:443"], [], [], id="case-dot-port"),
        pytest.param("", [], [], [], id="no-host-http1.0"),
        pytest.param("api.example.com:443", [], [], [], id="authority"),
        pytest.param("api.example.com", ["api.example.com"], [], [], id="authority-and-host"),
        pytest.param("", ["api.example.com"], ["api.example.com, api.example.com:443"], [], id="xfh-same"),
        pytest.param("", ["api.example.com"], [], ["for=10.0.0.1;proto=https"], id="forwarded-without-host"),
        pytest.param(
            "", ["api.example.com"], [], ['for=1.2.3.4;host="api.example.com"'], id="forwarded-same"
        ),
    ],
)
def test_request_naming_its_destination_is_not_fronting(
    authority: str, hosts: list[str], forwarded_hosts: list[str], forwarded: list[str]
) -> None:
    """Every name a request carries agrees with where it is sent."""
    assert (
        request_fronting(DESTINATION, authority, hosts, x_forwarded_host=forwarded_hosts, forwarded=forwarded)
        is None
    )


def test_addresses_compare_by_value() -> None:
    """An IP destination matches any spelling of its address, bracketed IPv6 included."""
    assert request_fronting(("127.0.0.1", 80), "", ["2130706433:80"]) is None
    assert request_fronting(("::1", 443), "[::1]:443", ["[0:0::1]"]) is None


@pytest.mark.parametrize(
    ("authority", "hosts", "forwarded_hosts", "forwarded", "reason"),
    [
        pytest.param("", ["api.example.com", "evil.example"], [], [], "2 Host headers", id="two-hosts"),
        pytest.param("", ["api.example.com"] * 2, [], [], "2 Host headers", id="same-host-twice"),
        pytest.param(
            "evil.example", ["api.example.com"], [], [], "request target 'evil.example'", id="target"
        ),
        pytest.param("api.example.com:8443", [], [], [], "request target port 8443", id="target-port"),
        pytest.param("", ["evil.example"], [], [], "Host header 'evil.example' differs", id="host"),
        pytest.param("", ["api.example.com:80"], [], [], "Host header port 80", id="host-port"),
        pytest.param("", ["user@api.example.com"], [], [], "malformed Host header", id="userinfo"),
        pytest.param("", ["api.example.com\r\n evil"], [], [], "malformed Host header", id="folded"),
        pytest.param("", ["api.example.com evil"], [], [], "malformed Host header", id="space"),
        pytest.param("", ["api.example.com,evil"], [], [], "malformed Host header", id="list"),
        pytest.param("", ["::1"], [], [], "malformed Host header", id="unbracketed-ipv6"),
        pytest.param("", ["[evil.example]"], [], [], "malformed Host header", id="bracketed-name"),
        pytest.param("", ["api.example.com:99999"], [], [], "Host header port 99999", id="port-out-of-range"),
        pytest.param("", [""], [], [], "malformed Host header ''", id="empty"),
        pytest.param("", ["[::1]"], [], [], "Host header '::1' differs", id="ipv6"),
        pytest.param("", ["api.example.com"], ["evil.example"], [], "X-Forwarded-Host", id="xfh"),
        pytest.param(
            "", ["api.example.com"], ["api.example.com, evil"], [], "X-Forwarded-Host", id="xfh-list"
        ),
        pytest.param("", ["api.example.com"], [], ["host=evil.example"], "Forwarded host", id="forwarded"),
        pytest.param(
            "", ["api.example.com"], [], ['for=a;host="evil.example:443"'], "Forwarded host", id="quoted"
        ),
    ],
)
def test_request_naming_another_destination_is_fronting(
    authority: str, hosts: list[str], forwarded_hosts: list[str], forwarded: list[str], reason: str
) -> None:
    """Any name that differs, is repeated or is not a well-formed authority is fronting, said plainly."""
    found = request_fronting(
        DESTINATION, authority, hosts, x_forwarded_host=forwarded_hosts, forwarded=forwarded
    )
    assert found is not None and found.startswith(reason)


def test_fronting_reason_shows_a_long_value_shortened() -> None:
    """An attacker's Host header cannot fill the audit record."""
    found = request_fronting(DESTINATION, "", ["x" * 5000])
    assert found is not None and len(found) < 200


def test_a_kept_fronting_verdict_is_that_of_its_own_destination_and_names() -> None:
    """Asked again, the verdict is that of the same destination and the same names: another port or
    host, another header list or server name, or a long spelling past what is kept each get their own."""
    for _ in range(2):
        assert request_fronting(("api.openai.com", 443), "", ["api.openai.com"]) is None
        assert request_fronting(("api.openai.com", 443), "", ["API.openai.com.:443"]) is None
        assert request_fronting(("api.openai.com", 8443), "", ["api.openai.com:443"]) is not None
        assert request_fronting(("evil.example", 443), "", ["api.openai.com"]) is not None
        assert request_fronting(("api.openai.com", 443), "", ["api.openai.com"] * 2) is not None
        assert request_fronting(
            ("api.openai.com", 443), "", ["api.openai.com"], x_forwarded_host=["a.example"]
        )
        assert (
            request_fronting(("a.example", 443), "", ["a.example"], forwarded=["host=" + "b" * 600])
            is not None
        )
        assert fronting_mismatch("api.openai.com:443", "api.openai.com", None) is None
        assert fronting_mismatch("api.openai.com:443", "evil.example", None) is not None
        assert fronting_mismatch("evil.example:443", "api.openai.com", None) is not None
        assert fronting_mismatch("api.openai.com", "API.openai.com.", "api.openai.com") is None
        assert fronting_mismatch("a.example", "a.example", "b" * 600 + ".example") is not None


# --- first seen and findings -----------------------------------------------------------------------------


def test_first_seen_once_per_agent_and_host_within_window() -> None:
    """A destination is first-seen once per agent until the window passes."""
    now = [1_000_000.0]
    store = SqliteStateStore(None, clock=lambda: now[0])
    assert first_seen(store, "agent-1", "api.openai.com", window_s=100)
    assert not first_seen(store, "agent-1", "API.OpenAI.com.", window_s=100)
    assert first_seen(store, "agent-2", "api.openai.com", window_s=100)
    now[0] += 101
    assert first_seen(store, "agent-1", "api.openai.com", window_s=100)
    store.close()


def test_denied_decision_becomes_lateral_movement_finding() -> None:
    """A metadata denial is a critical lateral-movement block finding without raw values beyond the host."""
    decision = decide("a", "r", EgressRules(["*"]), "169.254.169.254", 80, [])
    finding = egress_finding(decision, enforced=True)
    assert finding is not None
    assert (finding.threat, finding.rule, finding.severity, finding.action, finding.enforced) == (
        Threat.LATERAL_MOVEMENT,
        "egress.cloud_metadata",
        Severity.CRITICAL,
        Action.BLOCK,
        True,
    )


def test_allowed_decision_has_no_finding() -> None:
    """An allowed destination yields no finding."""
    assert (
        egress_finding(decide("a", "r", EgressRules(["*"]), "example.com", 443, [PUBLIC]), enforced=True)
        is None
    )


def test_first_seen_finding_is_a_low_flag() -> None:
    """The first-seen finding flags, it never blocks."""
    finding = first_seen_finding("API.example.com")
    assert (finding.rule, finding.action, finding.severity) == (
        "egress.first_seen",
        Action.FLAG,
        Severity.LOW,
    )
    assert finding.signal == "first connection to api.example.com"


@pytest.mark.parametrize(
    ("allow", "deny", "port", "allowed"),
    [
        pytest.param(["api.openai.com"], [], 443, True, id="bare-443"),
        pytest.param(["api.openai.com"], [], 80, True, id="bare-80"),
        pytest.param(["api.openai.com"], [], 22, False, id="bare-ssh"),
        pytest.param(["api.openai.com"], [], 6379, False, id="bare-redis"),
        pytest.param(["api.openai.com"], [], 8443, False, id="bare-8443"),
        pytest.param(["*.openai.com"], [], 5432, False, id="subdomain-postgres"),
        pytest.param(["*"], [], 25, False, id="star-smtp"),
        pytest.param(["93.184.216.0/24"], [], 3306, False, id="cidr-mysql"),
        pytest.param(["api.openai.com:22"], [], 22, True, id="named-port"),
        pytest.param(["api.openai.com:22"], [], 443, False, id="named-port-only"),
        pytest.param(["api.openai.com:*"], [], 6379, True, id="every-port"),
        pytest.param(["*:*"], [], 6379, True, id="star-every-port"),
        pytest.param(["*:*"], ["api.openai.com"], 6379, False, id="bare-deny-every-port"),
        pytest.param(["*:*"], ["api.openai.com:443"], 6379, True, id="ported-deny-its-port-only"),
    ],
)
def test_an_allow_entry_without_a_port_covers_the_web_ports(
    allow: list[str], deny: list[str], port: int, allowed: bool
) -> None:
    """An allow entry without a port opens 443 and 80, never a database, SSH or mail port of the same host;
    ``host:port`` and ``host:*`` open others; a deny entry without a port closes every port."""
    decision = decide("a", "r", EgressRules(allow=allow, deny=deny), "api.openai.com", port, [PUBLIC])
    assert decision.allowed is allowed


@pytest.mark.parametrize(
    ("allow", "host", "resolved"),
    [
        (["api.openai.com"], "api.openai.com", [PUBLIC]),
        (["localhost"], "localhost", ["127.0.0.1"]),
        (["127.0.0.0/8"], "127.0.0.1", []),
    ],
)
def test_a_refusal_for_the_port_alone_says_how_to_open_it(
    allow: list[str], host: str, resolved: list[str]
) -> None:
    """Where only the port kept an allowed host out, the reason names the port and the entry that opens it."""
    decision = decide("a", "r", EgressRules(allow=allow), host, 6379, resolved)
    assert not decision.allowed
    assert f"port 6379 of {host}" in decision.reason and f"{host}:6379" in decision.reason


@pytest.mark.parametrize("text", ["api.openai.com:**", "api.openai.com:", "[::1]:*x", "*:0"])
def test_bad_ports_are_refused(text: str) -> None:
    """A port that is neither a number from 1 to 65535 nor ``*`` is an error naming the entry."""
    with pytest.raises(ValueError, match="invalid egress pattern"):
        HostPattern.parse(text)
