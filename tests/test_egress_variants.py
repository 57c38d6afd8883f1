# ruff: noqa: RUF001, S104 - lookalike letters and the unspecified address are the point here
"""The spellings an agent tries to reach what its role does not allow, each against the pure decision:
internal and metadata addresses in every notation, lookalike and malformed names, wildcard edges, ports,
userinfo, and egressguard's own listeners."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.egress import EgressCode, EgressRules, IPAddress, decide, own_listeners, request_fronting

PUBLIC = ["93.184.216.34"]
ANY_PUBLIC = EgressRules(allow=["*", "api.openai.com", "*.example.com"])

LOOPBACK = [
    "localhost",
    "LOCALHOST.",
    "lOcAlHoSt",
    "localhost.localdomain",
    "foo.localhost",
    "ｌｏｃａｌｈｏｓｔ",
    "localhost\u200b",
    "loc\u00adalhost",
    "127.0.0.1",
    "127.1",
    "127.0.0.01",
    "127.000.000.001",
    "0177.0.0.1",
    "0x7f.1",
    "0x0000007f.1",
    "0x7f000001",
    "0X7F000001",
    "0x7f000001.",
    "2130706433",
    "2130706433.",
    "017700000001",
    "127.0.0.1.",
    "127。0。0。1",
    "１２７.0.0.1",
    " 127.0.0.1",
    "127.0.0.1\t",
    "[::1]",
    "::1",
    "0:0:0:0:0:0:0:1",
    "[0000::1]",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1%25lo]",
    "[::127.0.0.1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::ffff:0:7f00:1]",
    "0",
    "0.0.0.0",
    "0.0.0.0.",
    "[::]",
    "fe80::1%25eth0",
    "[fe80::1%eth0]",
]
METADATA = [
    "169.254.169.254",
    "0xa9fea9fe",
    "2852039166",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[::ffff:169.254.169.254%25x]",
    "[64:ff9b::a9fe:a9fe]",
    "[::a9fe:a9fe]",
    "[2002:a9fe:a9fe::]",
    "metadata.google.internal.",
    "METADATA.GOOGLE.INTERNAL",
    "metadata.google.internal\u3002",
    "metadata",
    "metadata.goog",
    "instance-data",
    "[fd00:ec2::254]",
    "100.100.100.200",
]
MALFORMED = [
    "localhost:80",
    "127.0.0.1:80",
    "evil.com@api.openai.com",
    "api.openai.com@evil.com",
    "127.0.0.1%00",
    "127.0.0.1\x00.evil.com",
    "127.0.0.1/",
    "localhost..",
    "api.openai.com..",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_in_any_spelling_is_refused_even_under_any_public_host(host: str) -> None:
    for resolved in ([], PUBLIC):
        decision = decide("a", "r", ANY_PUBLIC, host, 443, resolved)
        assert (decision.result, decision.code) == ("deny", EgressCode.INTERNAL_ADDRESS), host


@pytest.mark.parametrize("host", METADATA)
def test_cloud_metadata_in_any_spelling_is_refused(host: str) -> None:
    decision = decide("a", "r", ANY_PUBLIC, host, 80, [])
    assert (decision.result, decision.code) == ("deny", EgressCode.CLOUD_METADATA), host


@pytest.mark.parametrize("host", MALFORMED)
def test_names_carrying_ports_userinfo_or_nul_are_invalid(host: str) -> None:
    decision = decide("a", "r", ANY_PUBLIC, host, 443, PUBLIC)
    assert (decision.result, decision.code) == ("deny", EgressCode.INVALID_DESTINATION), host


@pytest.mark.parametrize(
    "resolved", [["127.0.0.1"], ["93.184.216.34", "10.0.0.5"], ["::ffff:169.254.169.254"], ["fd00::1"]]
)
def test_a_public_name_resolving_to_an_internal_address_is_refused(resolved: list[str]) -> None:
    """Neither ``*`` nor ``*.example.com`` opens an internal answer; only an entry naming the host does."""
    for host in ("127.0.0.1.nip.io", "www.openai.com", "x.example.com"):
        assert not decide("a", "r", ANY_PUBLIC, host, 443, resolved).allowed


@pytest.mark.parametrize(
    "host",
    ["evilexample.com", "example.com.evil.net", "example.com", "xexample.com", "example.co", "exаmple.com"],
)
def test_a_subdomain_pattern_covers_subdomains_alone(host: str) -> None:
    rules = EgressRules(allow=["*.example.com"])
    assert not decide("a", "r", rules, host, 443, PUBLIC).allowed


@pytest.mark.parametrize("host", ["a.example.com", "A.B.EXAMPLE.COM.", "ａ.example.com"])
def test_a_subdomain_pattern_covers_every_spelling_of_a_subdomain(host: str) -> None:
    assert decide("a", "r", EgressRules(allow=["*.example.com"]), host, 443, PUBLIC).allowed


@pytest.mark.parametrize(
    "host", ["аpi.openai.com", "api.openai.com.evil.net", "xn--pi-7ld.openai.com", "api-openai.com"]
)
def test_lookalike_names_are_not_the_allowed_host(host: str) -> None:
    assert not decide("a", "r", EgressRules(allow=["api.openai.com"]), host, 443, PUBLIC).allowed


def test_a_port_pattern_holds_its_host_to_that_port() -> None:
    rules = EgressRules(allow=["api.openai.com:443"])
    assert decide("a", "r", rules, "api.openai.com", 443, PUBLIC).allowed
    for port in (22, 80, 8443, 0, 65536):
        assert not decide("a", "r", rules, "api.openai.com", port, PUBLIC).allowed


@pytest.mark.parametrize(
    "host_header",
    [
        "evil.com",
        "api.openai.com@evil.com",
        "evil.com#@api.openai.com",
        "api.openai.com\\@evil.com",
        "api.openai.com evil.com",
        "api.openai.com,evil.com",
        "api.openai.com:443:80",
        "api.openai.com:8443",
        "api.openai.com\x00evil",
        "аpi.openai.com",
        "api%2eopenai.com",
        "api.openai.com:+443",
        "",
    ],
)
def test_a_host_header_naming_anything_but_the_destination_is_fronting(host_header: str) -> None:
    assert request_fronting(("api.openai.com", 443), "", [host_header]) is not None


@pytest.mark.parametrize(
    ("host", "resolved"),
    [
        ("127.0.0.1", []),
        ("127.1", []),
        ("2130706433", []),
        ("[::ffff:127.0.0.1]", []),
        ("[::1]", []),
        ("0.0.0.0", []),
        ("127.0.0.2", []),
        ("localhost", ["127.0.0.1"]),
        ("proxy.internal", ["10.1.2.3"]),
        ("10.1.2.3", []),
        ("[::ffff:10.1.2.3]", []),
        ("public.example", ["93.184.216.34", "10.1.2.3"]),
    ],
)
def test_the_own_listeners_are_refused_even_where_the_role_opens_their_host(
    host: str, resolved: list[str]
) -> None:
    rules = EgressRules(
        allow=["*", "localhost", "127.0.0.0/8", "::1", "10.0.0.0/8", "0.0.0.0", "proxy.internal"]
    )

    def local(address: IPAddress) -> bool:
        return address == ipaddress.ip_address("10.1.2.3")

    own = own_listeners({8080, 9090}, local)
    for port in (8080, 9090):
        decision = decide("a", "r", rules, host, port, resolved, own_listener=own)
        assert (decision.result, decision.code) == ("deny", EgressCode.OWN_LISTENER), (host, port)
    assert decide("a", "r", rules, host, 8081, resolved, own_listener=own).code is not EgressCode.OWN_LISTENER


def test_another_host_on_the_listener_port_is_not_the_listener() -> None:
    own = own_listeners({8080}, lambda address: False)
    decision = decide("a", "r", EgressRules(allow=["*:*"]), "api.example", 8080, PUBLIC, own_listener=own)
    assert decision.allowed


@pytest.mark.parametrize(
    ("written", "reached"),
    [
        ("straße.de", "xn--strae-oqa.de"),
        ("STRASSE.de", "strasse.de"),
        ("ςλ.gr", "xn--wxan.gr"),
        ("faß.example", "xn--fa-hia.example"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_a_unicode_entry_means_the_name_clients_resolve_for_it(written: str, reached: str) -> None:
    """Clients (browsers, curl, Go, Node) encode names per UTS 46 without transitional mapping, so
    ``straße.de`` is ``xn--strae-oqa.de``, a different domain from ``strasse.de``: an entry means that
    name, whether written in Unicode or punycode, and never the other."""
    for entry in (written, f"*.{written}"):
        host = reached if not entry.startswith("*.") else f"www.{reached}"
        denied = EgressRules(allow=["*"], deny=[entry])
        allowed = EgressRules(allow=[entry])
        assert not decide("a", "r", denied, host, 443, PUBLIC).allowed, (entry, host)
        assert decide("a", "r", allowed, host, 443, PUBLIC).allowed, (entry, host)
        unicode_host = written if not entry.startswith("*.") else f"www.{written}"
        assert decide("a", "r", allowed, unicode_host, 443, PUBLIC).allowed, (entry, unicode_host)
    if reached != "strasse.de":
        assert decide("a", "r", EgressRules(allow=["*"], deny=[written]), "strasse.de", 443, PUBLIC).allowed
