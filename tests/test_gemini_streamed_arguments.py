"""A Gemini call whose arguments stream over the parts of several chunks of ``streamGenerateContent``
(Vertex AI's ``streamFunctionCallArguments``: each piece's ``partialArgs`` a value at its JSON path, a
string continued by the next piece at the same path, the call ending at the piece whose ``willContinue``
is not true), joined as the Live API's are: the call is recorded and decided whole, its pieces held until
its arguments end where the gate holds it, then sent as they came or withheld for its notice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.dialects.gemini import Gemini
from proxy.dialects.stream import StreamFilters
from tests.test_stream_tool_gate import _inspector
from tests.test_streaming import payloads, run

CREDENTIALS = ["/home/u/.a", "ws/credentials"]


def _chunk(*parts: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    return b"data: " + json.dumps({"candidates": [candidate]}).encode() + b"\n\n"


def _piece(path: str, text: str, *, more: bool = True, name: str = "") -> dict[str, Any]:
    call = {"partialArgs": [{"jsonPath": path, "stringValue": text}], "willContinue": more}
    return {"functionCall": {"name": name, **call} if name else call}


def _streamed(name: str, path: str, texts: list[str], *, closing: bool = False) -> list[bytes]:
    """The call's name in a piece of its own, then a piece a text; its end in the last, or (``closing``)
    in an empty call after them, as a server may close it."""
    chunks = [_chunk({"functionCall": {"name": name, "willContinue": True}})]
    for position, text in enumerate(texts):
        chunks.append(_chunk(_piece(path, text, more=closing or position < len(texts) - 1)))
    if closing:
        chunks.append(_chunk({"functionCall": {}}))
    return chunks


def _stream(*chunks: bytes, text: str = "Reading.") -> bytes:
    return _chunk({"text": text}) + b"".join(chunks) + _chunk({"text": ""}, finish="STOP")


def _enforced() -> StreamFilters:
    return _inspector("enforce").stream_filters()


def _recorded(stream: bytes) -> list[tuple[str, Any]]:
    session = Gemini(streaming=True).stream_session()
    run(session, stream)
    return [(call.name, json.loads(call.arguments)) for call in session.completion.tool_calls]


def _sent_parts(output: bytes) -> list[dict[str, Any]]:
    return [
        part
        for _, payload in payloads(output)
        for candidate in payload.get("candidates", [])
        for part in candidate.get("content", {}).get("parts", [])
    ]


@pytest.mark.parametrize("closing", [False, True], ids=["ended by its last piece", "ended by an empty call"])
def test_a_streamed_call_is_recorded_joined(closing: bool) -> None:
    stream = _stream(*_streamed("read_file", "$.path", CREDENTIALS, closing=closing))
    assert _recorded(stream) == [("read_file", {"path": "/home/u/.aws/credentials"})]


def test_pieces_at_indexes_are_recorded_in_the_list_a_client_grows() -> None:
    stream = _stream(*_streamed("read_many_files", "$.paths[1]", ["docs/a", ".md"]))
    assert _recorded(stream) == [("read_many_files", {"paths": [None, "docs/a.md"]})]


def test_two_streamed_calls_one_after_the_other_are_recorded_apart() -> None:
    first = _streamed("read_file", "$.path", ["READ", "ME.md"])
    second = _streamed("read_file", "$.path", ["docs/", "x.md"])
    assert _recorded(_stream(*first, *second)) == [
        ("read_file", {"path": "README.md"}),
        ("read_file", {"path": "docs/x.md"}),
    ]


@pytest.mark.parametrize("closing", [False, True], ids=["ended by its last piece", "ended by an empty call"])
def test_a_streamed_credential_read_is_withheld_where_enforced(closing: bool) -> None:
    output = run(
        Gemini(streaming=True).stream_session(_enforced()),
        _stream(*_streamed("read_file", "$.path", CREDENTIALS, closing=closing)),
    )
    sent = json.dumps(_sent_parts(output))
    assert "functionCall" not in sent and "/home/u" not in sent and "ws/credentials" not in sent
    assert "`read_file` was withheld" in sent and "credential material" in sent


def test_a_streamed_credential_read_at_a_list_s_index_is_withheld_where_enforced() -> None:
    stream = _stream(*_streamed("read_many_files", "$.paths[0]", CREDENTIALS))
    sent = json.dumps(_sent_parts(run(Gemini(streaming=True).stream_session(_enforced()), stream)))
    assert "functionCall" not in sent and "/home/u" not in sent


def test_a_streamed_destructive_command_is_withheld_where_enforced() -> None:
    stream = _stream(*_streamed("run_shell_command", "$.command", ["rm -r", "f ~"]))
    sent = json.dumps(_sent_parts(run(Gemini(streaming=True).stream_session(_enforced()), stream)))
    assert "functionCall" not in sent and "rm -r" not in sent and "was withheld" in sent


def test_a_streamed_everyday_read_goes_on_as_it_came_once_decided() -> None:
    """Held from its name (a reading tool, where credential theft is enforced) until its last piece,
    then every piece is sent as it came, in order."""
    chunks = _streamed("read_file", "$.path", ["READ", "ME.md"])
    stream = _stream(*chunks)
    sent = _sent_parts(run(Gemini(streaming=True).stream_session(_enforced()), stream))
    calls = [part for part in sent if "functionCall" in part]
    assert calls == [part for chunk in chunks for part in _sent_parts(chunk)]
    assert "was withheld" not in json.dumps(sent)


def test_a_streamed_call_still_open_when_the_stream_ends_is_decided_on_what_it_got() -> None:
    chunks = [*_streamed("read_file", "$.path", CREDENTIALS)[:-1], _chunk(_piece("$.path", CREDENTIALS[1]))]
    stream = _chunk({"text": "Reading."}) + b"".join(chunks)
    output = run(Gemini(streaming=True).stream_session(_enforced()), stream)
    sent = json.dumps(_sent_parts(output))
    assert "functionCall" not in sent and "/home/u" not in sent and "was withheld" in sent


@pytest.mark.parametrize(
    "stray",
    [
        _piece("$.path", "x", name="write_file"),
        _piece("$.paths[-1]", "x"),
        {"functionCall": {"partialArgs": [{"jsonPath": "$.path", "stringValue": "x"}], "partial_args": []}},
        _piece("$.path[0]", "x"),
    ],
    ids=["another tool named", "a negative index", "a field both ways", "an index where a string is"],
)
def test_a_piece_no_reading_places_withholds_the_call_streaming(stray: dict[str, Any]) -> None:
    chunks = _streamed("read_file", "$.path", ["READ", "ME.md"])
    stream = _stream(*chunks[:2], _chunk(stray), *chunks[2:])
    session = Gemini(streaming=True).stream_session(_enforced())
    sent = json.dumps(_sent_parts(run(session, stream)))
    assert "functionCall" not in sent and "was withheld" in sent
    assert session.ambiguities


def test_a_piece_continuing_no_call_is_not_sent() -> None:
    stream = _stream(_chunk(_piece("$.path", CREDENTIALS[1], more=False)))
    sent = json.dumps(_sent_parts(run(Gemini(streaming=True).stream_session(_enforced()), stream)))
    assert "functionCall" not in sent and "credentials" not in sent


def test_a_streamed_call_is_held_only_where_the_gate_holds_it() -> None:
    """A tool neither reading nor destructive streams on from its name: each piece goes as it comes, its
    strings as the argument filter releases them, which join to what was streamed."""
    chunks = _streamed("get_weather", "$.city", ["Os", "lo"])
    session = Gemini(streaming=True).stream_session(_enforced())
    named = _sent_parts(session.feed(chunks[0]))
    assert named == [{"functionCall": {"name": "get_weather", "willContinue": True}}]
    rest = _sent_parts(b"".join(session.feed(chunk) for chunk in chunks[1:]) + session.finish())
    assert _joined_strings(rest) == {"$.city": "Oslo"}
    assert rest[-1]["functionCall"]["willContinue"] is False


def _joined_strings(parts: list[dict[str, Any]]) -> dict[str, str]:
    """The strings the pieces among ``parts`` give, joined by their path as a client joins them."""
    joined: dict[str, str] = {}
    for part in parts:
        for partial in part.get("functionCall", {}).get("partialArgs", []):
            joined[partial["jsonPath"]] = joined.get(partial["jsonPath"], "") + partial["stringValue"]
    return joined


AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"


@pytest.mark.parametrize("name", ["get_weather", "read_file"], ids=["streamed on", "held"])
def test_a_key_cut_over_two_pieces_reaches_the_agent_redacted(name: str) -> None:
    stream = _stream(*_streamed(name, "$.text", [f"upload {AWS_KEY[:6]}", f"{AWS_KEY[6:]} now"]))
    session = Gemini(streaming=True).stream_session(_enforced())
    sent = _sent_parts(run(session, stream))
    assert _joined_strings(sent) == {"$.text": "upload [REDACTED:aws-access-key-id] now"}
    assert AWS_KEY[:6] not in json.dumps(sent) and AWS_KEY[6:] not in json.dumps(sent)


def test_a_call_streamed_in_a_json_array_of_chunks_is_read_joined_and_dropped_whole() -> None:
    """``streamGenerateContent`` without ``alt=sse`` answers the chunks as one JSON array: the call is read
    joined from them, and dropping it drops every piece."""
    chunks = [payload for _, payload in payloads(_stream(*_streamed("read_file", "$.path", CREDENTIALS)))]
    dialect = Gemini(streaming=True)
    body = json.dumps(chunks).encode()
    (call,) = dialect.parse_response(body).tool_calls
    assert (call.name, json.loads(call.arguments)) == ("read_file", {"path": "/home/u/.aws/credentials"})
    rewritten = dialect.rewrite_response(body, lambda text: text, {call.where}, "withheld").decode()
    assert "functionCall" not in rewritten and "/home/u" not in rewritten and "withheld" in rewritten
