"""Files a request carries encoded: decoded as lenient decoders decode them, read as text where they are
text (located at the encoded field, written back encoded), as binary content where not, and reported
where they do not decode; images, audio and video are not read."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from proxy.dialects import MCP, Anthropic, Gemini, OpenAIChat, OpenAIResponses
from proxy.dialects.attachments import declared_text, decode_attachment, is_declared_text, is_media
from proxy.dialects.base import Dialect
from proxy.dialects.locator import get_at
from proxy.exchange import Attachment, Source, written

TEXT = "col,value\nname,orders\n"
B64 = base64.b64encode(TEXT.encode()).decode()
PDF = b"%PDF-1.4\n\x00\x01\x02\xff binary"
PDF_B64 = base64.b64encode(PDF).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (B64, ("", TEXT.encode())),
        (f"data:text/csv;base64,{B64}", ("data:text/csv;base64,", TEXT.encode())),
        (f"DATA:text/csv;BASE64,{B64}", ("DATA:text/csv;BASE64,", TEXT.encode())),
        ("data:text/plain,a%20b%0A", ("data:text/plain,", b"a b\n")),
        (B64[:20] + "\n" + B64[20:].rstrip("="), ("", TEXT.encode())),  # wrapped, padding left out
        ("SGVsbG8*!!", "not valid base64"),
        ("data:text/plain;base64,@@@@", "not valid base64"),
    ],
)
def test_decode_attachment(value: str, expected: tuple[str, bytes] | str) -> None:
    assert decode_attachment(value) == expected


@pytest.mark.parametrize("head", ["", "data:text/plain;base64,", "data:text/plain,"])
def test_text_is_written_back_encoded_as_it_came(head: str) -> None:
    decoded = decode_attachment(written(head, "é\udcff ok"))
    assert not isinstance(decoded, str)
    assert decoded[1] == "é".encode() + b"\xff ok"
    assert decoded[0] == ("data:text/plain;base64," if head else "")
    assert written(None, "plain") == "plain"


def test_images_audio_and_video_are_media() -> None:
    assert all(is_media(kind) for kind in ("image/png", "AUDIO/wav", "video/mp4"))
    assert not any(is_media(kind) for kind in ("text/plain", "application/pdf", "application/json", None))


def test_text_media_types_are_declared_text() -> None:
    declared = ("text/plain", "TEXT/csv; charset=utf-16", "application/json", "application/ld+json")
    assert all(is_declared_text(kind) for kind in declared)
    others = ("application/pdf", "application/octet-stream", "application/jsonl-archive", "", None)
    assert not any(is_declared_text(kind) for kind in others)


@pytest.mark.parametrize(
    "content",
    [
        TEXT.encode() + b"\x00",
        TEXT.encode()[:9] + b"\x00\x00" + TEXT.encode()[9:],
        TEXT.encode("utf-16-le"),
        TEXT.encode("utf-16-be"),
    ],
    ids=["trailing-nul", "nuls-inside", "utf-16-le", "utf-16-be"],
)
def test_declared_text_with_nuls_or_in_utf16_reads_as_its_text(content: bytes) -> None:
    assert declared_text(content) == TEXT


def chat(part: dict[str, Any], role: str = "user") -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": role, "content": [part], "tool_call_id": "c"}]}
    ).encode()


CASES: list[tuple[Dialect, bytes, bytes, str]] = [
    (
        OpenAIChat(),
        chat({"type": "file", "file": {"file_data": f"data:text/csv;base64,{B64}"}}),
        chat({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}"}}),
        "messages[0].content[0].file.file_data",
    ),
    (
        OpenAIResponses(),
        json.dumps(
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_file", "file_data": f"data:text/csv;base64,{B64}"}],
                    }
                ]
            }
        ).encode(),
        json.dumps(
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_file", "file_data": f"data:application/pdf;base64,{PDF_B64}"}
                        ],
                    }
                ]
            }
        ).encode(),
        "input[0].content[0].file_data",
    ),
    (
        Anthropic(),
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {"type": "base64", "media_type": "text/csv", "data": B64},
                            }
                        ],
                    }
                ]
            }
        ).encode(),
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": PDF_B64,
                                },
                            }
                        ],
                    }
                ]
            }
        ).encode(),
        "messages[0].content[0].source.data",
    ),
    (
        Gemini(),
        json.dumps(
            {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "text/csv", "data": B64}}]}]}
        ).encode(),
        json.dumps(
            {
                "contents": [
                    {
                        "role": "user",
                        "parts": [{"inline_data": {"mime_type": "application/pdf", "data": PDF_B64}}],
                    }
                ]
            }
        ).encode(),
        "contents[0].parts[0].inlineData.data",
    ),
]


@pytest.mark.parametrize(
    ("dialect", "text_file", "pdf", "where"), CASES, ids=lambda case: getattr(case, "name", "")
)
def test_every_dialect_reads_a_text_file_as_text_and_a_pdf_as_binary(
    dialect: Dialect, text_file: bytes, pdf: bytes, where: str
) -> None:
    view = dialect.parse_request(text_file)
    (part,) = [part for part in view.parts if part.text == TEXT]
    assert (part.where, part.source) == (where, Source.RETRIEVED_DOCUMENT)
    rewritten = dialect.parse_request(
        dialect.rewrite_request(text_file, {where: written(part.encoded, "new")})
    )
    assert [part.text for part in rewritten.parts if part.where == where] == ["new"]
    assert dialect.parse_request(pdf).attachments == [
        Attachment(where.replace("inlineData", "inline_data"), PDF, Source.RETRIEVED_DOCUMENT)
    ]
    unread = dialect.parse_request(text_file.replace(B64[:8].encode(), b"*!#$%^&*"))
    assert unread.attachments == [
        Attachment(where, b"", Source.RETRIEVED_DOCUMENT, undecodable="not valid base64")
    ]


def test_files_in_tool_results_are_tool_results_and_images_are_not_read() -> None:
    gemini = {
        "contents": [
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "!!not base64"}}]},
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "get",
                            "response": {},
                            "parts": [{"inlineData": {"mimeType": "text/csv", "data": B64}}],
                        }
                    }
                ],
            },
        ]
    }
    view = Gemini().parse_request(json.dumps(gemini).encode())
    assert [(part.where, part.source, part.tool_name) for part in view.parts] == [
        ("contents[1].parts[0].functionResponse.parts[0].inlineData.data", Source.TOOL_RESULT, "get")
    ]
    assert view.attachments == []
    tool = chat({"type": "file", "file": {"file_data": B64}}, role="tool")
    assert [part.source for part in OpenAIChat().parse_request(tool).parts] == [Source.TOOL_RESULT]
    output = {
        "type": "function_call_output",
        "call_id": "c",
        "output": [{"type": "input_file", "file_data": B64}],
    }
    responses = OpenAIResponses().parse_request(json.dumps({"input": [output]}).encode())
    assert [(part.where, part.source) for part in responses.parts] == [
        ("input[0].output[0].file_data", Source.TOOL_RESULT)
    ]


def test_a_file_that_reads_as_binary_keeps_who_it_came_from_and_its_declared_text() -> None:
    """A text file with a NUL is binary, still read as the tool's result or retrieved document it is,
    with its text where its media type says it is text; a PDF carries no such text."""
    nul = base64.b64encode(TEXT.encode() + b"\x00").decode()
    document = {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": nul}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [document, pdf]}
    body = json.dumps({"messages": [{"role": "user", "content": [result]}]}).encode()
    view = Anthropic().parse_request(body)
    assert [(file.source, file.declared_text) for file in view.attachments] == [
        (Source.RETRIEVED_DOCUMENT, TEXT),
        (Source.RETRIEVED_DOCUMENT, None),
    ]
    tool = chat({"type": "file", "file": {"file_data": f"data:text/csv;base64,{nul}"}}, role="tool")
    assert [(file.source, file.declared_text) for file in OpenAIChat().parse_request(tool).attachments] == [
        (Source.TOOL_RESULT, TEXT)
    ]
    user = chat({"type": "file", "file": {"file_data": nul}})
    assert [(file.source, file.declared_text) for file in OpenAIChat().parse_request(user).attachments] == [
        (Source.RETRIEVED_DOCUMENT, None)
    ]


def test_a_text_blob_in_an_mcp_result_is_read_and_rewritten_as_a_blob() -> None:
    """What an MCP tool returns as an embedded resource's base64 ``blob``: a text one is a retrieved
    document; a blob that is no text is read as binary content; an image is not read."""
    content = [
        {"type": "resource", "resource": {"uri": "file:///a.csv", "mimeType": "text/csv", "blob": B64}},
        {
            "type": "resource",
            "resource": {"uri": "file:///b.pdf", "mimeType": "application/pdf", "blob": PDF_B64},
        },
        {"type": "resource", "resource": {"uri": "file:///c.png", "mimeType": "image/png", "blob": B64}},
    ]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": content}}).encode()
    completion = MCP().parse_response(body)
    assert [(part.where, part.text, part.source) for part in completion.parts] == [
        ("result.content[0].resource.blob", TEXT, Source.RETRIEVED_DOCUMENT)
    ]
    assert [(file.where, file.content) for file in completion.attachments] == [
        ("result.content[1].resource.blob", PDF)
    ]
    rewritten = json.loads(MCP().rewrite_response(body, str.upper))["result"]["content"]
    assert base64.b64decode(rewritten[0]["resource"]["blob"]).decode() == TEXT.upper()
    assert rewritten[1:] == content[1:]


def test_a_file_a_gemini_model_returns_is_read_in_a_json_array_of_chunks_too() -> None:
    """streamGenerateContent without alt=sse: each file is located in the merged response and written
    back encoded in its chunk."""
    files = [
        {"inlineData": {"mimeType": "text/csv", "data": B64}},
        {"inline_data": {"mimeType": "application/pdf", "data": PDF_B64}},
        {"inlineData": {"mimeType": "image/png", "data": "!!not base64"}},
    ]
    chunks = [{"candidates": [{"content": {"parts": [{"text": "Here."}, file]}}]} for file in files]
    body = json.dumps(chunks).encode()
    completion = Gemini().parse_response(body)
    assert [(part.where, part.text, part.source) for part in completion.parts] == [
        ("candidates[0].content.parts[1].inlineData.data", TEXT, Source.RETRIEVED_DOCUMENT)
    ]
    assert completion.attachments == [
        Attachment("candidates[0].content.parts[3].inline_data.data", PDF, Source.RETRIEVED_DOCUMENT)
    ]
    rewritten = json.loads(Gemini().rewrite_response(body, str.upper))
    assert (
        base64.b64decode(rewritten[0]["candidates"][0]["content"]["parts"][1]["inlineData"]["data"]).decode()
        == TEXT.upper()
    )
    assert [chunk["candidates"][0]["content"]["parts"][1] for chunk in rewritten[1:]] == files[1:]


def test_a_declared_base64_file_in_an_answer_that_does_not_decode_is_read_as_undecodable() -> None:
    """An MCP resource's blob and a server-run tool's base64 document hold base64 by definition: one that
    does not decode is an attachment of which nothing is read, where before nothing of it was listed."""
    resource = {"uri": "file:///b.pdf", "mimeType": "application/pdf", "blob": "JVBE*!#"}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"contents": [resource]}}).encode()
    assert MCP().parse_response(body).attachments == [
        Attachment("result.contents[0].blob", b"", Source.RETRIEVED_DOCUMENT, undecodable="not valid base64")
    ]
    source = {"type": "base64", "media_type": "text/plain", "data": "SGVsbG8*!!"}
    fetched = {
        "type": "web_fetch_tool_result",
        "tool_use_id": "s",
        "content": {"content": {"source": source}},
    }
    answer = Anthropic().parse_response(json.dumps({"content": [fetched]}).encode())
    assert answer.parts == []
    assert answer.attachments == [
        Attachment(
            "content[0].content.content.source.data", b"", Source.TOOL_RESULT, undecodable="not valid base64"
        )
    ]


@pytest.mark.parametrize(
    ("message", "at"),
    [
        ({"id": 1, "result": {"contents": "RESOURCES"}}, "result.contents[{}]"),
        (
            {"id": 1, "result": {"messages": [{"role": "user", "content": "ITEMS"}]}},
            "result.messages[0].content[{}].resource",
        ),
        (
            {"id": 1, "method": "sampling/createMessage", "params": {"messages": [{"content": "ITEMS"}]}},
            "params.messages[0].content[{}].resource",
        ),
    ],
    ids=["resources-read", "prompts-get", "sampling-request"],
)
def test_every_resource_an_mcp_server_serves_is_read_as_a_tool_results_is(message: Any, at: str) -> None:
    """A resource ``resources/read`` returns, or a prompt's or a sampling request's message embeds: its
    text, its blob as text where it is text, as binary content where not; an image is not read."""
    resources = [
        {"uri": "file:///a.csv", "mimeType": "text/csv", "blob": B64},
        {"uri": "file:///b.pdf", "mimeType": "application/pdf", "blob": PDF_B64},
        {"uri": "file:///c.png", "mimeType": "image/png", "blob": B64},
        {"uri": "file:///d.md", "mimeType": "text/markdown", "text": TEXT},
    ]
    items = [{"type": "resource", "resource": resource} for resource in resources]
    body = json.dumps({"jsonrpc": "2.0", **message}).replace('"RESOURCES"', json.dumps(resources))
    body = body.replace('"ITEMS"', json.dumps(items))
    completion = MCP().parse_response(body.encode())
    assert sorted((part.where, part.text, part.source) for part in completion.parts) == [
        (f"{at.format(0)}.blob", TEXT, Source.RETRIEVED_DOCUMENT),
        (f"{at.format(3)}.text", TEXT, Source.RETRIEVED_DOCUMENT),
    ]
    assert [(file.where, file.content) for file in completion.attachments] == [(f"{at.format(1)}.blob", PDF)]
    rewritten = json.loads(MCP().rewrite_response(body.encode(), str.upper))
    assert base64.b64decode(get_at(rewritten, f"{at.format(0)}.blob")).decode() == TEXT.upper()
    assert get_at(rewritten, f"{at.format(1)}.blob") == PDF_B64
