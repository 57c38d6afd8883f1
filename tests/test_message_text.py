"""The model's words a realtime API's server messages carry (``proxy.dialects.message_text``)."""

from __future__ import annotations

import json
from typing import Any

from proxy.detectors import links
from proxy.dialects.message_text import MessageText, may_hold_words, read_message

AT = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}


def delta(text: str, kind: str = "response.output_text.delta") -> dict[str, Any]:
    return {"type": kind, "event_id": "event_9", **AT, "delta": text}


def docs_only(host: str, port: int = 443) -> bool:
    return host == "docs.example"


def link_filters() -> MessageText:
    def make(where: str) -> links.LinkFilter:
        return links.LinkFilter(docs_only, where)

    return MessageText(make, make)


def test_the_model_words_of_each_realtime_and_live_shape_are_read() -> None:
    assistant = {"role": "assistant", "content": [{"type": "output_audio", "transcript": "Hi."}]}
    read = {
        "delta": read_message(delta("Hel")),
        "transcript delta": read_message(delta("Hel", "response.audio_transcript.delta")),
        "done": read_message({"type": "response.output_text.done", **AT, "text": "Hello"}),
        "part": read_message({"type": "response.content_part.done", **AT, "part": {"text": "Hello"}}),
        "item": read_message({"type": "conversation.item.done", "item": assistant}),
        "response": read_message({"type": "response.done", "response": {"id": "r", "output": [assistant]}}),
        "live": read_message({"server_content": {"model_turn": {"parts": [{"text": "Hi"}]}}}),
        "live spoken": read_message({"serverContent": {"outputTranscription": {"text": "Hi"}}}),
    }
    places = {name: [piece.steps for piece in reading.pieces] for name, reading in read.items()}
    assert places == {
        "delta": [("delta",)],
        "transcript delta": [("delta",)],
        "done": [("text",)],
        "part": [("part", "text")],
        "item": [("item", "content", 0, "transcript")],
        "response": [("response", "output", 0, "content", 0, "transcript")],
        "live": [("server_content", "model_turn", "parts", 0, "text")],
        "live spoken": [("serverContent", "outputTranscription", "text")],
    }
    assert read["delta"].pieces[0].channel != read["transcript delta"].pieces[0].channel
    assert read["done"].ends == [read["delta"].pieces[0].channel]
    assert read["response"].ends == [("r",)]


def test_words_that_are_not_the_model_s_are_not_read() -> None:
    """A user's item, its input transcription, audio, a call's arguments: none is the model's words."""
    user = {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    quiet = [
        {"type": "conversation.item.created", "item": user},
        {"type": "conversation.item.input_audio_transcription.completed", "transcript": "Hi"},
        {"type": "response.output_audio.delta", **AT, "delta": "UklGRg=="},
        {"type": "response.function_call_arguments.delta", **AT, "delta": '{"text": "x"}'},
        {"serverContent": {"inputTranscription": {"text": "Hi"}}},
    ]
    assert [read_message(message).pieces for message in quiet] == [[]] * len(quiet)
    assert not may_hold_words(json.dumps(quiet[2]))
    assert may_hold_words(json.dumps(delta("x"))) and may_hold_words(
        '{"serverContent":{"turnComplete":true}}'
    )


def test_a_link_split_over_deltas_is_held_and_its_rest_sent_before_the_done() -> None:
    words = link_filters()
    sent = [
        words.filter(delta(piece), f"websocket[{n}]")
        for n, piece in enumerate(["See ![x](https://ev", "il.example/a.png) n", "ow, see [docs"])
    ]
    assert [result.document["delta"] for result in sent] == ["See ", " n", "ow, see "]
    done = words.filter({"type": "response.output_text.done", **AT, "text": "ignored here"}, "websocket[3]")
    assert done.before == [({k: v for k, v in delta("[docs").items() if k != "event_id"}, None)]
    (ended,) = done.ended
    assert (ended.where, ended.received) == (
        "websocket[0].delta",
        "See ![x](https://evil.example/a.png) now, see [docs",
    )
    assert ended.sent == "See  now, see [docs"


def test_a_live_turn_ending_with_its_last_text_sends_what_was_held_with_it() -> None:
    words = link_filters()
    first = words.filter({"serverContent": {"modelTurn": {"parts": [{"text": "Read [the"}]}}}, "websocket[1]")
    assert first.document["serverContent"]["modelTurn"]["parts"][0]["text"] == "Read "
    last = {
        "serverContent": {
            "modelTurn": {"parts": [{"text": " docs](https://docs.example/a)"}]},
            "turnComplete": True,
        }
    }
    ended = words.filter(last, "websocket[2]")
    assert ended.before == []
    assert (
        ended.document["serverContent"]["modelTurn"]["parts"][0]["text"]
        == "[the docs](https://docs.example/a)"
    )
    assert [(e.received, e.sent) for e in ended.ended] == [("Read [the docs](https://docs.example/a)",) * 2]
