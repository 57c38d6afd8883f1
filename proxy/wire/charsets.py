"""What a body says to a receiver that honours the charset its ``Content-Type`` declares, and what each
part of a multipart body says once its own ``Content-Transfer-Encoding`` and charset are undone.

The detectors read a body as UTF-8 (or the UTF-16 or UTF-32 JSON readers detect from its first bytes).
A receiver that decodes ``charset=utf-7``, ``utf-16``, an EBCDIC code page (``cp500``, ``IBM037``) or a
part in base64 or quoted-printable reads words that reading never shows. Each reading such a receiver may
make is given here as text, so that it is inspected too; a charset or transfer encoding no codec here
undoes is ``UnreadableEncodingError``: its receiver may read anything.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import json
import re
from collections.abc import Callable

from proxy.wire import jsontext
from proxy.wire.decoding import UninspectableError
from proxy.wire.multipart import part_headers, replace_parts

CHARSET_RULE = "inspection.charset"
PART_ENCODING_RULE = "inspection.part_encoding"
AS_UTF8 = frozenset({"utf-8", "ascii"})
"""Codecs whose reading is the detectors' own: a byte outside ASCII means to them what UTF-8 says."""
_CHARSET = re.compile(r"""(?:^|;)\s*charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^;\s]*))""", re.IGNORECASE)
_WITHOUT_ORDER_MARK = {"utf-16": ("utf-16-be", "utf-16-le"), "utf-32": ("utf-32-be", "utf-32-le")}
"""Without a byte order mark, receivers disagree on these (RFC 2781 says big-endian, Python reads
little-endian): both readings are made."""
_ORDER_MARKS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class UnreadableEncodingError(UninspectableError):
    """A declared charset or part encoding that no codec here undoes, or one whose reading differs from
    the detectors' where the policy wants one reading: ``rule`` names which."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ReadEveryWay(UnreadableEncodingError):
    """A body whose declared charset gives readings other than the detectors' that are each known (a
    Latin-1 body that is valid UTF-8, UTF-16 without a byte order mark): every one of them is inspected,
    and it passes as sent where none finds what the policy acts on."""


_MARKED = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
ORDER_MARK_BYTES = 4
"""The longest byte order mark: what must have arrived of a body before ``marked_charset`` can tell."""


def marked_charset(head: bytes) -> str | None:
    """The UTF-16 or UTF-32 a body's first bytes name by their byte order mark (UTF-32's before UTF-16's,
    whose little-endian mark begins it), None for any other start."""
    return next((name for mark, name in _MARKED if head.startswith(mark)), None)


def reads_unknowably(charset: str) -> bool:
    """Whether receivers decoding in ``charset`` may read text no reading here gives: UTF-7, whose decoders
    differ (direct characters, ``+-``, a shift left open) and which every ASCII reader reads otherwise."""
    try:
        return codecs.lookup(charset).name == "utf-7"
    except LookupError:
        return True


def declared_charsets(content_type: str | None) -> list[str]:
    """Every charset a Content-Type value declares (receivers take the first or the last of several)."""
    if not content_type:
        return []
    _, _, parameters = content_type.partition(";")
    found = (
        next(group for group in match.groups() if group is not None)
        for match in _CHARSET.finditer(";" + parameters)
    )
    return [name.strip() for name in found if name.strip()]


def _codec(charset: str) -> codecs.CodecInfo:
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        codec = None
    if codec is None or not getattr(codec, "_is_text_encoding", True):
        raise UnreadableEncodingError(
            CHARSET_RULE, f"declares charset {charset!r}, which no codec here reads"
        )
    return codec


def read_in(body: bytes, charset: str) -> list[str]:
    """``body`` as receivers decoding it in ``charset`` read it (both byte orders of a UTF-16 or UTF-32
    body without a byte order mark); empty where that is UTF-8's reading. Raises
    ``UnreadableEncodingError`` for a charset no codec here decodes."""
    codec = _codec(charset)
    if codec.name in AS_UTF8:
        return []
    names: tuple[str, ...] = (codec.name,)
    if codec.name in _WITHOUT_ORDER_MARK and not body.startswith(_ORDER_MARKS):
        names = _WITHOUT_ORDER_MARK[codec.name]
    readings = []
    for name in names:
        try:
            readings.append(body.decode(name, "replace"))
        except Exception as error:  # a codec that decodes nothing (``undefined``) reads as no receiver can
            raise UnreadableEncodingError(
                CHARSET_RULE, f"declares charset {charset!r}, which does not decode"
            ) from error
    return readings


def _quoted_printable(content: bytes) -> bytes:
    return binascii.a2b_qp(content)


def _base64(content: bytes) -> bytes:
    # Receivers skip what is not of the alphabet (line breaks, spaces) and missing padding.
    letters = re.sub(rb"[^A-Za-z0-9+/]", b"", content)
    return base64.b64decode(letters + b"=" * (-len(letters) % 4))


TRANSFER_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "7bit": bytes,
    "8bit": bytes,
    "binary": bytes,
    "base64": _base64,
    "quoted-printable": _quoted_printable,
}


def part_readings(body: bytes, boundary: bytes | None) -> list[bytes] | None:
    """For a multipart body of ``boundary`` with a part in a transfer encoding or a charset other than
    UTF-8, the body (as UTF-8) with each such part as its receiver decodes it, once per reading; None for a
    body that is not multipart or whose parts all read as they are. Raises ``UnreadableEncodingError`` for
    a part encoding or charset no codec here undoes."""
    found = part_headers(body, boundary)
    if found is None:
        return None
    decoded: dict[int, list[bytes]] = {}
    for index, (headers, start, end) in enumerate(found):
        content = body[start:end]
        coding = headers.get("content-transfer-encoding", "").strip().lower()
        if coding:
            decoder = TRANSFER_DECODERS.get(coding)
            if decoder is None:
                raise UnreadableEncodingError(
                    PART_ENCODING_RULE,
                    f"part {index} is in transfer encoding {coding!r}, which cannot be undone",
                )
            try:
                content = decoder(content)
            except (ValueError, binascii.Error) as error:
                raise UnreadableEncodingError(
                    PART_ENCODING_RULE, f"part {index} does not decode as {coding!r}"
                ) from error
        texts: list[bytes] = [content] if content != body[start:end] else []
        for charset in declared_charsets(headers.get("content-type")):
            texts += [text.encode("utf-8", "surrogatepass") for text in read_in(content, charset)]
        if texts:
            decoded[index] = texts
    if not decoded:
        return None
    widest = max(len(texts) for texts in decoded.values())
    return [
        replace_parts(
            body, boundary, {index: texts[min(turn, len(texts) - 1)] for index, texts in decoded.items()}
        )
        for turn in range(widest)
    ]


def reads_as_utf8(charset: str) -> bool:
    """Whether receivers decoding in ``charset`` read what the detectors read (UTF-8, ASCII)."""
    try:
        return codecs.lookup(charset).name in AS_UTF8
    except LookupError:
        return False


_ORDERED = {
    codecs.BOM_UTF32_LE: "utf-32-le",
    codecs.BOM_UTF32_BE: "utf-32-be",
    codecs.BOM_UTF16_LE: "utf-16-le",
    codecs.BOM_UTF16_BE: "utf-16-be",
}
"""Byte order marks, longest first (UTF-32LE's begins with UTF-16LE's), and the codec each names."""


@dataclasses.dataclass(frozen=True, slots=True)
class TextEncoding:
    """The one encoding, other than UTF-8, in which every receiver of a body reads its text: the body is
    inspected (and rewritten) as UTF-8, and what is sent goes back in this encoding."""

    codec: str
    mark: bytes = b""
    """The byte order mark the body began with, written back before the text."""

    def to_utf8(self, body: bytes) -> bytes:
        return body[len(self.mark) :].decode(self.codec).encode("utf-8", "surrogatepass")

    def from_utf8(self, body: bytes) -> bytes | None:
        """``body`` (UTF-8) in this encoding; None where it holds a character the encoding has none for
        (text the body did not come with: its receiver must be told the body is UTF-8)."""
        try:
            return self.mark + body.decode("utf-8", "surrogatepass").encode(self.codec)
        except (UnicodeDecodeError, UnicodeEncodeError):
            return None


def text_encoding(body: bytes, content_type: str | None) -> TextEncoding | None:
    """The encoding, other than UTF-8, that every receiver reads ``body`` in: the one charset its
    Content-Type declares where the body decodes in it without error, a receiver reading it as UTF-8
    reads no other text (the body is not UTF-8, or holds NULs no text has, or reads the same) and a JSON
    reader no other either; else, with no charset declared, UTF-16 or UTF-32 that JSON's rule detects from
    its first bytes where it is JSON so read. None for a body read as UTF-8, and where receivers may read it
    otherwise (charsets that differ, a UTF-16 or UTF-32 body without a byte order mark, UTF-7, UTF-16 JSON
    labelled Latin-1): ``read_in`` gives each reading."""
    as_json = _json_encoding(body)
    declared = declared_charsets(content_type)
    if not declared:
        return as_json
    try:
        names = {codecs.lookup(charset).name for charset in declared}
    except LookupError:
        return None
    if len(names) != 1 or names <= AS_UTF8:
        return None
    encoding = _encoding(body, names.pop())
    if encoding is None or _read_otherwise_as_utf8(body, encoding):
        return None
    # JSON readers handed the bytes (Python's json, Starlette's and httpx's json()) detect UTF-16 and
    # UTF-32 themselves and ignore the label.
    if as_json is not None and as_json.codec != encoding.codec:
        return None
    return encoding


def _json_encoding(body: bytes) -> TextEncoding | None:
    """The UTF-16 or UTF-32 that JSON's rule detects from ``body``'s first bytes (a byte order mark, or
    where its NULs fall), where it reads as JSON so."""
    detected = json.detect_encoding(body)
    if detected in ("utf-8", "utf-8-sig"):
        return None
    encoding = _encoding(body, codecs.lookup(detected).name)
    if encoding is None:
        return None
    try:
        jsontext.loads(encoding.to_utf8(body))
    except (ValueError, RecursionError):
        return None
    return encoding


def _encoding(body: bytes, name: str) -> TextEncoding | None:
    """``name``'s encoding of ``body``, where the body decodes in it without error; the byte order of a
    UTF-16 or UTF-32 body from its mark (None without one: receivers disagree on the order)."""
    encoding = TextEncoding(name)
    if name in _WITHOUT_ORDER_MARK:
        mark = next((mark for mark in _ORDERED if body.startswith(mark)), None)
        if mark is None or not _ORDERED[mark].startswith(name):
            return None
        encoding = TextEncoding(_ORDERED[mark], mark)
    try:
        encoding.to_utf8(body)
    except Exception:  # an error in its charset, or a codec that decodes nothing (``undefined``)
        return None
    return encoding


def _read_otherwise_as_utf8(body: bytes, encoding: TextEncoding) -> bool:
    """Whether a receiver reading ``body`` as UTF-8 reads text other than ``encoding`` gives: it is UTF-8,
    without the NULs no text holds, and says something else in it (UTF-7, a mislabelled UTF-8 body)."""
    try:
        as_utf8 = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in as_utf8 and as_utf8.encode("utf-8", "surrogatepass") != encoding.to_utf8(body)


def labelled_utf8(content_type: str) -> str:
    """``content_type`` with the charsets it declares replaced by ``utf-8``."""
    media_type = _CHARSET.sub("", content_type).rstrip("; \t")
    return f"{media_type}; charset=utf-8"
