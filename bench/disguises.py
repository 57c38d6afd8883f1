"""Dev corpora for secret detection: every rule's match examples encoded and disguised, and hard negatives.

``disguised_corpus`` writes each secrets-pack match example in every way a model can be led to hide it:
the whole example base64-, base64url- or hex-encoded (no credential name left in sight), and the secret
value inside it percent-encoded, as JSON ``\\u`` escapes, as HTML entities (decimal, hex, named),
letter-spaced, split by zero-width characters, with a look-alike first letter, in full-width forms, and
combinations of these. ``hard_negatives`` generates what agents read every day and must stay clean:
git SHAs, digests, SRI strings, base64 images, UUIDs, minified JS, percent-encoded URLs, HTML, JSON
with ``\\u`` escapes of other languages, letter-spaced headings, prose in other scripts.

Used by ``bench/scan.py`` (recall and false positives next to MB/s) and ``tests/test_unmask.py``.
"""

# Look-alike letters are the point of this file.
# ruff: noqa: RUF001

from __future__ import annotations

import base64
import hashlib
import html.entities
import json
import random
import string
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from proxy.scanning.normalize import LOOKALIKES
from proxy.scanning.rulepack import Rule, RulePack

# Latin letter -> a look-alike from another script (the first one the table lists).
_TWIN: dict[str, str] = {}
for _lookalike, _latin in LOOKALIKES.items():
    if len(_lookalike) == 1 and ord(_lookalike) >= 0x370:
        _TWIN.setdefault(_latin, _lookalike)
_NAMED_ENTITY = {
    text: name
    for name, text in sorted(html.entities.html5.items(), key=lambda item: -len(item[0]))
    if name.endswith(";") and len(text) == 1 and text.isascii() and not text.isalnum()
}


def _percent(value: str) -> str:
    return "".join(f"%{byte:02X}" for byte in value.encode())


def _json_u(value: str) -> str:
    return "".join(f"\\u{ord(char):04x}" for char in value)


def _entities_decimal(value: str) -> str:
    return "".join(f"&#{ord(char)};" for char in value)


def _entities_hex(value: str) -> str:
    return "".join(f"&#x{ord(char):x};" for char in value)


def _entities_named(value: str) -> str:
    """Named entities where HTML has one (punctuation), decimal ones for the rest."""
    return "".join(
        f"&{_NAMED_ENTITY[char]}" if char in _NAMED_ENTITY else f"&#{ord(char)};" for char in value
    )


def _spaced(value: str) -> str:
    return " ".join(value)


def _zero_width(value: str) -> str:
    return "\u200b".join(value[index : index + 3] for index in range(0, len(value), 3))


def _homoglyph(value: str) -> str:
    for index, char in enumerate(value):
        if char in _TWIN:
            return value[:index] + _TWIN[char] + value[index + 1 :]
    return value


def _full_width(value: str) -> str:
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in value)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _hex(text: str) -> str:
    return text.encode().hex()


# Around an example wrapped as MIME base64, so that its value may fall across a line break.
_FILLER = "Forwarded from the build log of the release pipeline, kept for the audit. "

Encoder = Callable[[str, str], str]
"""(example, value) -> the disguised text standing in for the example."""


def _whole(encode: Callable[[str], str]) -> Encoder:
    return lambda example, value: encode(example)


def _value(encode: Callable[[str], str]) -> Encoder:
    return lambda example, value: example.replace(value, encode(value), 1)


ENCODERS: dict[str, Encoder] = {
    "base64": _whole(_b64),
    "base64url": _whole(_b64url),
    "hex": _whole(_hex),
    "percent": _value(_percent),
    "json-u": _value(_json_u),
    "html-decimal": _value(_entities_decimal),
    "html-hex": _value(_entities_hex),
    "html-named": _value(_entities_named),
    "letter-spaced": _value(_spaced),
    "zero-width": _value(_zero_width),
    "homoglyph": _value(_homoglyph),
    "full-width": _value(_full_width),
    "base64(zero-width)": lambda example, value: _b64(example.replace(value, _zero_width(value), 1)),
    "percent(base64)": lambda example, value: urllib.parse.quote(_b64(example), safe=""),
    "homoglyph+zero-width": _value(lambda value: _zero_width(_homoglyph(value))),
    "hex(homoglyph)": lambda example, value: _hex(example.replace(value, _homoglyph(value), 1)),
    "base64-mime": _whole(lambda text: base64.encodebytes(f"{_FILLER}{text}\n{_FILLER}".encode()).decode()),
    "hex-colon": _whole(lambda text: ":".join(f"{byte:02x}" for byte in text.encode())),
    "tab-spaced": _value(lambda value: "\t".join(value)),
    "nbsp-spaced": _value(lambda value: "\u00a0".join(value)),
    "base64(hex(percent))": lambda example, value: _b64(_hex(example.replace(value, _percent(value), 1))),
}


_SPACINGS = {"letter-spaced", "tab-spaced", "nbsp-spaced"}


@dataclass(frozen=True)
class Disguised:
    rule: str
    encoding: str
    text: str
    start: int  # the span of the text that carries the secret
    end: int


def _value_of(rule: Rule, example: str) -> str | None:
    hit = rule.pattern.search(example)
    if hit is None:
        return None
    value = hit.group(rule.secret_group)
    return value or None


def disguised_corpus(packs: list[RulePack], seed: int = 7) -> list[Disguised]:
    """Every encoder applied to every match example of the packs, in a short sentence."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    lead = ["here it is: ", "use ", "the value is ", "", "config -> ", "ok, "]
    tail = [" thanks", "", " (do not share)", ".", "\n"]
    items: list[Disguised] = []
    for pack in packs:
        for rule in pack.rules:
            for example in rule.match_examples:
                value = _value_of(rule, example)
                if value is None:
                    continue
                for name, encode in ENCODERS.items():
                    # Spacing out a value that holds white space itself (a PEM block) says nothing.
                    if name in _SPACINGS and any(char.isspace() for char in value):
                        continue
                    disguised = encode(example, value)
                    if disguised == example:
                        continue
                    before = rng.choice(lead)
                    text = before + disguised + rng.choice(tail)
                    start, end = _carrier(disguised, example, value, encode)
                    items.append(Disguised(rule.id, name, text, len(before) + start, len(before) + end))
    return items


def _carrier(disguised: str, example: str, value: str, encode: Encoder) -> tuple[int, int]:
    """Where in ``disguised`` the secret is carried: the encoded value, or the whole encoded example."""
    if not disguised.startswith(example[: example.find(value)]) or example.find(value) < 0:
        return 0, len(disguised)
    start = example.find(value)
    changed = len(disguised) - len(example) + len(value)
    if disguised[:start] == example[:start] and disguised[start + changed :] == example[start + len(value) :]:
        return start, start + changed
    return 0, len(disguised)


# -- hard negatives ----------------------------------------------------------------------------------------


def _git_log(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 8)):
        sha = rng.randbytes(20).hex()
        lines.append(f"commit {sha}\nAuthor: Dev <dev@example.com>\n\n    fix: {rng.choice(_WORDS)}\n")
    return "\n".join(lines)


def _digests(rng: random.Random) -> str:
    blob = rng.randbytes(64)
    return (
        f"sha256:{hashlib.sha256(blob).hexdigest()}\n"
        f"image: registry.example.com/app@sha256:{hashlib.sha256(blob[:9]).hexdigest()}\n"
        f"md5 {hashlib.md5(blob).hexdigest()}  sha1 {hashlib.sha1(blob).hexdigest()}\n"  # noqa: S324 - test data
        f"sha512: {hashlib.sha512(blob).hexdigest()}"
    )


def _sri(rng: random.Random) -> str:
    digest = base64.b64encode(hashlib.sha384(rng.randbytes(32)).digest()).decode()
    integrity = base64.b64encode(hashlib.sha512(rng.randbytes(32)).digest()).decode()
    return (
        f'<script src="https://cdn.example.com/lib.min.js" integrity="sha384-{digest}" '
        f'crossorigin="anonymous"></script>\n"integrity": "sha512-{integrity}"'
    )


def _data_image(rng: random.Random) -> str:
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(200, 2000))
    return f'<img alt="logo" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _uuids(rng: random.Random) -> str:
    ids = [str(uuid.UUID(bytes=rng.randbytes(16), version=4)) for _ in range(6)]
    return json.dumps({"request_id": ids[0], "trace": ids[1:], "tenant": ids[2].upper()})


def _minified_js(rng: random.Random) -> str:
    names = ["".join(rng.choices(string.ascii_letters, k=rng.randint(1, 3))) for _ in range(30)]
    parts = []
    for _ in range(40):
        a, b, c = rng.sample(names, 3)
        parts.append(
            rng.choice(
                [
                    f"function {a}({b},{c}){{return {b}&&{c}?{b}.{c}:void 0}}",
                    f"var {a}={b}.prototype.hasOwnProperty,{c}=Object.assign||function(e){{return e}};",
                    f'{a}.exports={{default:{b},__esModule:!0,"{c}":"{rng.randbytes(6).hex()}"}};',
                    f"if(!{a}){{throw new Error('Invariant failed: {b}')}}",
                    f"{a}=({b}>>>0).toString(36)+Math.random().toString(36).slice(2);",
                ]
            )
        )
    return "".join(parts)


def _urls(rng: random.Random) -> str:
    query = urllib.parse.urlencode({"q": " ".join(rng.sample(_WORDS, 4)), "lang": "fr-FR", "page": 2})
    path = urllib.parse.quote(f"/docs/{rng.choice(_WORDS)} guide/été.html")
    return f"https://www.example.com{path}?{query}\nhttps://example.org/search?q=caf%C3%A9%20cr%C3%A8me"


def _html(rng: random.Random) -> str:
    words = " ".join(rng.sample(_WORDS, 6))
    return (
        f"<p>Tom &amp; Jerry&#39;s {words} &mdash; &ldquo;quoted&rdquo; &copy; 2025 &#8212; "
        f"caf&eacute; &lt;b&gt;bold&lt;/b&gt; &#x2019;s &nbsp;&hellip;</p>"
    )


def _json_escapes(rng: random.Random) -> str:
    record = {"title": "Café crème brûlée", "city": "Zürich", "note": "Привет, мир", "jp": "東京タワー"}
    return json.dumps(record) + " " + json.dumps({"emoji": "ok 👍", "id": rng.randint(1, 10**6)})


def _spaced_heading(rng: random.Random) -> str:
    word = rng.choice(["SUMMARY", "WARNING", "CHAPTER ONE", "CONTENTS", "APPENDIX B"])
    return " ".join(word) + "\n\n" + " ".join(rng.sample(_WORDS, 12)) + "\n1 2 3 4 5 6 7 8 9 10"


def _other_scripts(rng: random.Random) -> str:
    return (
        "Пожалуйста, проверьте конфигурацию сервера и перезапустите службу. "
        "Η διαμόρφωση του διακομιστή ελέγχθηκε. КАК ЕСТЬ ОК. Ρυθμίσεις ΟΚ."
    )


def _hexdump(rng: random.Random) -> str:
    raw = rng.randbytes(64)
    return "\n".join(
        f"{offset:08x}  " + " ".join(f"{byte:02x}" for byte in raw[offset : offset + 16])
        for offset in range(0, 64, 16)
    )


def _base64_text(rng: random.Random) -> str:
    readme = "# Project\n\nRun `make test` then open the docs. " + " ".join(rng.sample(_WORDS, 10))
    config = json.dumps({"name": "svc", "replicas": 3, "image": "nginx:1.27", "debug": False})
    return f"content: {base64.b64encode(readme.encode()).decode()}\ndata: {_b64(config)}"


def _ids_and_hashes(rng: random.Random) -> str:
    return (
        f'etag: W/"{rng.randbytes(16).hex()}"\n'
        f"x-request-id: {rng.randbytes(12).hex()}\n"
        f"trace-id: 00-{rng.randbytes(16).hex()}-{rng.randbytes(8).hex()}-01\n"
        f"nonce: {base64.b64encode(rng.randbytes(18)).decode()}\n"
        f"ipfs: Qm{''.join(rng.choices(string.ascii_letters + string.digits, k=44))}"
    )


_WORDS = [
    "agent",
    "report",
    "summary",
    "customer",
    "shipping",
    "refund",
    "pricing",
    "vendor",
    "support",
    "release",
    "migration",
    "review",
    "platform",
    "team",
    "friday",
    "deploy",
    "config",
    "server",
    "cluster",
    "cache",
    "index",
    "query",
    "update",
    "patch",
]

HARD_NEGATIVE_KINDS: dict[str, Callable[[random.Random], str]] = {
    "git SHAs": _git_log,
    "digests": _digests,
    "SRI strings": _sri,
    "base64 images": _data_image,
    "UUIDs": _uuids,
    "minified JS": _minified_js,
    "percent-encoded URLs": _urls,
    "HTML entities": _html,
    "JSON \\u escapes": _json_escapes,
    "letter-spaced headings": _spaced_heading,
    "other scripts": _other_scripts,
    "hex dumps": _hexdump,
    "base64 of plain text": _base64_text,
    "ids and nonces": _ids_and_hashes,
}


def hard_negatives(per_kind: int = 20, seed: int = 11) -> list[tuple[str, str]]:
    """(kind, text) pairs that hold no secret."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    return [(kind, make(rng)) for kind, make in HARD_NEGATIVE_KINDS.items() for _ in range(per_kind)]
