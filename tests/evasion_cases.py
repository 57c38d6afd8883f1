"""Crafted upstream answers that try to get a secret past inline redaction: one per channel, encoding
and framing an upstream (or a model) could use, for every dialect, as JSON bodies and as event streams.

Each case is the raw bytes the fake upstream sends; ``tests/test_evasion.py`` drives them through a real
egressguard in enforce mode with the official SDKs and checks the secret never reaches the client.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

AWS = "AKIAQWERTY234567ABCD"
GITHUB = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"


@dataclass(frozen=True)
class Case:
    id: str
    dialect: str
    secret: str
    body: bytes | None = None
    events: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    whole: bool = True
    """No piece of the secret reaches the client; False for a secret split across fields that are not
    held back, where the part sent before its completion already left."""

    @property
    def stream(self) -> bool:
        return self.events is not None


def escaped(text: str, every: int = 1) -> str:
    """``text`` with every ``every``-th character spelled as a JSON \\u escape."""
    return "".join(f"\\u{ord(char):04x}" if index % every == 0 else char for index, char in enumerate(text))


NESTED_ESCAPED = json.dumps({"k": "SECRET"}).replace("SECRET", escaped(AWS, 2))
"""A JSON document inside a string, its secret written as \\u escapes: decoded twice by a client."""
NESTED_ESCAPED_CALL = {"functionCall": {"name": "lookup", "args": {"payload": NESTED_ESCAPED}}}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def sse(data: Any, event: str | None = None) -> bytes:
    """One event; ``data`` given as a string is sent as it is (crafted JSON text)."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def split(text: str, *cuts: int) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


# -- Anthropic ------------------------------------------------------------------------------------------


def anthropic_message(content: list[Any], **extra: Any) -> bytes:
    return dumps(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 9},
            **extra,
        }
    )


def anthropic_events(*middle: Any, start_content: list[Any] | None = None) -> list[bytes]:
    """A message stream around ``middle`` (event payloads, or crafted data strings)."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": start_content or [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
    events = [sse(start, "message_start")]
    for payload in middle:
        name = json.loads(payload)["type"] if isinstance(payload, str) else payload["type"]
        events.append(sse(payload, name))
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def block(index: int, content_block: dict[str, Any], *deltas: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": index, "content_block": content_block},
        *({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def text_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return block(
        index, {"type": "text", "text": ""}, *({"type": "text_delta", "text": piece} for piece in pieces)
    )


def thinking_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return block(
        index,
        {"type": "thinking", "thinking": "", "signature": ""},
        *({"type": "thinking_delta", "thinking": piece} for piece in pieces),
        {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxDYuJD"},
    )


def json_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return block(
        index,
        {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {}},
        *({"type": "input_json_delta", "partial_json": piece} for piece in pieces),
    )


ANTHROPIC_JSON = [
    Case(
        "thinking-block",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {"type": "thinking", "thinking": f"The key is {AWS}.", "signature": "EqQBCgIYAhIM"},
                {"type": "text", "text": "Done."},
            ]
        ),
    ),
    Case(
        "redacted-thinking-data",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {"type": "redacted_thinking", "data": f"opaque {AWS} opaque"},
                {"type": "text", "text": "Done."},
            ]
        ),
    ),
    Case(
        "thinking-signature",
        "anthropic",
        GITHUB,
        anthropic_message(
            [
                {"type": "thinking", "thinking": "hmm", "signature": GITHUB},
                {"type": "text", "text": "Done."},
            ]
        ),
    ),
    Case(
        "split-across-text-blocks",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {"type": "text", "text": f"The key is {AWS[:9]}"},
                {"type": "text", "text": f"{AWS[9:]} as asked."},
            ]
        ),
    ),
    Case(
        "split-thinking-to-text",
        "anthropic",
        GITHUB,
        anthropic_message(
            [
                {"type": "thinking", "thinking": f"I will print {GITHUB[:20]}", "signature": "EqQB"},
                {"type": "text", "text": f"{GITHUB[20:]}"},
            ]
        ),
    ),
    Case(
        "split-across-three-blocks",
        "anthropic",
        GITHUB,
        anthropic_message(
            [
                {"type": "text", "text": GITHUB[:10]},
                {"type": "text", "text": GITHUB[10:25]},
                {"type": "text", "text": GITHUB[25:]},
            ]
        ),
    ),
    Case(
        "unknown-block-type",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {"type": "mystery_block", "payload": {"deep": [f"x {AWS} y"]}},
                {"type": "text", "text": "Done."},
            ]
        ),
    ),
    Case(
        "unknown-top-level-field",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": "Hi."}], x_debug=AWS),
    ),
    Case(
        "secret-as-key",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": "Hi."}], metadata={AWS: 1}),
    ),
    Case(
        "citation-cited-text",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {
                    "type": "text",
                    "text": "See the doc.",
                    "citations": [
                        {
                            "type": "char_location",
                            "cited_text": f"key={AWS}",
                            "document_index": 0,
                            "document_title": "env",
                            "start_char_index": 0,
                            "end_char_index": 24,
                        }
                    ],
                },
            ]
        ),
    ),
    Case(
        "stop-sequence",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": "Hi."}], stop_sequence=AWS),
    ),
    Case(
        "tool-input-nested-json-escapes",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "lookup",
                    "input": {"payload": json.dumps({"k": AWS}).replace("AKIA", "\\u0041KIA")},
                },
            ]
        ),
    ),
    Case(
        "text-escaped-in-raw-body",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": "KEYPLACE"}]).replace(b"KEYPLACE", escaped(AWS).encode()),
    ),
    Case(
        "lone-surrogate-elsewhere",
        "anthropic",
        AWS,
        anthropic_message(
            [{"type": "text", "text": f"The key is {AWS}."}, {"type": "text", "text": "LONE"}]
        ).replace(b"LONE", b"\\ud800"),
    ),
    Case(
        "invalid-utf8-byte",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": f"bad BYTE then {AWS}."}]).replace(b"BYTE", b"\xff\xfe"),
    ),
    Case(
        "field-name-case",
        "anthropic",
        AWS,
        anthropic_message([{"type": "text", "text": "Hi.", "Text": AWS, "TEXT": {"Value": AWS}}]),
    ),
]

ANTHROPIC_SSE = [
    Case(
        "thinking-delta-split",
        "anthropic",
        AWS,
        events=anthropic_events(
            *thinking_block(0, "The key is ", AWS[:5], AWS[5:13], AWS[13:], " ok"), *text_block(1, "Done.")
        ),
    ),
    Case(
        "thinking-start-content",
        "anthropic",
        AWS,
        events=anthropic_events(
            *block(0, {"type": "thinking", "thinking": f"key {AWS}", "signature": ""}),
            *text_block(1, "Done."),
        ),
    ),
    Case(
        "signature-delta",
        "anthropic",
        GITHUB,
        events=anthropic_events(
            *block(
                0,
                {"type": "thinking", "thinking": "", "signature": ""},
                {"type": "thinking_delta", "thinking": "hmm"},
                {"type": "signature_delta", "signature": GITHUB},
            ),
            *text_block(1, "Done."),
        ),
    ),
    Case(
        "redacted-thinking-start",
        "anthropic",
        AWS,
        events=anthropic_events(
            *block(0, {"type": "redacted_thinking", "data": f"x {AWS} x"}), *text_block(1, "Done.")
        ),
    ),
    Case(
        "message-start-content",
        "anthropic",
        AWS,
        events=anthropic_events(
            *text_block(0, "Done."), start_content=[{"type": "text", "text": f"early {AWS}"}]
        ),
    ),
    Case(
        "split-across-text-blocks",
        "anthropic",
        AWS,
        events=anthropic_events(
            *text_block(0, "The key is ", AWS[:8]), *text_block(1, AWS[8:], " as asked.")
        ),
    ),
    Case(
        "split-across-blocks-in-pieces",
        "anthropic",
        GITHUB,
        events=anthropic_events(
            *text_block(0, "token: ", GITHUB[:6], GITHUB[6:17]),
            *text_block(1, GITHUB[17:30], GITHUB[30:], " end"),
        ),
    ),
    Case(
        "split-thinking-to-text",
        "anthropic",
        AWS,
        events=anthropic_events(*thinking_block(0, "print ", AWS[:12]), *text_block(1, AWS[12:], " there.")),
    ),
    Case(
        "input-json-escapes-split",
        "anthropic",
        AWS,
        events=anthropic_events(
            *json_block(0, '{"key": "', escaped(AWS[:6], 2), escaped(AWS[6:])[:9], escaped(AWS[6:])[9:], '"}')
        ),
    ),
    Case(
        "input-json-nested-escapes",
        "anthropic",
        AWS,
        events=anthropic_events(
            *json_block(0, '{"payload": "{\\"k\\": \\"', AWS[:4].replace("A", "\\\\u0041"), AWS[4:], '\\"}"}')
        ),
    ),
    Case(
        "input-json-slash-escapes",
        "anthropic",
        GITHUB,
        events=anthropic_events(
            *json_block(0, '{"k": "', escaped(GITHUB[:20], 3), escaped(GITHUB[20:], 4), '"}')
        ),
    ),
    Case(
        "unknown-event-type",
        "anthropic",
        AWS,
        events=anthropic_events(
            *text_block(0, "Hi."), {"type": "mystery_delta", "delta": {"text": f"psst {AWS}"}}
        ),
    ),
    Case(
        "unknown-delta-type",
        "anthropic",
        AWS,
        events=anthropic_events(
            *block(
                0,
                {"type": "text", "text": ""},
                {"type": "text_delta", "text": "See "},
                {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": AWS}},
            )
        ),
    ),
    Case(
        "unknown-field-split-across-events",
        "anthropic",
        GITHUB,
        events=anthropic_events(
            *block(
                0,
                {"type": "text", "text": ""},
                {"type": "text_delta", "text": "a", "note": GITHUB[:15]},
                {"type": "text_delta", "text": "b", "note": GITHUB[15:]},
            )
        ),
        whole=False,
    ),
    Case(
        "lone-surrogate-in-event",
        "anthropic",
        AWS,
        events=anthropic_events(
            '{"type": "content_block_start", "index": 0, '
            '"content_block": {"type": "text", "text": "\\ud800"}}',
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"key {AWS} "},
            },
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\\udfff '
            + AWS
            + '"}}',
            {"type": "content_block_stop", "index": 0},
        ),
    ),
    Case(
        "surrogate-pair-split-across-events",
        "anthropic",
        AWS,
        events=anthropic_events(
            '{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\\ud83d"}}',
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\\ude00 '
            + AWS
            + '"}}',
            {"type": "content_block_stop", "index": 0},
        ),
    ),
    Case(
        "error-event-message",
        "anthropic",
        AWS,
        events=[
            sse({"type": "error", "error": {"type": "overloaded_error", "message": f"dump {AWS}"}}, "error")
        ],
    ),
    Case(
        "message-delta-stop-sequence",
        "anthropic",
        AWS,
        events=[
            *anthropic_events(*text_block(0, "Hi."))[:-2],
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "stop_sequence", "stop_sequence": AWS},
                    "usage": {"output_tokens": 2},
                },
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ],
    ),
]


# -- OpenAI Chat Completions ----------------------------------------------------------------------------


def chat_message(message: dict[str, Any], **extra: Any) -> bytes:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": None, **message},
        "finish_reason": "stop",
        "logprobs": extra.pop("logprobs", None),
    }
    return dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            **extra,
        }
    )


def chat_chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    if "logprobs" in extra:
        choice["logprobs"] = extra.pop("logprobs")
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [choice],
        **extra,
    }


CHUNK_HEAD = (
    '{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", '
    '"choices": [{"index": 0, "delta": {"content": "'
)
"""A crafted chunk's text up to its content's first character."""


def chat_events(*chunks: Any) -> list[bytes]:
    return [sse(chunk) for chunk in (*chunks, chat_chunk(finish="stop"))] + [b"data: [DONE]\n\n"]


def token(text: str) -> dict[str, Any]:
    return {"token": text, "logprob": -0.1, "bytes": list(text.encode()), "top_logprobs": []}


def call_delta(arguments: str, first: bool = False) -> dict[str, Any]:
    call: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
    if first:
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": arguments},
        }
    return {"tool_calls": [call]}


CHAT_JSON = [
    Case(
        "reasoning-content",
        "openai_chat",
        AWS,
        chat_message({"content": "Done.", "reasoning_content": f"key {AWS}"}),
    ),
    Case("reasoning", "openai_chat", AWS, chat_message({"content": "Done.", "reasoning": f"key {AWS}"})),
    Case(
        "split-reasoning-to-content",
        "openai_chat",
        AWS,
        chat_message({"reasoning_content": f"print {AWS[:10]}", "content": f"{AWS[10:]} now"}),
    ),
    Case(
        "content-as-parts",
        "openai_chat",
        AWS,
        chat_message({"content": [{"type": "text", "text": f"key {AWS}"}]}),
    ),
    Case(
        "content-parts-split",
        "openai_chat",
        GITHUB,
        chat_message(
            {"content": [{"type": "text", "text": GITHUB[:11]}, {"type": "text", "text": GITHUB[11:]}]}
        ),
    ),
    Case("refusal", "openai_chat", AWS, chat_message({"refusal": f"I cannot share {AWS}."})),
    Case(
        "logprob-tokens",
        "openai_chat",
        AWS,
        chat_message(
            {"content": "ok"},
            logprobs={"content": [token("key "), token(AWS[:4]), token(AWS[4:12]), token(AWS[12:])]},
        ),
    ),
    Case(
        "logprob-top-alternatives",
        "openai_chat",
        AWS,
        chat_message(
            {"content": "ok"}, logprobs={"content": [{**token("ok"), "top_logprobs": [token(f"{AWS}")]}]}
        ),
    ),
    Case(
        "arguments-unicode-escapes",
        "openai_chat",
        AWS,
        chat_message(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"k": "' + escaped(AWS, 2) + '"}'},
                    }
                ]
            }
        ),
    ),
    Case(
        "arguments-nested-escapes",
        "openai_chat",
        AWS,
        chat_message(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": json.dumps(
                                {"outer": json.dumps({"inner": "SECRET"}).replace("SECRET", escaped(AWS, 3))}
                            ),
                        },
                    }
                ]
            }
        ),
    ),
    Case(
        "audio-transcript",
        "openai_chat",
        AWS,
        chat_message({"audio": {"id": "a1", "data": "", "expires_at": 1, "transcript": f"say {AWS}"}}),
    ),
    Case(
        "system-fingerprint",
        "openai_chat",
        GITHUB,
        chat_message({"content": "ok"}, system_fingerprint=GITHUB),
    ),
    Case(
        "unknown-choice-field",
        "openai_chat",
        AWS,
        chat_message(
            {
                "content": "ok",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "url": f"https://x.example/{AWS}",
                            "title": "t",
                            "start_index": 0,
                            "end_index": 1,
                        },
                    }
                ],
            }
        ),
    ),
    Case(
        "field-name-case",
        "openai_chat",
        AWS,
        chat_message({"content": "ok", "Content": AWS, "REASONING_CONTENT": AWS}),
    ),
    Case(
        "lone-surrogate-elsewhere",
        "openai_chat",
        AWS,
        chat_message({"content": f"key {AWS}", "name": "LONE"}).replace(b"LONE", b"\\udbff"),
    ),
    Case(
        "invalid-utf8-byte",
        "openai_chat",
        AWS,
        chat_message({"content": f"BYTE {AWS}"}).replace(b"BYTE", b"\xc3\x28"),
    ),
]

CHAT_SSE = [
    Case(
        "reasoning-content-split",
        "openai_chat",
        AWS,
        events=chat_events(
            *(chat_chunk({"reasoning_content": piece}) for piece in split(f"key {AWS} ok", 6, 11, 19)),
            chat_chunk({"content": "Done."}),
        ),
    ),
    Case(
        "reasoning-split",
        "openai_chat",
        GITHUB,
        events=chat_events(
            *(chat_chunk({"reasoning": piece}) for piece in split(GITHUB, 3, 20)),
            chat_chunk({"content": "Done."}),
        ),
    ),
    Case(
        "split-reasoning-to-content",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk({"reasoning_content": f"print {AWS[:7]}"}),
            chat_chunk({"content": AWS[7:]}),
            chat_chunk({"content": " now"}),
        ),
    ),
    Case(
        "content-parts-delta",
        "openai_chat",
        AWS,
        events=chat_events(chat_chunk({"content": [{"type": "text", "text": f"key {AWS}"}]})),
    ),
    Case(
        "content-parts-split",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk({"content": [{"type": "text", "text": AWS[:10]}]}),
            chat_chunk({"content": [{"type": "text", "text": AWS[10:]}]}),
        ),
    ),
    Case(
        "logprob-tokens-split",
        "openai_chat",
        AWS,
        events=chat_events(
            *(
                chat_chunk({"content": "x"}, logprobs={"content": [token(piece)]})
                for piece in split(AWS, 4, 9, 15)
            )
        ),
    ),
    Case(
        "arguments-escapes-split",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk(call_delta('{"k": "', first=True)),
            *(chat_chunk(call_delta(piece)) for piece in split(escaped(AWS), 3, 10, 50)),
            chat_chunk(call_delta('"}')),
        ),
    ),
    Case(
        "arguments-nested-escapes",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk(call_delta('{"o": "{\\"k\\": \\"', first=True)),
            chat_chunk(call_delta(AWS[:5].replace("A", "\\\\u0041").replace("K", "\\\\u004b"))),
            chat_chunk(call_delta(AWS[5:] + '\\"}"}')),
        ),
    ),
    Case(
        "unknown-delta-field-split",
        "openai_chat",
        GITHUB,
        events=chat_events(
            chat_chunk({"content": "a", "x_text": GITHUB[:18]}),
            chat_chunk({"content": "b", "x_text": GITHUB[18:]}),
        ),
        whole=False,
    ),
    Case("field-name-case", "openai_chat", AWS, events=chat_events(chat_chunk({"Content": f"k {AWS}"}))),
    Case(
        "usage-chunk-extra",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk({"content": "ok"}),
            {**chat_chunk(), "choices": [], "usage": {"prompt_tokens": 1, "note": AWS}},
        ),
    ),
    Case(
        "lone-surrogate-in-chunk",
        "openai_chat",
        AWS,
        events=chat_events(CHUNK_HEAD + "\\ud800 " + AWS + '"}, "finish_reason": null}]}'),
    ),
    Case(
        "invalid-utf8-in-chunk",
        "openai_chat",
        AWS,
        events=[
            b"data: " + CHUNK_HEAD.encode() + b"\xff " + AWS.encode() + b'"}, "finish_reason": null}]}\n\n',
            b"data: [DONE]\n\n",
        ],
    ),
    Case(
        "escaped-content-in-raw-chunk",
        "openai_chat",
        AWS,
        events=chat_events(CHUNK_HEAD + escaped(AWS) + '"}, "finish_reason": null}]}'),
    ),
]


# -- OpenAI Responses -----------------------------------------------------------------------------------


def response_body(output: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-4o",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "total_tokens": 2,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
        **extra,
    }


def message_item(*texts: str, annotations: list[Any] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": text, "annotations": annotations or []} for text in texts
        ],
    }


def reasoning_item(summary: list[str], content: list[str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text} for text in summary],
    }
    if content is not None:
        item["content"] = [{"type": "reasoning_text", "text": text} for text in content]
    return item


def responses_events(*middle: dict[str, Any], final_output: list[Any] | None = None) -> list[bytes]:
    events = [
        {"type": "response.created", "response": {**response_body([]), "status": "in_progress"}},
        *middle,
        {"type": "response.completed", "response": response_body(final_output or [])},
    ]
    return [
        sse({**payload, "sequence_number": number}, payload["type"]) for number, payload in enumerate(events)
    ]


def reasoning_stream(kind: str, pieces: list[str], index_field: str) -> list[dict[str, Any]]:
    located = {"item_id": "rs_1", "output_index": 0, index_field: 0}
    return [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"id": "rs_1", "type": "reasoning", "summary": []},
        },
        *({"type": f"response.{kind}.delta", **located, "delta": piece} for piece in pieces),
        {"type": f"response.{kind}.done", **located, "text": "".join(pieces)},
    ]


def text_stream(pieces: list[str], kind: str = "output_text", output_index: int = 0) -> list[dict[str, Any]]:
    located = {"item_id": "msg_1", "output_index": output_index, "content_index": 0}
    key = "refusal" if kind == "refusal" else "text"
    return [
        {
            "type": "response.output_item.added",
            "output_index": output_index,
            "item": {**message_item(), "content": [], "status": "in_progress"},
        },
        *(
            {
                "type": f"response.{kind}.delta",
                **located,
                "delta": piece,
                **({"logprobs": []} if key == "text" else {}),
            }
            for piece in pieces
        ),
        {
            "type": f"response.{kind}.done",
            **located,
            key: "".join(pieces),
            **({"logprobs": []} if key == "text" else {}),
        },
    ]


RESPONSES_JSON = [
    Case(
        "reasoning-summary",
        "openai_responses",
        AWS,
        dumps(response_body([reasoning_item([f"key {AWS}"]), message_item("Done.")])),
    ),
    Case(
        "reasoning-content",
        "openai_responses",
        AWS,
        dumps(response_body([reasoning_item([], [f"key {AWS}"]), message_item("Done.")])),
    ),
    Case(
        "encrypted-content",
        "openai_responses",
        AWS,
        dumps(
            response_body([{**reasoning_item([]), "encrypted_content": f"gAAA {AWS}"}, message_item("Done.")])
        ),
    ),
    Case(
        "annotation-url",
        "openai_responses",
        AWS,
        dumps(
            response_body(
                [
                    message_item(
                        "See it.",
                        annotations=[
                            {
                                "type": "url_citation",
                                "url": f"https://docs.example/{AWS}",
                                "title": AWS,
                                "start_index": 0,
                                "end_index": 3,
                            }
                        ],
                    )
                ]
            )
        ),
    ),
    Case(
        "split-across-parts",
        "openai_responses",
        AWS,
        dumps(response_body([message_item(f"key {AWS[:6]}", f"{AWS[6:]} end")])),
    ),
    Case(
        "split-summary-to-text",
        "openai_responses",
        GITHUB,
        dumps(response_body([reasoning_item([GITHUB[:13]]), message_item(GITHUB[13:])])),
    ),
    Case(
        "arguments-escapes",
        "openai_responses",
        AWS,
        dumps(
            response_body(
                [
                    {
                        "id": "fc_1",
                        "type": "function_call",
                        "status": "completed",
                        "call_id": "call_1",
                        "name": "lookup",
                        "arguments": '{"k": "' + escaped(AWS, 2) + '"}',
                    }
                ]
            )
        ),
    ),
    Case(
        "unknown-output-item",
        "openai_responses",
        AWS,
        dumps(
            response_body([{"id": "x_1", "type": "mystery_call", "result": {"log": AWS}}, message_item("ok")])
        ),
    ),
    Case(
        "instructions-echo",
        "openai_responses",
        AWS,
        dumps(response_body([message_item("ok")], instructions=f"secret is {AWS}")),
    ),
    Case(
        "refusal-part",
        "openai_responses",
        AWS,
        dumps(response_body([{**message_item(), "content": [{"type": "refusal", "refusal": f"no {AWS}"}]}])),
    ),
]

RESPONSES_SSE = [
    Case(
        "reasoning-summary-delta-split",
        "openai_responses",
        AWS,
        events=responses_events(
            *reasoning_stream("reasoning_summary_text", split(f"key {AWS} ok", 5, 12, 20), "summary_index"),
            *text_stream(["Done."], output_index=1),
        ),
    ),
    Case(
        "reasoning-text-delta-split",
        "openai_responses",
        GITHUB,
        events=responses_events(
            *reasoning_stream("reasoning_text", split(GITHUB, 7, 30), "content_index"),
            *text_stream(["Done."], output_index=1),
        ),
    ),
    Case(
        "split-summary-to-text",
        "openai_responses",
        AWS,
        events=responses_events(
            *reasoning_stream("reasoning_summary_text", [f"print {AWS[:8]}"], "summary_index"),
            *text_stream([AWS[8:], " end"], output_index=1),
        ),
    ),
    Case(
        "refusal-delta-split",
        "openai_responses",
        AWS,
        events=responses_events(*text_stream(split(AWS, 10), kind="refusal")),
    ),
    Case(
        "annotation-added",
        "openai_responses",
        AWS,
        events=responses_events(
            *text_stream(["See."]),
            {
                "type": "response.output_text.annotation.added",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "annotation_index": 0,
                "annotation": {
                    "type": "url_citation",
                    "url": f"https://d.example/{AWS}",
                    "title": "t",
                    "start_index": 0,
                    "end_index": 1,
                },
            },
        ),
    ),
    Case(
        "arguments-escapes-split",
        "openai_responses",
        AWS,
        events=responses_events(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "id": "fc_1",
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": "call_1",
                    "name": "lookup",
                    "arguments": "",
                },
            },
            *(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": "fc_1",
                    "output_index": 0,
                    "delta": piece,
                }
                for piece in ['{"k": "', *split(escaped(AWS), 4, 40, 77), '"}']
            ),
            {
                "type": "response.function_call_arguments.done",
                "item_id": "fc_1",
                "output_index": 0,
                "arguments": '{"k": "' + escaped(AWS) + '"}',
            },
        ),
    ),
    Case(
        "unknown-event-split",
        "openai_responses",
        GITHUB,
        events=responses_events(
            *(
                {"type": "response.audio_transcript.delta", "output_index": 0, "item_id": "a", "delta": piece}
                for piece in split(GITHUB, 9, 22)
            )
        ),
        whole=False,
    ),
    Case(
        "only-in-final-response",
        "openai_responses",
        AWS,
        events=responses_events(*text_stream(["Hello."]), final_output=[message_item(f"Hello. {AWS}")]),
    ),
    Case(
        "lone-surrogate",
        "openai_responses",
        AWS,
        events=[
            *responses_events(*text_stream(["ok"]))[:-1],
            sse(
                '{"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, '
                '"content_index": 0, "delta": "\\udc00 ' + AWS + '", "sequence_number": 99}',
                "response.output_text.delta",
            ),
            *responses_events()[-1:],
        ],
    ),
]


# -- Gemini ---------------------------------------------------------------------------------------------


def gemini_body(parts: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0, **extra}
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        "modelVersion": "gemini-2.5-flash",
    }


def gemini_chunks(*chunks: list[Any]) -> list[bytes]:
    """A stream of chunks, the last one finishing the candidate."""
    events = []
    for number, parts in enumerate(chunks, 1):
        body = gemini_body(parts)
        if number < len(chunks):
            del body["candidates"][0]["finishReason"]
        events.append(sse(body))
    return events


GEMINI_JSON = [
    Case(
        "thought-part",
        "gemini",
        AWS,
        dumps(gemini_body([{"text": f"key {AWS}", "thought": True}, {"text": "Done."}])),
    ),
    Case(
        "split-thought-to-text",
        "gemini",
        AWS,
        dumps(gemini_body([{"text": f"print {AWS[:9]}", "thought": True}, {"text": AWS[9:]}])),
    ),
    Case(
        "function-args-nested-escapes",
        "gemini",
        AWS,
        dumps(gemini_body([NESTED_ESCAPED_CALL])),
    ),
    Case(
        "executable-code",
        "gemini",
        AWS,
        dumps(
            gemini_body(
                [
                    {"executableCode": {"language": "PYTHON", "code": f"print('{AWS}')"}},
                    {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": AWS}},
                ]
            )
        ),
    ),
    Case(
        "grounding-metadata",
        "gemini",
        AWS,
        dumps(gemini_body([{"text": "ok"}], groundingMetadata={"webSearchQueries": [AWS]})),
    ),
    Case(
        "thought-signature",
        "gemini",
        GITHUB,
        dumps(gemini_body([{"text": "ok", "thoughtSignature": GITHUB}])),
    ),
]

GEMINI_SSE = [
    Case(
        "thought-split",
        "gemini",
        AWS,
        events=gemini_chunks(
            *([{"text": piece, "thought": True}] for piece in split(f"key {AWS}", 7, 15)), [{"text": "Done."}]
        ),
    ),
    Case(
        "split-thought-to-text",
        "gemini",
        AWS,
        events=gemini_chunks([{"text": f"print {AWS[:11]}", "thought": True}], [{"text": AWS[11:]}]),
    ),
    Case(
        "function-args-escapes",
        "gemini",
        AWS,
        events=[sse(gemini_body([NESTED_ESCAPED_CALL]))],
    ),
    Case(
        "unknown-part-field-split",
        "gemini",
        GITHUB,
        events=gemini_chunks([{"text": "a", "x": GITHUB[:20]}], [{"text": "b", "x": GITHUB[20:]}]),
        whole=False,
    ),
    Case(
        "lone-surrogate",
        "gemini",
        AWS,
        events=[
            b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "\\ud800 '
            + AWS.encode()
            + b'"}]}, "index": 0}]}\n\n'
        ],
    ),
]


# -- MCP and headers ------------------------------------------------------------------------------------


def mcp_result(result: dict[str, Any]) -> bytes:
    return dumps({"jsonrpc": "2.0", "id": 1, "result": result})


MCP_JSON = [
    Case(
        "structured-content-escaped-json",
        "mcp",
        AWS,
        mcp_result(
            {
                "content": [{"type": "text", "text": "ok"}],
                "structuredContent": {"payload": NESTED_ESCAPED},
            }
        ),
    ),
    Case(
        "unknown-result-field",
        "mcp",
        AWS,
        mcp_result({"content": [{"type": "text", "text": "ok"}], "_meta": {"debug": AWS}}),
    ),
    Case(
        "text-split-across-items",
        "mcp",
        GITHUB,
        mcp_result(
            {"content": [{"type": "text", "text": GITHUB[:16]}, {"type": "text", "text": GITHUB[16:]}]}
        ),
    ),
]

MCP_SSE = [
    Case(
        "event-escaped",
        "mcp",
        AWS,
        events=[
            sse(
                '{"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "'
                + escaped(AWS)
                + '"}]}}',
                "message",
            )
        ],
    ),
    Case(
        "event-unknown-field",
        "mcp",
        AWS,
        events=[sse({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "note": AWS}}, "message")],
    ),
]

HEADERS = [
    Case(
        "response-header-value",
        "openai_chat",
        AWS,
        chat_message({"content": "ok"}),
        headers={"x-debug-token": AWS},
    ),
    Case(
        "response-header-stream",
        "anthropic",
        AWS,
        events=anthropic_events(*text_block(0, "ok")),
        headers={"x-trace": f"k={AWS}"},
    ),
]

CASES = [
    *ANTHROPIC_JSON,
    *ANTHROPIC_SSE,
    *CHAT_JSON,
    *CHAT_SSE,
    *RESPONSES_JSON,
    *RESPONSES_SSE,
    *GEMINI_JSON,
    *GEMINI_SSE,
    *MCP_JSON,
    *MCP_SSE,
    *HEADERS,
]


# -- systematic variants --------------------------------------------------------------------------------
# The same bypass at every kind of cut: a secret split at several places across two events of one channel,
# across two channels, and spelled with escapes in several ways inside streamed tool arguments.

CUTS = (1, 4, 10, 19)


def _upper_escaped(text: str) -> str:
    return "".join(f"\\u{ord(char):04X}" for char in text)


ESCAPINGS = {
    "every-char": lambda text: escaped(text),
    "every-other": lambda text: escaped(text, 2),
    "upper-hex": _upper_escaped,
    "prefix-only": lambda text: escaped(text[:4]) + text[4:],
}

VARIANTS = [
    *(
        Case(
            f"text-split-at-{cut}",
            "anthropic",
            AWS,
            events=anthropic_events(*text_block(0, f"k {AWS[:cut]}", AWS[cut:], " end")),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"blocks-split-at-{cut}",
            "anthropic",
            AWS,
            events=anthropic_events(*text_block(0, f"k {AWS[:cut]}"), *text_block(1, AWS[cut:], " end")),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"thinking-to-text-at-{cut}",
            "anthropic",
            AWS,
            events=anthropic_events(*thinking_block(0, AWS[:cut]), *text_block(1, AWS[cut:])),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"input-json-{name}",
            "anthropic",
            AWS,
            events=anthropic_events(*json_block(0, '{"k": "', *split(spell(AWS), 5, 17), '"}')),
        )
        for name, spell in ESCAPINGS.items()
    ),
    *(
        Case(
            f"content-split-at-{cut}",
            "openai_chat",
            AWS,
            events=chat_events(chat_chunk({"content": f"k {AWS[:cut]}"}), chat_chunk({"content": AWS[cut:]})),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"reasoning-to-content-at-{cut}",
            "openai_chat",
            AWS,
            events=chat_events(
                chat_chunk({"reasoning_content": AWS[:cut]}), chat_chunk({"content": AWS[cut:]})
            ),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"arguments-{name}",
            "openai_chat",
            AWS,
            events=chat_events(
                chat_chunk(call_delta('{"k": "', first=True)),
                *(chat_chunk(call_delta(piece)) for piece in split(spell(AWS), 3, 11)),
                chat_chunk(call_delta('"}')),
            ),
        )
        for name, spell in ESCAPINGS.items()
    ),
    *(
        Case(
            f"arguments-json-{name}",
            "openai_chat",
            AWS,
            chat_message(
                {
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"k": "' + spell(AWS) + '"}'},
                        }
                    ]
                }
            ),
        )
        for name, spell in ESCAPINGS.items()
    ),
    *(
        Case(
            f"output-text-split-at-{cut}",
            "openai_responses",
            AWS,
            events=responses_events(*text_stream([f"k {AWS[:cut]}", AWS[cut:], " end"])),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"summary-to-text-at-{cut}",
            "openai_responses",
            AWS,
            events=responses_events(
                *reasoning_stream("reasoning_summary_text", [AWS[:cut]], "summary_index"),
                *text_stream([AWS[cut:]], output_index=1),
            ),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"text-chunks-split-at-{cut}",
            "gemini",
            AWS,
            events=gemini_chunks([{"text": f"k {AWS[:cut]}"}], [{"text": AWS[cut:]}]),
        )
        for cut in CUTS
    ),
    *(
        Case(
            f"thought-to-text-at-{cut}",
            "gemini",
            AWS,
            events=gemini_chunks([{"text": AWS[:cut], "thought": True}], [{"text": AWS[cut:]}]),
        )
        for cut in CUTS
    ),
    Case(
        "tool-name",
        "anthropic",
        AWS,
        events=anthropic_events(
            *block(0, {"type": "tool_use", "id": "toolu_1", "name": f"x {AWS}", "input": {}})
        ),
    ),
    Case(
        "tool-id",
        "openai_chat",
        AWS,
        events=chat_events(
            chat_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": AWS,
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ]
                }
            )
        ),
    ),
    Case(
        "event-without-type-field",
        "anthropic",
        AWS,
        events=[
            *anthropic_events()[:1],
            sse({"index": 0, "content_block": {"type": "text", "text": f"k {AWS}"}}, "content_block_start"),
            *anthropic_events()[1:],
        ],
    ),
    Case(
        "server-tool-result",
        "anthropic",
        AWS,
        anthropic_message(
            [
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {
                            "type": "web_search_result",
                            "url": f"https://x.example/{AWS}",
                            "title": f"t {AWS}",
                            "encrypted_content": "e",
                        }
                    ],
                }
            ]
        ),
    ),
    Case(
        "content-part-added-prefilled",
        "openai_responses",
        AWS,
        events=responses_events(
            {
                "type": "response.content_part.added",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": f"k {AWS}", "annotations": []},
            }
        ),
    ),
    Case(
        "done-text-never-streamed",
        "openai_responses",
        AWS,
        events=responses_events(
            *text_stream(["Hello."])[:-1],
            {
                "type": "response.output_text.done",
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": f"Hello. {AWS}",
                "logprobs": [],
            },
        ),
    ),
    Case(
        "created-instructions",
        "openai_responses",
        AWS,
        events=[
            sse(
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {**response_body([]), "status": "in_progress", "instructions": f"k {AWS}"},
                },
                "response.created",
            ),
            *responses_events()[1:],
        ],
    ),
    Case(
        "function-name",
        "gemini",
        AWS,
        events=gemini_chunks([{"functionCall": {"name": f"x {AWS}", "args": {}}}]),
    ),
    Case(
        "progress-notification",
        "mcp",
        AWS,
        events=[
            sse(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": 1, "progress": 1, "message": f"k {AWS}"},
                },
                "message",
            ),
            sse({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}, "message"),
        ],
    ),
    Case(
        "tools-list-schema",
        "mcp",
        AWS,
        mcp_result(
            {
                "tools": [
                    {
                        "name": "t",
                        "description": "d",
                        "inputSchema": {
                            "type": "object",
                            "properties": {"k": {"type": "string", "default": AWS}},
                        },
                    }
                ]
            }
        ),
    ),
    Case("header-name", "openai_chat", AWS, chat_message({"content": "ok"}), headers={f"x-{AWS}": "1"}),
    Case(
        "crlf-framing",
        "openai_chat",
        AWS,
        events=[
            piece.replace(b"\n", b"\r\n")
            for piece in chat_events(
                chat_chunk({"content": f"k {AWS[:7]}"}), chat_chunk({"content": AWS[7:]})
            )
        ],
    ),
    Case(
        "multiline-data",
        "openai_chat",
        AWS,
        events=[
            b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",\n'
            b'data: "choices": [{"index": 0, "delta": {"content": "k '
            + AWS.encode()
            + b'"}, "finish_reason": null}]}\n\n',
            b"data: [DONE]\n\n",
        ],
    ),
]

CASES += VARIANTS

UNREAD_SHAPES = [
    Case(
        "event-a-bare-json-string",
        "mcp",
        AWS,
        events=[
            sse(json.dumps(f"k {AWS}"), "message"),
            sse({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}, "message"),
        ],
    ),
]

CASES += UNREAD_SHAPES


def framed(events: list[bytes], transform: Any) -> list[bytes]:
    return [transform(event) for event in events]


def _split_data(event: bytes) -> bytes:
    """One data field spread over two data lines with a comment and an unknown field between them: the
    client joins the data lines with a newline and ignores the rest."""
    if not event.startswith(b"data: {"):
        return event
    body = event[len(b"data: ") : -2]
    cut = body.index(b'"choices"')
    return b"data: " + body[:cut] + b"\n: keep-alive\nfoo: bar\ndata: " + body[cut:] + b"\n\n"


FRAMING = [
    Case(
        "cr-only-line-ends",
        "openai_chat",
        AWS,
        events=framed(
            chat_events(chat_chunk({"content": f"k {AWS[:7]}"}), chat_chunk({"content": AWS[7:]})),
            lambda event: event.replace(b"\n", b"\r"),
        ),
    ),
    Case(
        "comments-and-fields-between-data-lines",
        "openai_chat",
        AWS,
        events=framed(
            chat_events(chat_chunk({"content": f"k {AWS[:7]}"}), chat_chunk({"content": AWS[7:]})),
            _split_data,
        ),
    ),
    Case(
        "bom-before-the-stream",
        "openai_chat",
        AWS,
        events=[
            b"\xef\xbb\xbf" + event if number == 0 else event
            for number, event in enumerate(chat_events(chat_chunk({"content": f"k {AWS}"})))
        ],
    ),
    Case("bom-before-json", "openai_chat", AWS, b"\xef\xbb\xbf" + chat_message({"content": f"k {AWS}"})),
    Case(
        "one-event-over-a-mebibyte",
        "openai_chat",
        AWS,
        events=chat_events(chat_chunk({"content": "x" * (1 << 20) + f" k {AWS}"})),
    ),
    Case(
        "duplicate-keys-last-wins",
        "openai_chat",
        AWS,
        chat_message({"content": "ok"}).replace(
            b'"content": "ok"', b'"content": "ok", "content": "k ' + AWS.encode() + b'"'
        ),
    ),
    Case(
        "duplicate-keys-first-hidden",
        "openai_chat",
        AWS,
        chat_message({"content": "ok"}).replace(
            b'"content": "ok"', b'"content": "k ' + AWS.encode() + b'", "content": "ok"'
        ),
    ),
    Case(
        "ndjson-body",
        "openai_chat",
        AWS,
        b'{"delta": "k ' + escaped(AWS, 2).encode() + b'"}\n{"delta": "done"}\n',
        headers={"content-type": "application/x-ndjson"},
    ),
    Case(
        "ndjson-split-across-lines",
        "openai_chat",
        AWS,
        b"".join(
            dumps({"message": {"role": "assistant", "content": piece}, "done": False}) + b"\n"
            for piece in ("key ", AWS[:6], AWS[6:13], AWS[13:], " ok")
        ),
        headers={"content-type": "application/x-ndjson"},
    ),
    Case(
        "json-answer-labelled-event-stream",
        "openai_chat",
        AWS,
        chat_message({"content": f"key {AWS}"}) + b"\n\n",
        headers={"content-type": "text/event-stream"},
    ),
    Case(
        "repeated-choice-index",
        "openai_chat",
        AWS,
        events=chat_events(
            {
                **chat_chunk({"content": f"key {AWS[:7]}"}),
                "choices": [
                    {"index": 0, "delta": {"content": f"key {AWS[:7]}"}, "finish_reason": None},
                    {"index": 0, "delta": {"content": "zz "}, "finish_reason": None},
                ],
            },
            chat_chunk({"content": f"{AWS[7:]} ok"}),
        ),
    ),
]

CASES += FRAMING
