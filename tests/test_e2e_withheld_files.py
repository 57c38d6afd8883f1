"""A file egressguard withheld content of (one an Anthropic answer's code wrote beside a withheld call, one
whose content a download was refused or cut for) is not handed to the model by reference either: every
field of every provider API that names a kept file (a content block's ``file_id``, Gemini's
``fileData.fileUri``, a vector store's, a container's or a batch's file) is read, and a request naming a
withheld one is refused where the withheld part's threat is enforced, through a real egressguard and the
official Anthropic, OpenAI and Gemini SDKs."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from proxy.commands.localca import UpstreamPKI
from proxy.dialects import continued_by_route, detect
from proxy.dialects.base import CHECKED_PARTS
from proxy.dialects.filerefs import files_named, may_name_files
from tests.harness import Proxy
from tests.test_e2e_shapes import realtime_agent
from tests.test_e2e_stored_requests import BOUNDARY, batch_line, batch_upload
from tests.test_e2e_websocket import Realtime
from tests.test_e2e_withheld_context import CONTEXT, DELETE_BLOCK, WROTE, anthropic_client
from tests.test_e2e_ws_refusals import GREETING
from tests.test_server_tools import answer
from tests.upstream import FakeUpstream, Reply
from tests.wsupstream import WAIT_S

WITHHELD = "inspection.withheld_context"
CALL_IN_FILE = {"type": "tool_use", "id": "toolu_9", "name": "delete_customer", "input": {"id": 42}}
"""What a downloaded file holds that reads as a destructive call: withheld from the agent."""
GEMINI_FILE = "https://generativelanguage.googleapis.com/v1beta/files/chart-7"
OBJECT = Reply(body=b'{"id": "obj_1", "object": "thing", "created_at": 1}')
"""What the fake upstream answers a request egressguard lets pass, on routes it has no model for."""


def files_read(method: str, path: str, body: Any) -> dict[str, str]:
    """The files a request names: ``body`` is a multipart form's bytes, JSON's text or what it encodes."""
    encoded = (
        body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    )
    content_type = (
        f"multipart/form-data; boundary={BOUNDARY}" if isinstance(body, bytes) else "application/json"
    )
    return detect(method, path, content_type, encoded).parse_request(encoded).files_read


def test_every_api_s_reference_to_a_kept_file_is_read() -> None:
    """Each field naming a file, in any case and spelling of its key, at any depth, in any API's body;
    an address or name holding ``files/{id}`` as that id, as a route names it."""
    source = {"type": "file", "file_id": "file_011"}
    messages = {
        "model": "m",
        "max_tokens": 9,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": source},
                    {"type": "image", "source": source},
                    {"type": "container_upload", "file_id": "file_012"},
                ],
            }
        ],
    }
    assert files_read("POST", "/v1/messages", messages) == {
        "messages[0].content[0].source.file_id": "file_011",
        "messages[0].content[1].source.file_id": "file_011",
        "messages[0].content[2].file_id": "file_012",
    }
    batch = {"requests": [{"custom_id": "a", "params": messages}]}
    assert files_read("POST", "/v1/messages/batches", batch)[
        "requests[0].params.messages[0].content[2].file_id"
    ]
    responses = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": "file-a"},
                    {"type": "input_image", "file_id": "file-b", "detail": "auto"},
                ],
            }
        ],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-c"]}}],
    }
    assert files_read("POST", "/v1/responses", responses) == {
        "input[0].content[0].file_id": "file-a",
        "input[0].content[1].file_id": "file-b",
        "tools[0].container.file_ids[0]": "file-c",
    }
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}],
    }
    assert files_read("POST", "/v1/chat/completions", chat) == {"messages[0].content[0].file.file_id": "f"}
    gemini = {
        "contents": [
            {
                "parts": [
                    {"fileData": {"fileUri": GEMINI_FILE}},
                    {"file_data": {"file_uri": "files/%63hart-8"}},
                ]
            }
        ]
    }
    assert files_read("POST", "/v1beta/models/g:generateContent", gemini) == {
        "contents[0].parts[0].fileData.fileUri": "chart-7",
        "contents[0].parts[1].file_data.file_uri": "chart-8",
    }
    assert files_read(
        "POST", "/v1beta/models/g:batchGenerateContent", {"batch": {"inputConfig": {"fileName": "files/b"}}}
    ) == {"batch.inputConfig.fileName": "b"}
    others = {
        "/v1/vector_stores": {"file_ids": ["file-d", " file-e "]},
        "/v1/vector_stores/vs_1/files": {"File-Id": "file-f"},
        "/v1/vector_stores/vs_1/file_batches": {"files": [{"fileId": "file-g"}]},
        "/v1/threads/thread_1/messages": {
            "role": "user",
            "content": "x",
            "attachments": [{"file_id": "file-h"}],
        },
        "/v1/batches": {"input_file_id": "file-i", "endpoint": "/v1/responses"},
        "/v1/fine_tuning/jobs": {"model": "m", "training_file": "file-j", "validation_file": "file-k"},
        "/v1/evals/e/runs": {"data_source": {"source": {"type": "file_id", "id": "file-l"}}},
        "/v1/containers": {"name": "c", "file_ids": ["file-m"]},
        "/mcp": {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"arguments": {"file_id": "file-n"}},
        },
    }
    for path, body in others.items():
        assert sorted(files_read("POST", path, body).values()) == sorted(
            value.strip() for value in json.dumps(body).replace('"', " ").split() if value.startswith("file-")
        ), path
    line = batch_line("r1", "/v1/responses", responses)
    assert (
        files_read("POST", "/v1/files", batch_upload(line))[
            "multipart[1][0].body.input[0].content[0].file_id"
        ]
        == "file-a"
    )
    # A file's title, an address the provider fetches and prose naming an id name no kept file.
    unnamed = {"filename": "report.pdf", "file_url": "https://example.com/files/x", "text": "see file_011"}
    assert files_read("POST", "/v1/responses", {"model": "m", "input": [unnamed]}) == {}
    assert continued_by_route("GET", "/v1beta/files/chart-7:download?alt=media") == {"file": "chart-7"}
    assert continued_by_route("GET", "/v1/vector_stores/vs_1/files/file-a/content") == {"file": "file-a"}


def test_a_reference_nested_deeper_than_python_recurses_is_read() -> None:
    """A body the JSON reader accepts nests deeper than Python's recursion limit: the reference at its
    bottom is read, in a request as in a stored batch's line, and reading it raises nothing."""
    depth = sys.getrecursionlimit() + 50
    nested = "[" * depth + '{"type": "input_file", "file_id": "file-deep"}' + "]" * depth
    body = '{"model": "m", "input": ' + nested + "}"
    where = "input" + "[0]" * depth + ".file_id"
    assert files_read("POST", "/v1/responses", body) == {where: "file-deep"}
    line = batch_line("r1", "/v1/responses", {}).replace("{}", body)
    stored = files_read("POST", "/v1/files", batch_upload(line))
    assert stored == {"multipart[1][0].body." + where: "file-deep"}


ID_KEYS = ("file_id", "file_ids", "input_file_id", "file_uri", "training_file", "validation_file")
"""Keys whose string names a file by its id alone, whatever it holds (``filerefs``)."""


@given(
    st.sampled_from(ID_KEYS).flatmap(
        lambda key: st.tuples(*(st.sampled_from([char, char.upper()]) for char in key.replace("_", "")))
    ),
    st.lists(st.sampled_from(["", "_", "-", "__", "-_"]), min_size=16, max_size=16),
    st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/vector_stores"]),
    st.booleans(),
)
def test_a_key_naming_a_file_is_read_however_it_is_spelled(
    letters: tuple[str, ...], separators: list[str], path: str, escaped: bool
) -> None:
    """A key a reader folds to one naming a file by id (any case, ``_`` and ``-`` anywhere, an escape) is
    read in a body where nothing else says "file": a request's walk for file references is left out only
    where no key can name one (``may_name_files``)."""
    key = "".join(separator + letter for separator, letter in zip(separators, letters, strict=False))
    spelled = json.dumps(key).replace("e", "\\u0065", 1) if escaped else json.dumps(key)
    history = [{"role": "user", "content": f"question {turn}"} for turn in range(CHECKED_PARTS)]
    body = f'{{"model": "m", "messages": {json.dumps(history)}, "tools": [{{{spelled}: "abc1"}}]}}'
    assert may_name_files(body) and may_name_files(body.encode())
    named = files_read("POST", path, body)
    assert named == files_named(json.loads(body)) and list(named.values()) == ["abc1"]
    assert files_read("POST", path, body.replace(spelled, '"fil"')) == {}


@pytest.fixture
def enforcing(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(mode="enforce")


def settled(proxy: Proxy, upstream: FakeUpstream) -> None:
    """Waits for the record of every call that reached the upstream (the proxy is the test's own), so that
    a refusal's record is the one after them."""
    assert len(proxy.wait_for_records(len(upstream.received))) == len(upstream.received)


def refused(proxy: Proxy, upstream: FakeUpstream, send: Callable[[], object], error: type[Exception]) -> str:
    """Sends a request that must be refused before it reaches the upstream; the place the refusal's
    finding names."""
    sent, recorded = len(upstream.received), len(proxy.wait_for_records(0))
    with pytest.raises(error) as raised:
        send()
    assert WITHHELD in str(raised.value)
    assert len(upstream.received) == sent
    record = proxy.wait_for_records(recorded + 1)[-1]
    found = [finding for finding in record["findings"] if finding["rule"] == WITHHELD]
    assert found and all(finding["enforced"] for finding in found)
    return str(found[0]["where"])


def form_part(name: str, content: str, filename: str | None = None) -> str:
    named = f'; filename="{filename}"' if filename is not None else ""
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{named}\r\n\r\n{content}\r\n'


def test_a_form_naming_a_kept_file_is_read() -> None:
    """A urlencoded form's and a multipart form's fields naming a file by the keys a JSON body does, in
    any case, with an index (``file_ids[]``, percent-encoded or not), as a server reads them; a file's
    title and an upload's own name name none."""
    form = "purpose=x&File_Id=file-o&file_ids%5B%5D=file-p&file_ids[1]=+file-q&filename=report.pdf&file_id="
    read = detect("POST", "/v1/containers/c_1/files", "application/x-www-form-urlencoded", form.encode())
    assert read.parse_request(form.encode()).files_read == {
        "form.File_Id": "file-o",
        'form["file_ids[]"]': "file-p",
        'form["file_ids[1]"]': "file-q",
    }
    upload = (
        form_part("file", "notes", filename="report.pdf")
        + form_part("file_id", "file-r")
        + form_part("fileUri", "files/chart-9")
        + form_part("filename", "report.pdf")
        + f"--{BOUNDARY}--\r\n"
    ).encode()
    assert files_read("POST", "/v1/containers/c_1/files", upload) == {
        "multipart[1]": "file-r",
        "multipart[2]": "chart-9",
    }


def test_a_file_an_answers_code_wrote_beside_a_withheld_call_is_not_handed_to_the_model(
    enforcing: Proxy, upstream: FakeUpstream
) -> None:
    """Through the Anthropic SDK: a document, an image and a container upload naming the file, in a
    message or in a Message Batch, are refused; another file passes."""
    client = anthropic_client(enforcing, upstream)
    upstream.reply = Reply(body=answer(WROTE, DELETE_BLOCK))
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "chart it"}])
    settled(enforcing, upstream)
    upstream.reply = Reply(body=answer({"type": "text", "text": "read"}))

    def message(block: dict[str, Any]) -> list[Any]:
        return [{"role": "user", "content": [block, {"type": "text", "text": "summarise it"}]}]

    source = {"type": "file", "file_id": "file_011"}
    blocks: list[dict[str, Any]] = [
        {"type": "document", "source": source},
        {"type": "image", "source": source},
        {"type": "container_upload", "file_id": "file_011"},
    ]
    places = []
    for block in blocks:

        def send(block: dict[str, Any] = block) -> object:
            return client.beta.messages.create(
                model="m", max_tokens=10, messages=message(block), betas=["files-api-2025-04-14"]
            )

        places.append(refused(enforcing, upstream, send, anthropic.PermissionDeniedError))
    assert places == [
        "messages[0].content[0].source.file_id",
        "messages[0].content[0].source.file_id",
        "messages[0].content[0].file_id",
    ]
    batch: Any = [
        {"custom_id": "a", "params": {"model": "m", "max_tokens": 9, "messages": message(blocks[0])}}
    ]
    assert (
        refused(
            enforcing,
            upstream,
            lambda: client.messages.batches.create(requests=batch),
            anthropic.PermissionDeniedError,
        )
        == "requests[0].params.messages[0].content[0].source.file_id"
    )
    other: Any = message({"type": "document", "source": {"type": "file", "file_id": "file_099"}})
    client.beta.messages.create(model="m", max_tokens=10, messages=other, betas=["files-api-2025-04-14"])
    assert json.loads(upstream.received[-1].body)["messages"] == other


def test_a_file_whose_download_was_withheld_is_not_handed_to_the_model_by_openai_apis(
    enforcing: Proxy, upstream: FakeUpstream
) -> None:
    """Through the OpenAI SDK: a file whose content egressguard withheld from the agent (it held a
    destructive call) is refused wherever a request names it: a Responses input file or image, a Chat
    file, a code interpreter's container, a vector store, an Assistants message's attachment, a batch, a
    fine-tuning job, a container, the line of a batch input file, and a container's file named by a
    multipart or a urlencoded form's field; the same requests naming another file pass."""
    client = enforcing.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = Reply(body=json.dumps({"steps": [CALL_IN_FILE]}).encode())
    with pytest.raises(openai.InternalServerError, match="delete_customer"):
        client.files.content("file-abc")
    settled(enforcing, upstream)

    def sends(file: str) -> list[Callable[[], object]]:
        content: Any = [{"type": "input_file", "file_id": file}, {"type": "input_text", "text": "sum it up"}]
        image: Any = [{"type": "input_image", "file_id": file, "detail": "auto"}]
        chat: Any = [{"role": "user", "content": [{"type": "file", "file": {"file_id": file}}]}]
        container: Any = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [file]}}]
        line = batch_line(
            "r1", "/v1/responses", {"model": "m", "input": [{"role": "user", "content": content}]}
        )
        return [
            lambda: client.responses.create(model="m", input=[{"role": "user", "content": content}]),
            lambda: client.responses.create(model="m", input=[{"role": "user", "content": image}]),
            lambda: client.chat.completions.create(model="m", messages=chat),
            lambda: client.responses.create(model="m", input="plot it", tools=container),
            lambda: client.vector_stores.files.create(vector_store_id="vs_1", file_id=file),
            lambda: client.vector_stores.create(file_ids=[file]),
            lambda: client.vector_stores.file_batches.create(vector_store_id="vs_1", file_ids=[file]),
            lambda: client.beta.threads.messages.create(
                "thread_1", role="user", content="read it", attachments=[{"file_id": file}]
            ),
            lambda: client.batches.create(
                input_file_id=file, endpoint="/v1/responses", completion_window="24h"
            ),
            lambda: client.fine_tuning.jobs.create(model="m", training_file=file),
            lambda: client.containers.create(name="c", file_ids=[file]),
            lambda: client.files.create(file=("b.jsonl", io.BytesIO(line.encode())), purpose="batch"),
            lambda: client.containers.files.create("cntr_1", file_id=file, file=("a.txt", b"notes")),
            lambda: client.post(
                "/containers/cntr_1/files",
                cast_to=object,
                content=f"file_id={file}".encode(),
                options={"headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            ),
        ]

    for send in sends("file-abc"):
        refused(enforcing, upstream, send, openai.PermissionDeniedError)
    upstream.reply = OBJECT
    for send in sends("file-xyz"):
        sent = len(upstream.received)
        send()
        assert len(upstream.received) == sent + 1


def test_a_gemini_file_whose_download_was_withheld_is_not_handed_to_the_model(
    enforcing: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the Gemini SDK: a generated file whose download egressguard withheld (it held a
    destructive call) is refused as a part's ``fileData.fileUri`` and as a batch's input file; another
    file passes."""
    monkeypatch.setenv("HTTPS_PROXY", enforcing.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(enforcing.ca_cert))
    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=CONTEXT)
    )
    call = {"functionCall": {"name": "delete_customer", "args": {"id": 42}}}
    upstream.reply = Reply(body=json.dumps({"candidates": [{"content": {"parts": [call]}}]}).encode())
    with pytest.raises(genai_errors.ServerError, match="delete_customer"):
        client.files.download(file="files/chart-7")
    assert upstream.received[-1].path.endswith("/files/chart-7:download?alt=media")
    settled(enforcing, upstream)
    upstream.reply = Reply()

    def ask(uri: str) -> Callable[[], types.GenerateContentResponse]:
        part = types.Part.from_uri(file_uri=uri, mime_type="text/csv")
        return lambda: client.models.generate_content(model="gemini-2.5-flash", contents=[part, "sum it up"])

    # The file's address is on the provider's host, which the agent reaches: no other rule refuses it.
    for uri in (f"{upstream.url}/v1beta/files/chart-7", "files/chart-7"):
        where = refused(enforcing, upstream, ask(uri), genai_errors.ClientError)
        assert where.startswith("contents[0].parts[0].fileData.file")
    assert (
        refused(
            enforcing,
            upstream,
            lambda: client.batches.create(model="gemini-2.5-flash", src="files/chart-7"),
            genai_errors.ClientError,
        )
        == "batch.inputConfig.fileName"
    )
    assert ask(f"{upstream.url}/v1beta/files/chart-8")().text == "Hello from the upstream model."


def test_a_realtime_message_naming_a_withheld_file_is_refused(
    enforcing: Proxy, upstream: FakeUpstream, upstream_pki: UpstreamPKI
) -> None:
    """Through the OpenAI SDK's Realtime client: a ``conversation.item.create`` whose content names a file
    egressguard withheld content of does not reach the API, the agent told by an ``error`` event naming
    the client event; the same message naming another file goes on."""
    client = enforcing.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = Reply(body=json.dumps({"steps": [CALL_IN_FILE]}).encode())
    with pytest.raises(openai.InternalServerError, match="delete_customer"):
        client.files.content("file-abc")
    settled(enforcing, upstream)

    def item(file: str) -> Any:
        content = [{"type": "input_file", "file_id": file}, {"type": "input_text", "text": "sum it up"}]
        return {"type": "message", "role": "user", "content": content}

    server = Realtime(upstream_pki, (json.dumps(GREETING),))
    try:
        with realtime_agent(enforcing, server.port, CONTEXT) as connection:
            assert connection.recv().type == "session.created"
            connection.conversation.item.create(item=item("file-abc"), event_id="evt_agent_1")
            connection.conversation.item.create(item=item("file-xyz"), event_id="evt_agent_2")
            error: Any = connection.recv()
            deadline = time.monotonic() + WAIT_S
            while not server.received and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.close()
    assert error.type == "error" and error.error.event_id == "evt_agent_1"
    assert WITHHELD in error.error.message
    assert [json.loads(message)["item"] for message in server.received] == [item("file-xyz")]
    record = enforcing.wait_for_records(2)[-1]
    assert [(f["rule"], f["where"], f["enforced"]) for f in record["findings"] if f["rule"] == WITHHELD] == [
        (WITHHELD, "websocket[1].item.content[0].file_id", True)
    ]
