"""End to end: a body declared in a charset (whole, or a multipart part with its own charset or
Content-Transfer-Encoding) is read as a receiver honouring the declaration reads it, through a real
egressguard process: what only that reading shows is recorded in observe mode, and such a body is refused
in enforce mode rather than passed unread."""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, last_record, openai_client
from tests.test_e2e_readings import post
from tests.upstream import FakeUpstream, Reply, ToolCallReply, openai_chat_json

AWS_KEY = "AKIAQWERTY234567ABCD"
LEAK = f"deploy with aws_access_key_id = {AWS_KEY} today"


def utf7_shifted(text: str) -> bytes:
    """``text`` in UTF-7 with every character in a base64 shift, as no ASCII reader sees it."""
    encoded = base64.b64encode(text.encode("utf-16-be")).rstrip(b"=")
    return b"+" + encoded + b"-"


def quoted_printable_all(text: str) -> bytes:
    """Every byte of ``text`` as a quoted-printable escape."""
    return b"".join(b"=%02X" % byte for byte in text.encode())


WHOLE_BODIES: dict[str, tuple[str, bytes]] = {
    "utf-7 shifted": ("text/plain; charset=utf-7", b"note: " + utf7_shifted(LEAK)),
    "utf-7 alias, quoted": ('text/plain; charset="UNICODE-1-1-UTF-7"', utf7_shifted(LEAK)),
    "utf-16 big endian": ("text/plain; charset=utf-16be", LEAK.encode("utf-16-be")),
    "utf-16 with a bom": ("text/plain;charset=UTF-16", LEAK.encode("utf-16")),
    "utf-32": ("text/plain; charset=utf-32", LEAK.encode("utf-32")),
    "utf-32 little endian, no bom": ("text/plain; charset=UTF-32LE", LEAK.encode("utf-32-le")),
    "ebcdic cp500": ("text/plain; charset=cp500", LEAK.encode("cp500")),
    "ebcdic cp037 by its IANA name": ("text/plain; charset=IBM037", LEAK.encode("cp037")),
    "ebcdic cp1140": ("text/plain; format=flowed; charset=cp1140", LEAK.encode("cp1140")),
    "ebcdic json": ("application/json; charset=cp500", json.dumps({"note": LEAK}).encode("cp500")),
    "utf-16 json, odd first letter": (
        "application/json; charset=utf-16le",
        json.dumps({"note": LEAK}, ensure_ascii=False).encode("utf-16-le"),
    ),
}
UNKNOWN_CHARSETS = ["x-unknown-42", "base64", "rot13", "utf-8x"]
BOUNDARY = "b0undary"


def multipart(*parts: tuple[dict[str, str], bytes]) -> bytes:
    body = b""
    for index, (headers, content) in enumerate(parts):
        lines = [
            f'Content-Disposition: form-data; name="f{index}"',
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        body += f"--{BOUNDARY}\r\n".encode() + "\r\n".join(lines).encode() + b"\r\n\r\n" + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


FILE_PART = ({"Content-Type": "application/octet-stream"}, bytes(range(256)) * 4)
MULTIPART_BODIES: dict[str, bytes] = {
    "base64 part": multipart(
        FILE_PART, ({"Content-Transfer-Encoding": "base64"}, base64.encodebytes(LEAK.encode()))
    ),
    "quoted-printable part": multipart(
        FILE_PART, ({"Content-Transfer-Encoding": "Quoted-Printable"}, quoted_printable_all(LEAK))
    ),
    "quoted-printable part, the key cut by a soft line break": multipart(
        FILE_PART,
        (
            {"Content-Transfer-Encoding": "quoted-printable"},
            LEAK[:40].encode() + b"=\r\n" + LEAK[40:].encode(),
        ),
    ),
    "utf-7 part": multipart(FILE_PART, ({"Content-Type": "text/plain; charset=utf-7"}, utf7_shifted(LEAK))),
    "ebcdic part": multipart(
        FILE_PART, ({"Content-Type": "text/plain; charset=cp500"}, LEAK.encode("cp500"))
    ),
    "base64 part in utf-16": multipart(
        FILE_PART,
        (
            {"Content-Type": "text/plain; charset=utf-16", "Content-Transfer-Encoding": "BASE64"},
            base64.b64encode(LEAK.encode("utf-16")),
        ),
    ),
    "uuencoded part": multipart(
        FILE_PART, ({"Content-Transfer-Encoding": "x-uuencode"}, binascii.b2a_uu(LEAK.encode()[:45]))
    ),
    "text-only body, base64 part": multipart(
        ({"Content-Transfer-Encoding": "base64"}, base64.b64encode(LEAK.encode()))
    ),
}
PLAIN_BODIES: dict[str, tuple[str, bytes]] = {
    "utf-8": ("application/json; charset=utf-8", json.dumps({"note": "hello"}).encode()),
    "quoted UTF-8": ('application/json; charset="UTF-8"', json.dumps({"note": "héllo"}).encode()),
    "us-ascii": ("text/plain; charset=us-ascii", b"hello there"),
    "latin-1, ascii letters only": ("text/plain; charset=iso-8859-1", b"hello there"),
    "cp1252, ascii letters only": ("text/plain; charset=windows-1252", b"hello there"),
    "no charset": ("text/plain", b"hello there"),
    "7bit part": ("", multipart(FILE_PART, ({"Content-Transfer-Encoding": "7bit"}, b"hello there"))),
}


@pytest.fixture(params=["observe", "enforce"])
def guard(
    request: pytest.FixtureRequest, shared_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch
) -> Proxy:
    return _agent(shared_proxy(mode=request.param), monkeypatch)


def enforcing(proxy: Proxy) -> bool:
    return "mode: enforce" in proxy.policy_path.read_text()


class Turns:
    """The audit records of one proxy's turns, read one after another as the test makes them."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.made = 0

    def next(self) -> list[dict[str, Any]]:
        """The findings of the next turn's record."""
        self.made += 1
        findings: list[dict[str, Any]] = last_record(self.proxy, self.made)["findings"]
        return findings


def secrets_in(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [finding for finding in findings if finding["rule"] == "aws-access-key-id"]


def charset_finding(findings: list[dict[str, Any]]) -> dict[str, Any]:
    (finding,) = [finding for finding in findings if finding["rule"] == "inspection.charset"]
    return finding


def test_a_request_in_a_declared_charset_is_read_as_declared(guard: Proxy, upstream: FakeUpstream) -> None:
    """A secret in a request body declared utf-7, utf-16, utf-32 or an EBCDIC code page is found as a
    receiver honouring the charset reads it (recorded), or, in enforce mode, a body that reads otherwise
    in its charset than as UTF-8 is refused (415) before anything leaves."""
    upstream.reply = Reply(body=b'{"ok": true}')
    turns = Turns(guard)
    for name, (content_type, body) in WHOLE_BODIES.items():
        before = len(upstream.received)
        response = post(guard, upstream, body, path="/upload", headers={"content-type": content_type})
        findings = turns.next()
        if enforcing(guard) and response.status_code == 415:
            assert len(upstream.received) == before, name
            assert charset_finding(findings)["enforced"] is True, name
        else:
            assert response.status_code == 200 and secrets_in(findings), name


def test_a_request_in_a_charset_no_one_can_read_is_refused_where_enforced(
    guard: Proxy, upstream: FakeUpstream
) -> None:
    """A charset egressguard does not know (or a name that is no text encoding) may mean anything to its
    receiver: refused (415) in enforce mode, passed and recorded in observe mode."""
    upstream.reply = Reply(body=b'{"ok": true}')
    turns = Turns(guard)
    for charset in UNKNOWN_CHARSETS:
        headers = {"content-type": f"text/plain; charset={charset}"}
        response = post(guard, upstream, b"hello", path="/upload", headers=headers)
        assert response.status_code == (415 if enforcing(guard) else 200), charset
        assert charset_finding(turns.next())["enforced"] is enforcing(guard), charset


def test_a_multipart_part_in_its_own_encoding_is_read_as_declared(
    guard: Proxy, upstream: FakeUpstream
) -> None:
    """A form field beside a file, in base64, quoted-printable, utf-7, EBCDIC or base64 of utf-16: its
    secret is recorded in observe mode; enforce mode refuses such a part (no sender of form data encodes
    its fields so) rather than pass it unread, and an encoding it cannot undo is refused too."""
    upstream.reply = Reply(body=b'{"ok": true}')
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    turns = Turns(guard)
    for name, body in MULTIPART_BODIES.items():
        before = len(upstream.received)
        response = post(guard, upstream, body, path="/upload", headers={"content-type": content_type})
        findings = turns.next()
        rules = {finding["rule"]: finding for finding in findings}
        (encoding,) = [
            rules[rule] for rule in ("inspection.charset", "inspection.part_encoding") if rule in rules
        ]
        assert encoding["enforced"] is enforcing(guard), name
        if enforcing(guard):
            assert response.status_code == 415 and len(upstream.received) == before, name
        else:
            assert response.status_code == 200, name
            assert secrets_in(findings) or name == "uuencoded part", name


def test_plain_charsets_pass_untouched(guard: Proxy, upstream: FakeUpstream) -> None:
    """UTF-8 however it is spelled, US-ASCII, and a single-byte charset over ASCII letters read the same
    either way: they pass as sent in every mode, with no charset finding."""
    upstream.reply = Reply(body=b'{"ok": true}')
    turns = Turns(guard)
    for name, (content_type, body) in PLAIN_BODIES.items():
        content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
        response = post(guard, upstream, body, path="/upload", headers={"content-type": content_type})
        assert response.status_code == 200, name
        assert upstream.received[-1].body == body, name
        rules = {finding["rule"] for finding in turns.next()}
        assert not rules & {"inspection.charset", "inspection.part_encoding"}, name


def test_an_answer_in_a_declared_charset_is_read_as_declared(guard: Proxy, upstream: FakeUpstream) -> None:
    """An answer declared in a charset carries a secret a client honouring the charset reads: recorded,
    and in enforce mode either redacted (read the same as UTF-8) or answered 502 instead (read otherwise)."""
    turns = Turns(guard)
    for name, (content_type, body) in WHOLE_BODIES.items():
        upstream.reply = Reply(body=body, content_type=content_type)
        response = post(guard, upstream, json.dumps({"note": "hello"}).encode(), path="/download")
        findings = turns.next()
        if enforcing(guard) and response.status_code == 502:
            assert AWS_KEY not in response.text and charset_finding(findings)["enforced"] is True, name
            continue
        assert secrets_in(findings), name
        charset = content_type.rpartition("charset=")[2].strip('"')
        received = response.content.decode(charset, "replace")
        assert (AWS_KEY in received) is not enforcing(guard), (name, received)


def test_an_event_stream_in_another_charset_is_not_passed_unread_where_enforced(
    guard: Proxy, upstream: FakeUpstream
) -> None:
    """An event stream declared in a charset other than UTF-8 (which event streams are) reads otherwise in
    a client that honours it: enforce mode answers 502 instead; observe mode passes it, recorded."""
    event = b"data: " + utf7_shifted(json.dumps({"note": LEAK})) + b"\n\n"
    upstream.reply = Reply(events=[event], content_type="text/event-stream; charset=utf-7")
    response = post(guard, upstream, json.dumps({"note": "hello"}).encode(), path="/events")
    assert response.status_code == (502 if enforcing(guard) else 200)
    assert (AWS_KEY in response.content.decode("utf-7", "replace")) is not enforcing(guard)
    assert charset_finding(Turns(guard).next())["enforced"] is enforcing(guard)
    # Refused or relayed as it arrived, short: never taken for a body over the inspection cap.
    assert not [error for error in last_record(guard)["errors"] if "inspection cap" in error]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_an_event_stream_in_the_charset_its_byte_order_mark_names_is_not_passed_silently(
    guard: Proxy, upstream: FakeUpstream, codec: str
) -> None:
    """No charset declared, but the stream's first bytes are a UTF-16 or UTF-32 byte order mark: the event
    reader (UTF-8) reads none of it. Enforced, nothing of it reaches the agent and the turn is blocked;
    observed, it passes as sent; either way the record says why (never a silent `allowed`)."""
    mark = {"utf-16-be": codecs.BOM_UTF16_BE, "utf-32-be": codecs.BOM_UTF32_BE}.get(codec, b"")
    stream = mark + f"data: {json.dumps({'note': LEAK})}\n\ndata: [DONE]\n\n".encode(codec)
    upstream.reply = Reply(events=[stream[:3], stream[3:]], content_type="text/event-stream")
    try:
        received: bytes | None = post(guard, upstream, b'{"note": "hello"}', path="/events").content
    except httpx.RemoteProtocolError:
        received = None  # cut before its end, so the agent cannot take what it got for all of it
    assert (received is None) is enforcing(guard)
    assert (received is not None and stream in received) is not enforcing(guard)
    assert charset_finding(Turns(guard).next())["enforced"] is enforcing(guard)
    assert last_record(guard)["decision"] == ("blocked" if enforcing(guard) else "allowed")


LATIN_TEXT = "Grüße aus Köln, señor. À bientôt, Ça va?"
LEGIBLE = {
    "latin-1": ("text/plain; charset=iso-8859-1", LATIN_TEXT.encode("latin-1")),
    "windows-1252 json": (
        "application/json; charset=windows-1252",
        json.dumps({"note": LATIN_TEXT}, ensure_ascii=False).encode("cp1252"),
    ),
    "ebcdic": ("text/plain; charset=cp500", LATIN_TEXT.encode("cp500")),
    "utf-16 with a bom": ("text/plain; charset=utf-16", LATIN_TEXT.encode("utf-16")),
}


def test_legitimate_text_in_its_declared_charset_passes_in_every_mode(
    guard: Proxy, upstream: FakeUpstream
) -> None:
    """Latin-1, Windows-1252, EBCDIC or UTF-16 text with letters outside ASCII is read in the charset it
    declares, as every receiver reads it: nothing to refuse, it leaves as sent, with no charset finding."""
    upstream.reply = Reply(body=b'{"ok": true}')
    turns = Turns(guard)
    for name, (content_type, body) in LEGIBLE.items():
        response = post(guard, upstream, body, path="/upload", headers={"content-type": content_type})
        assert response.status_code == 200, name
        assert upstream.received[-1].body == body, name
        assert not {f["rule"] for f in turns.next()} & {"inspection.charset", "inspection.part_encoding"}, (
            name
        )


@pytest.mark.parametrize("name", sorted(LEGIBLE))
def test_a_redacted_answer_goes_back_in_its_charset(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """An answer in a declared charset with a key among letters outside ASCII is redacted and written back
    in the charset it came in, its Content-Type unchanged and true."""
    proxy = _agent(shared_proxy(mode="enforce"), monkeypatch)
    content_type, _ = LEGIBLE[name]
    charset = content_type.rpartition("charset=")[2]
    upstream.reply = Reply(body=f"{LATIN_TEXT} {LEAK}".encode(charset), content_type=content_type)
    response = post(proxy, upstream, json.dumps({"note": "hello"}).encode(), path="/download")
    assert response.status_code == 200 and response.headers["content-type"] == content_type
    received = response.content.decode(charset)
    assert LATIN_TEXT in received and AWS_KEY not in received and "[REDACTED" in received
    assert all(f["enforced"] for f in secrets_in(Turns(proxy).next()))


def test_a_utf16_json_answer_is_redacted_in_utf16_for_the_sdk(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat completion answered in UTF-16 JSON (which JSON readers detect from its first bytes, and the
    OpenAI SDK reads): the key is redacted, the answer stays UTF-16 under the label it came with."""
    proxy = _agent(shared_proxy(mode="enforce"), monkeypatch)
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{LATIN_TEXT} {LEAK}"},
                "finish_reason": "stop",
            }
        ],
    }
    body = json.dumps(completion, ensure_ascii=False).encode("utf-16")
    upstream.reply = Reply(body=body, content_type="application/json; charset=utf-16")
    client = openai_client(upstream)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    answer = raw.parse().choices[0].message.content or ""
    assert LATIN_TEXT in answer and AWS_KEY not in answer and "[REDACTED" in answer
    assert raw.http_response.content.startswith(b"\xff\xfe") or raw.http_response.content.startswith(
        b"\xfe\xff"
    )
    assert raw.http_response.headers["content-type"] == "application/json; charset=utf-16"
    assert all(f["enforced"] for f in secrets_in(Turns(proxy).next()))


READ_EVERY_WAY = {
    "latin-1 declared, valid utf-8": ("text/plain; charset=iso-8859-1", LATIN_TEXT.encode()),
    "utf-16 without a bom": ("text/plain; charset=utf-16", LATIN_TEXT.encode("utf-16-le")),
    "two charsets": ("text/plain; charset=iso-8859-1; charset=cp1252", LATIN_TEXT.encode("cp1252")),
}


@pytest.mark.parametrize("name", sorted(READ_EVERY_WAY))
def test_text_read_otherwise_in_its_charset_passes_where_no_reading_finds_anything(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A body whose declared charset reads otherwise than UTF-8 is read every way in enforce mode: clean
    text leaves as sent (its charset finding not enforced); the same with a key in it is refused (415),
    whichever reading shows the key."""
    guard = _agent(shared_proxy(mode="enforce"), monkeypatch)
    upstream.reply = Reply(body=b'{"ok": true}')
    content_type, body = READ_EVERY_WAY[name]
    turns = Turns(guard)
    response = post(guard, upstream, body, path="/upload", headers={"content-type": content_type})
    assert response.status_code == 200, (response.text, last_record(guard))
    assert upstream.received[-1].body == body
    assert charset_finding(turns.next())["enforced"] is False
    leaking = f"{LATIN_TEXT} {LEAK}".encode(_wire_charset(content_type))
    before = len(upstream.received)
    response = post(guard, upstream, leaking, path="/upload", headers={"content-type": content_type})
    assert response.status_code == 415 and len(upstream.received) == before
    findings = turns.next()
    assert charset_finding(findings)["enforced"] is True and secrets_in(findings)


def test_utf7_is_refused_where_enforced_however_clean(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTF-7's decoders read it differently from one another: no reading is sound, so it stays refused."""
    guard = _agent(shared_proxy(mode="enforce"), monkeypatch)
    headers = {"content-type": "text/plain; charset=utf-7"}
    response = post(guard, upstream, b"Gr+APw-", path="/upload", headers=headers)
    assert response.status_code == 415 and upstream.received == []
    finding = charset_finding(Turns(guard).next())
    assert finding["enforced"] and "decoders read differently" in finding["signal"]


@pytest.mark.parametrize("name", sorted(READ_EVERY_WAY))
def test_an_answer_read_otherwise_in_its_charset_passes_where_no_reading_finds_anything(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    guard = _agent(shared_proxy(mode="enforce"), monkeypatch)
    content_type, body = READ_EVERY_WAY[name]
    upstream.reply = Reply(body=body, content_type=content_type)
    turns = Turns(guard)
    response = post(guard, upstream, json.dumps({"note": "hello"}).encode(), path="/download")
    assert response.status_code == 200 and response.content == body
    assert charset_finding(turns.next())["enforced"] is False
    upstream.reply = Reply(
        body=body + b" " + LEAK.encode(_wire_charset(content_type)), content_type=content_type
    )
    response = post(guard, upstream, json.dumps({"note": "hello"}).encode(), path="/download")
    assert response.status_code == 502 and AWS_KEY not in response.text
    findings = turns.next()
    assert charset_finding(findings)["enforced"] is True and secrets_in(findings)


def _wire_charset(content_type: str) -> str:
    """The codec the test's body for ``content_type`` is written in."""
    charset = content_type.rpartition("charset=")[2]
    return {"utf-16": "utf-16-le", "iso-8859-1": "utf-8"}.get(charset, charset)


def test_an_answer_read_as_an_event_stream_is_still_read_in_its_charset(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that reads as an event stream in UTF-8 but declares UTF-16 (without a byte order mark),
    in which it reads otherwise, is not passed on unread in its charset: refused where enforced."""
    guard = _agent(shared_proxy(mode="enforce"), monkeypatch)
    body = b"data: hello\n\n" + LEAK.encode("utf-16-le")
    upstream.reply = Reply(body=body, content_type="text/plain; charset=utf-16")
    response = post(guard, upstream, json.dumps({"note": "hello"}).encode(), path="/download")
    assert response.status_code == 502 and AWS_KEY not in response.text
    assert charset_finding(Turns(guard).next())["enforced"] is True


MISLABELLED_JSON = {
    "utf-16 labelled latin-1": ("application/json; charset=iso-8859-1", "utf-16"),
    "utf-32 labelled windows-1252": ("application/json; charset=windows-1252", "utf-32"),
    "utf-16 without a mark labelled latin-1": ("application/json; charset=iso-8859-1", "utf-16-le"),
}


@pytest.mark.parametrize("name", sorted(MISLABELLED_JSON))
def test_json_in_utf16_under_another_label_carries_no_key_out(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A JSON reader handed the bytes (the upstream's ``json.loads``, Starlette's ``request.json()``)
    detects UTF-16 and UTF-32 itself and ignores a Latin-1 label: the key it would read there never
    leaves, and the record names it."""
    guard = _agent(shared_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    content_type, codec = MISLABELLED_JSON[name]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": LEAK}]}).encode(codec)
    post(guard, upstream, body, headers={"content-type": content_type})
    assert all(AWS_KEY not in json.dumps(json.loads(sent.body)) for sent in upstream.received)
    assert secrets_in(Turns(guard).next())


@pytest.mark.parametrize("name", sorted(MISLABELLED_JSON))
def test_a_tool_call_in_utf16_json_under_another_label_does_not_reach_the_sdk(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The OpenAI SDK reads a completion's JSON from its bytes, UTF-16 whatever the label says: a
    destructive call in it is withheld as in any completion (or the answer refused), never delivered."""
    guard = _agent(shared_proxy(mode="enforce"), monkeypatch)
    content_type, codec = MISLABELLED_JSON[name]
    drop = Reply(tool_calls=[ToolCallReply("drop_table", {"table": "users"})])
    upstream.reply = Reply(body=json.dumps(openai_chat_json(drop)).encode(codec), content_type=content_type)
    try:
        completion = openai_client(upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "tidy up"}]
        )
    except openai.APIStatusError as refused:
        assert refused.status_code == 502
    else:
        assert not completion.choices[0].message.tool_calls
    assert "drop_table" in json.dumps(last_record(guard)["findings"])
