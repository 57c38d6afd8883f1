"""Dev corpora for secret detection: every rule's match examples encoded and disguised, and hard negatives.

``disguised_corpus`` writes each secrets-pack match example in every way a model can be led to hide it:
the whole example base64-, base64url- or hex-encoded (no credential name left in sight), and the secret
value inside it percent-encoded, as JSON ``\\u`` escapes, as HTML entities (decimal, hex, named),
letter-spaced or with a separator between its characters (an ASCII one, a bullet, an arrow, an emoji),
split by zero-width characters, with a look-alike first letter, in full-width forms, as decimal or binary
character codes, shifted along the alphabet (Caesar, ROT13, ROT47), and combinations of these.
``hard_negatives`` generates what agents read every day and must stay clean: git SHAs, digests, SRI
strings, base64 images, UUIDs, minified JS, percent-encoded URLs, HTML, JSON with ``\\u`` escapes of
other languages, letter-spaced headings, prose in other scripts, binary dumps of words, bullet lists.

Used by ``bench/scan.py`` (recall and false positives next to MB/s) and ``tests/test_unmask.py``. Run
alone, it prints recall and redaction per disguise, and per kind of benign traffic (documentation, code,
JSON, logs, prose of the development sets in ``../shared/data`` and generated JSON and logs) what the
secrets pack flags, what of it only a decoded view found, and the CPU share the views add:

    python3 bench/disguises.py [--rounds 3]
"""

# Look-alike letters are the point of this file.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import base64
import bz2
import codecs
import csv
import gzip
import hashlib
import html.entities
import json
import lzma
import random
import re
import string
import sys
import time
import unicodedata
import urllib.parse
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.carriers import benign_carriers, default_data
from proxy.model import Threat
from proxy.scanning.normalize import LOOKALIKES, ROT47_TABLE, caesar_table
from proxy.scanning.redact import scan_and_redact
from proxy.scanning.rulepack import Rule, RulePack, Scanner, load_packaged_packs

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


def _octal(value: str) -> str:
    return "".join(f"\\{byte:03o}" for byte in value.encode())


def _braced_u(value: str) -> str:
    return "".join(f"\\u{{{ord(char):x}}}" for char in value)


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


def _combining(value: str) -> str:
    return "".join(char + "\u0301" for char in value)


def _filler_split(value: str) -> str:
    """Split by the Hangul filler, drawn as nothing."""
    return "\u3164".join(value[index : index + 3] for index in range(0, len(value), 3))


def _digits(zero: int) -> Callable[[str], str]:
    """The value's ASCII digits written in the script whose zero is ``zero``."""
    return lambda value: "".join(chr(zero + int(char)) if char in string.digits else char for char in value)


def _circled(value: str) -> str:
    """Letters and digits circled (Ⓐ, ⓐ, ①, ⓪)."""

    def circle(char: str) -> str:
        if char in string.ascii_uppercase:
            return chr(0x24B6 + ord(char) - ord("A"))
        if char in string.ascii_lowercase:
            return chr(0x24D0 + ord(char) - ord("a"))
        if char in "123456789":
            return chr(0x2460 + int(char) - 1)
        return "\u24ea" if char == "0" else char

    return "".join(map(circle, value))


def _thirds(value: str) -> list[str]:
    """``value`` cut in three."""
    cut = len(value) // 3
    return [value[:cut], value[cut : 2 * cut], value[2 * cut :]]


def _groups_of(value: str, size: int = 4) -> list[str]:
    return [value[index : index + size] for index in range(0, len(value), size)]


def _grouped(value: str, separator: str) -> str:
    """The value in groups of four, as keys are read out: AKIA-QYLP-..."""
    return separator.join(_groups_of(value))


def _binary(width: int, separator: str) -> Callable[[str], str]:
    return lambda value: separator.join(f"{ord(char):0{width}b}" for char in value)


def _caesar(letters: int, digits: int = 0) -> Callable[[str], str]:
    return lambda value: value.translate(caesar_table(letters, digits))


def _rot13(value: str) -> str:
    return codecs.encode(value, "rot13")


def _compressed(compress: Callable[[bytes], bytes]) -> Callable[[str], str]:
    return lambda text: base64.b64encode(compress(text.encode())).decode()


def _wrapped(width: int) -> Callable[[str], str]:
    """Base64 of the text, wrapped at ``width``."""

    def wrap(text: str) -> str:
        encoded = _b64(text)
        return "\n".join(encoded[index : index + width] for index in range(0, len(encoded), width))

    return wrap


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
    "base64-wrapped-10": _whole(_wrapped(10)),
    "base64-wrapped-4": _whole(_wrapped(4)),
    "gzip+base64": _whole(_compressed(lambda raw: gzip.compress(raw, mtime=0))),
    "zlib+base64": _whole(_compressed(zlib.compress)),
    "bzip2+base64": _whole(_compressed(bz2.compress)),
    "xz+base64": _whole(_compressed(lzma.compress)),
    "gzip+hex": _whole(lambda text: gzip.compress(text.encode(), mtime=0).hex()),
    "dash-separated": _value("-".join),
    "dot-separated": _value(".".join),
    "comma-separated": _value(", ".join),
    "one-a-line": _value("\n".join),
    "octal": _value(_octal),
    "braced-u": _value(_braced_u),
    "combining-marks": _value(_combining),
    "filler-split": _value(_filler_split),
    "full-width-digits": _value(_digits(0xFF10)),
    "arabic-indic-digits": _value(_digits(0x0660)),
    "devanagari-digits": _value(_digits(0x0966)),
    "math-digits": _value(_digits(0x1D7CE)),
    "circled": _value(_circled),
    "reversed": _value(lambda value: value[::-1]),
    "rot13": _value(_rot13),
    "reversed+rot13": _value(lambda value: _rot13(value[::-1])),
    "concatenated": _value(lambda value: " + ".join(f'"{piece}"' for piece in _thirds(value))),
    "adjacent-literals": _value(
        lambda value: "(" + "\n    ".join(f"'{piece}'" for piece in _thirds(value)) + ")"
    ),
    "joined-list": _value(lambda value: "[" + ", ".join(f'"{piece}"' for piece in _thirds(value)) + "]"),
    "base32": _whole(lambda text: base64.b32encode(text.encode()).decode()),
    "base85": _whole(lambda text: base64.b85encode(text.encode()).decode()),
    "ascii85": _whole(lambda text: base64.a85encode(text.encode()).decode()),
    "ascii85-adobe": _whole(lambda text: base64.a85encode(text.encode(), adobe=True).decode()),
    "char-codes": _value(lambda value: "[" + ", ".join(str(ord(char)) for char in value) + "]"),
    "char-codes-unspaced": _value(lambda value: ",".join(str(ord(char)) for char in value)),
    "char-codes-zero-padded": _value(lambda value: ",".join(f"{ord(char):03d}" for char in value)),
    "chr-joined": _value(lambda value: "+".join(f"chr({ord(char)})" for char in value)),
    "json-split": _value(lambda value: json.dumps(dict(zip("abc", _thirds(value), strict=True)))),
    "character-list": _value(lambda value: json.dumps(list(value))),
    "character-list-indented": _value(lambda value: json.dumps(list(value), indent=2)),
    "character-list-reversed": _value(lambda value: repr(list(value[::-1]))),
    "grouped-dash": _value(lambda value: _grouped(value, "-")),
    "grouped-space": _value(lambda value: _grouped(value, " ")),
    "grouped-lines": _value(lambda value: "\n".join(_groups_of(value, 12))),
    "grouped-reversed": _value(lambda value: _grouped(value[::-1], "-")),
    "other-case": _value(str.swapcase),
    "binary-codes": _value(_binary(8, " ")),
    "binary-codes-unspaced": _value(_binary(8, "")),
    "binary-codes-7-bit": _value(_binary(7, " ")),
    "bullet-separated": _value("\u2022".join),
    "arrow-separated": _value("\u2192".join),
    "middot-separated": _value("\u00b7".join),
    "emoji-separated": _value("\U0001f642".join),
    "caesar-1": _value(_caesar(1)),
    "caesar-3": _value(_caesar(3)),
    "caesar-25": _value(_caesar(25)),
    "caesar-7-digits-too": _value(_caesar(7, 7)),
    "rot47": _value(lambda value: value.translate(ROT47_TABLE)),
}


KEYED = {"reversed", "rot13", "reversed+rot13", "concatenated", "adjacent-literals", "joined-list"}
KEYED |= {"json-split", "char-codes", "char-codes-unspaced", "char-codes-zero-padded", "chr-joined"}
KEYED |= {"character-list", "character-list-indented", "character-list-reversed"}
KEYED |= {"grouped-dash", "grouped-space", "grouped-lines", "grouped-reversed", "other-case"}
KEYED |= {"binary-codes", "binary-codes-unspaced", "binary-codes-7-bit"}
KEYED |= {"caesar-1", "caesar-3", "caesar-25", "caesar-7-digits-too", "rot47"}
"""Disguises of the value alone that are read only where the key's own prefix starts it (or, for joined
literals, a rule's match of the first piece): a value known by its name alone ("password = …") is not."""
_SPACINGS = {"letter-spaced", "tab-spaced", "nbsp-spaced", "dash-separated", "dot-separated"}
_SPACINGS |= {"comma-separated", "one-a-line", "bullet-separated", "arrow-separated", "middot-separated"}
_SPACINGS |= {"emoji-separated"}


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


def _marks_and_digits(rng: random.Random) -> str:
    decomposed = unicodedata.normalize("NFD", "Café crème, naïve façade, Việt Nam, Ångström, señor")
    return (
        f"{decomposed}. Area 12 m², volume 3 m³, x₁ + x₂ = ¹⁄₂; ① install ② configure ③ run.\n"
        f"السعر ٣٥٠ ريال للطلب رقم ٤٥٦٧٨٩ — मूल्य ४५० रुपये, आदेश ९८७६५४३. 🅰 🄱 ⓐⓑⓒ {rng.randint(1, 99)}"
    )


def _code_escapes(rng: random.Random) -> str:
    return (
        "printf '\\033[1;32mOK\\033[0m\\n'; echo -e \"\\101\\102\\103 \\x1b[2J\"\n"
        'const smile = "\\u{1F600}", nbsp = "\\u{a0}", tab = "\\x{09}";\n'
        f'char path[] = "C:\\\\tmp\\\\{rng.randint(100, 377)}\\\\log"; '
        "/* \\012 ends a line, \\000 a string */"
    )


def _separated_characters(rng: random.Random) -> str:
    bits = ",".join(rng.choice("01") for _ in range(32))
    return (
        f"mask = [{bits}]\nA,B,C,D,E,F,G,H\n1,2,3,4,5,6,7,8\na, b, c, d, e, f, g, h = range(8)\n"
        "|-|-|-|-|-|-|-|-|\n+-+-+-+-+-+-+-+-+\nx.y.z.w.v.u.t.s\n"
        f"{chr(10).join(rng.sample(string.ascii_uppercase, 10))}\n1.2.3.4.5.6.7.8 s-e-c-r-e-t-s"
    )


def _compressed_text(rng: random.Random) -> str:
    config = json.dumps({"name": "svc", "replicas": rng.randint(1, 9), "image": "nginx:1.27", "debug": False})
    page = "# Notes\n\n" + " ".join(rng.sample(_WORDS, 12))
    return (
        f"H4s payload: {base64.b64encode(gzip.compress(config.encode(), mtime=0)).decode()}\n"
        f"deflated: {base64.b64encode(zlib.compress(page.encode())).decode()}\n"
        f"xz: {base64.b64encode(lzma.compress(page.encode())).decode()}"
    )


def _short_lines(rng: random.Random) -> str:
    words = "\n".join(rng.choice(["done", "exit", "quit", "next", "stop", "wait"]) for _ in range(8))
    return f"{words}\nrelease\nversion\nsummary\n------\n------\n------\nABCDEF\n123456\nQWERTY"


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


def _turned_lookalikes(rng: random.Random) -> str:
    """Words, names and code that hold a key prefix written backwards or in rot13 at a token's edge."""
    word = rng.choice(["Aika", "Aisa", "Kaze", "iPad", "Ngoo", "Nfvn"])
    return (
        f"{word} wrote: from __future__ import annotations; s = name[::-1]\n"
        "print(codecs.encode(s, 'rot13'))\n"
        f"reversed('ghp_') == '_phg'; 'tuc_' is rot13 of 'ghp_'; {rng.randbytes(12).hex()}_phg sk-_"
        "\nvar r=e.split('').reverse().join('');Aika_2 AIKA ahz-kf pbaf"
    )


def _shifted_lookalikes(rng: random.Random) -> str:
    """Identifiers, words and ciphertext of exercises that start with a key prefix shifted along the
    alphabet or in ROT47, none of them a key shifted."""
    shift = rng.randint(1, 25)
    word = " ".join(rng.sample(_WORDS, 3)).translate(caesar_table(shift))
    return (
        f"Caesar({shift}) of the words: {word}. ijr_test = 1; DNLD_REGION='eu'; bljb-mirror\n"
        f"jks_{rng.choice(_WORDS)} = load(); arae-{rng.randint(100, 999)} ok; 89A0 89A0 t0blbkfj\n"
        f"ROT47 of 'hello world' is '{'hello world'.translate(ROT47_TABLE)}'; "
        f"hiq_{rng.randbytes(8).hex()} ZJHZ{rng.randbytes(4).hex().upper()}"
    )


def _binary_dumps(rng: random.Random) -> str:
    """Ordinary words written as binary character codes, spaced, in a row and in 7-bit groups, and bit
    masks and registers."""
    words = " ".join(rng.sample(_WORDS, 4))
    mask = " ".join(f"{rng.getrandbits(8):08b}" for _ in range(12))
    return (
        f"{' '.join(f'{ord(char):08b}' for char in words)}\n"
        f"{''.join(f'{ord(char):08b}' for char in 'Hello, world')}\n"
        f"{' '.join(f'{ord(char):07b}' for char in words[::-1])}\n"
        f"mask = {mask}\nREG 0x1F = 0b{rng.getrandbits(16):016b}; flags 10110010 01001101"
    )


def _typographic_separators(rng: random.Random) -> str:
    """Bullet lists, arrows in prose and flows, middle dots in addresses and menus, emoji between words and
    single letters."""
    words = rng.sample(_WORDS, 8)
    letters = rng.sample(string.ascii_uppercase, 9)
    return (
        f"\u2022 {words[0]} \u2022 {words[1]} \u2022 {words[2]}\n"
        f"build \u2192 test \u2192 {words[3]} \u2192 deploy; states {'\u2192'.join(letters)}\n"
        f"12 Rue de la Paix \u00b7 75002 Paris \u00b7 France \u00b7 +33 1 23 45 67 89\n"
        f"Home \u00b7 Docs \u00b7 {words[4].title()} \u00b7 Blog; grades {'\u00b7'.join(letters)}\n"
        f"{words[5]} \U0001f680 {words[6]} \U0001f680 {words[7]}; {'\u2022'.join('12345678')}"
    )


def _numbers(rng: random.Random) -> str:
    """Arrays, tables, times and addresses of numbers, some of them printable character codes."""
    pixels = ", ".join(str(rng.randint(0, 255)) for _ in range(48))
    codes = ", ".join(str(rng.randint(32, 126)) for _ in range(24))
    padded = ",".join(f"{rng.randint(32, 126):03d}" for _ in range(24))
    day = f"{rng.randint(2000, 2026)},{rng.randint(1, 12):03d},{rng.randint(1, 28):03d}"
    return (
        f"pixels = [{pixels}]\nweights = [{codes}]\nlots = {padded}\nreleased {day}; ZIP 02134, 00501\n"
        f"2024-12-06 10:{rng.randint(10, 59)}:45 GET /api 200 118 ms from 10.0.{rng.randint(0, 255)}.17\n"
        "ports: 80, 443, 8080, 8443; versions 1.2.3 -> 1.10.0\n| 45 | 67 | 89 | 101 | 99 | 120 | 77 | 64 |"
    )


def _short_strings(rng: random.Random) -> str:
    """Lists of one-character and short strings: alphabets, digits, grades, tokens, a shuffled deck."""
    letters = rng.sample(string.ascii_letters + string.digits, 24)
    vocab = [char for char in string.punctuation if char not in '"\\']
    return (
        f"ALPHABET = {list(string.ascii_lowercase)}\nHEX = {json.dumps(list(string.hexdigits))}\n"
        f'grades = ["A", "B", "C", "D", "E", "F", "P", "N"]\nshuffled = {json.dumps(letters)}\n'
        f"{json.dumps({'vocab': vocab}, indent=2)}\n"
        f"tokens = {json.dumps(rng.sample(_WORDS, 10))}"
    )


def _joined_literals(rng: random.Random) -> str:
    """Code and JSON that join string literals, some of them a key's prefix alone."""
    words = rng.sample(_WORDS, 6)
    values = {word: rng.randbytes(6).hex() for word in words}
    return (
        f'url = "https://" + host + "/api/" + "{words[0]}" + "/" + "{words[1]}"\n'
        'PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")\n'
        'fake = "ghp_" + "x" * 36; label = "AKIA" "IOSFODNN7EXAMPLE"\n'
        f"msg = '{words[2]}' . '-' . '{words[3]}'; q = 'a' || 'b'\n"
        f"{json.dumps(values)}\n"
        f'sql = "SELECT" + " * FROM {words[4]}" + " WHERE id = ?"'
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
    "marks, superscripts and digits of other scripts": _marks_and_digits,
    "hex dumps": _hexdump,
    "escapes in code": _code_escapes,
    "separated characters": _separated_characters,
    "compressed text in base64": _compressed_text,
    "short lines": _short_lines,
    "base64 of plain text": _base64_text,
    "ids and nonces": _ids_and_hashes,
    "reversed or rotated look-alikes": _turned_lookalikes,
    "joined string literals": _joined_literals,
    "lists of short strings": _short_strings,
    "numbers": _numbers,
    "shifted look-alikes": _shifted_lookalikes,
    "binary dumps of words": _binary_dumps,
    "bullets, arrows and middle dots": _typographic_separators,
}


def hard_negatives(per_kind: int = 20, seed: int = 11) -> list[tuple[str, str]]:
    """(kind, text) pairs that hold no secret."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    return [(kind, make(rng)) for kind, make in HARD_NEGATIVE_KINDS.items() for _ in range(per_kind)]


# -- benign traffic of the development sets ------------------------------------------------------------

_KIND_OF_FAMILY = {
    "docs": "docs",
    "code": "code",
    "diff": "code",
    "stack": "logs",
    "json": "JSON",
    "bipia_table": "JSON",
    "manifest": "JSON",
    "logs": "logs",
    "bipia_code": "code",
    "bipia_email": "prose",
    "qa": "prose",
}


def benign_traffic(seed: int = 5) -> dict[str, list[str]]:
    """Texts agents read every day, by kind (documentation, code, JSON and manifests, logs, prose): the
    development sets' tool results and documents (bench/carriers.py, this installation's sources and
    documentation among them), benign prompts and the XSTest completions of the development models."""
    data = default_data()
    traffic: dict[str, list[str]] = {"docs": [], "code": [], "JSON": [], "logs": [], "prose": []}
    for carrier in benign_carriers(data, random.Random(seed), local=True):  # noqa: S311 - reproducible
        kind = next(kind for prefix, kind in _KIND_OF_FAMILY.items() if carrier.family.startswith(prefix))
        traffic[kind].append(carrier.text)
    prompts = json.loads((data / "benign" / "notinject_one.json").read_text(encoding="utf-8"))
    traffic["prose"].extend(prompt["prompt"] for prompt in prompts)
    with (data / "refusal" / "xstest_v2_completions_gpt4.csv").open(encoding="utf-8") as rows:
        traffic["prose"].extend(row["completion"] for row in csv.DictReader(rows))
    return traffic


def _plain(packs: list[RulePack]) -> list[RulePack]:
    """The packs with no decoded views: what the rules find in the text as it stands."""
    return [replace(pack, rules=tuple(replace(rule, decoded=False) for rule in pack.rules)) for pack in packs]


def _cpu_seconds(scanner: Scanner, texts: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for text in texts:
            scanner.scan_alone(text)
        best = min(best, time.process_time() - start)
    return best


_PLACEHOLDER = re.compile(r"\[REDACTED:[^\]]*\]")


def redacted_whole(scanner: Scanner, text: str, start: int, end: int) -> bool:
    """No 8-character piece of ``text[start:end]`` holding a letter or digit is left once the text is
    redacted (the indentation of a list written one item a line stays around it, and carries nothing)."""
    visible = _PLACEHOLDER.sub("\0", scan_and_redact(scanner, text).text)
    pieces = (text[index : index + 8] for index in range(start, end - 7))
    return not any(piece in visible and any(char.isalnum() for char in piece) for piece in pieces)


def recall_lines(scanner: Scanner, secrets: list[RulePack]) -> list[str]:
    """Found and redacted whole, per disguise, of the secrets pack's examples."""
    items = disguised_corpus(secrets)
    found: Counter[str] = Counter()
    whole: Counter[str] = Counter()
    for item in items:
        matches = scanner.scan_alone(item.text).matches
        if any(m.rule.pack == "secrets" and m.start < item.end and m.end > item.start for m in matches):
            found[item.encoding] += 1
            whole[item.encoding] += redacted_whole(scanner, item.text, item.start, item.end)
    totals = Counter(item.encoding for item in items)
    lines = [f"{'disguise':<26} {'found':>16} {'redacted whole':>16}"]
    for name in ENCODERS:
        total = max(1, totals[name])
        lines.append(
            f"  {name:<24} {found[name]:>5}/{totals[name]:<4} {found[name] / total:.3f} "
            f"{whole[name]:>5}/{found[name]:<4} {whole[name] / max(1, found[name]):.3f}"
        )
    hits, kept = sum(found.values()), sum(whole.values())
    lines.append(f"  {'all':<24} {hits:>5}/{len(items):<4} {hits / len(items):.3f} {kept:>5}/{hits:<4}")
    return lines


def traffic_lines(packs: list[RulePack], rounds: int) -> list[str]:
    """Per kind of benign traffic: texts flagged by the secrets pack, those a view alone flagged (and
    by which disguise), and the CPU the views add to the scan of every data pack."""
    scanner, plain = Scanner(packs, timeout_s=1.0), Scanner(_plain(packs), timeout_s=1.0)
    negatives = {**benign_traffic(), "hard negatives": [text for _, text in hard_negatives()]}
    lines = [
        f"{'benign traffic':<16} {'texts':>6} {'MB':>6} {'flagged':>8} {'by a view':>10} {'views CPU':>10}"
    ]
    for kind, texts in negatives.items():
        flagged = 0
        by_view: Counter[str] = Counter()
        for text in texts:
            matches = [m for m in scanner.scan_alone(text).matches if m.rule.pack == "secrets"]
            flagged += bool(matches)
            by_view.update({m.disguise for m in matches if m.disguise})
        with_views, without = _cpu_seconds(scanner, texts, rounds), _cpu_seconds(plain, texts, rounds)
        size = sum(len(text.encode()) for text in texts) / 1e6
        views = ", ".join(f"{name}: {count}" for name, count in sorted(by_view.items()))
        lines.append(
            f"  {kind:<14} {len(texts):>6} {size:>6.2f} {flagged:>8} {sum(by_view.values()):>10} "
            f"{with_views / without - 1:>+9.1%}" + (f"  ({views})" if views else "")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="CPU timings, best of this many")
    options = parser.parse_args()
    packs = [pack for pack in load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
    secrets = [pack for pack in packs if pack.name == "secrets"]
    print("\n".join(recall_lines(Scanner(packs, timeout_s=1.0), secrets)))
    print("\n".join(["", *traffic_lines(packs, options.rounds)]))


if __name__ == "__main__":
    main()
