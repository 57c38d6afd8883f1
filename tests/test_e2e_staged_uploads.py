"""A batch input file uploaded in parts (OpenAI's Uploads: ``/v1/uploads``, its ``parts``, ``complete``) is
read as the file its parts make, in the order ``complete`` names them, line by line as a file uploaded
whole is: a line split across two parts that a whole file would be refused for refuses the ``complete``,
as does a part that did not pass here, parts together over the inspection cap, or a secret split across
parts (its parts have left: nothing can be redacted). A Gemini resumable upload's chunks are joined by
offset, or by ``Content-Range``, when the last one finalizes it. Read by unit, then end to end through a
real egressguard in enforce mode with the official OpenAI and Gemini SDKs and, for each protocol's every
step, an HTTP client."""

from __future__ import annotations

import io
import json
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from proxy.commands.localca import UpstreamPKI
from proxy.detectors.tools import MCP_SERVER_EGRESS_RULE, PROVIDER_FETCH_RULE
from proxy.dialects import read_batch_file, staged_upload
from proxy.staged import (
    MOST_UPLOADS,
    StagedParts,
    UnseenPartError,
    UploadStep,
    bytes_taken,
    form_field,
    named_parts,
)
from proxy.wire.decoding import OverCapError
from tests.harness import AGENT, AGENT_TOKEN, CLIENT_TIMEOUT_S, Proxy
from tests.test_e2e_declared_tools import refusals
from tests.test_e2e_inspect import AWS_KEY, HEADERS, _agent, last_record, openai_client
from tests.test_e2e_provider_fetch import gemini_client
from tests.test_e2e_stored_requests import GEMINI, OUTSIDE, UNASKED_MCP, batch_line
from tests.upstream import FakeUpstream, Received, Reply

CLEAN = batch_line("r1", "/v1/responses", {"model": "m", "input": "what changed?"})
UNASKED = batch_line("r2", "/v1/responses", {"model": "m", "input": "run it", "tools": [UNASKED_MCP]})
GEMINI_UPLOAD = "/upload/v1beta/files"
STORAGE_UPLOAD = "/upload/storage/v1/b/corp-docs/o"
KEYED = batch_line("r3", "/v1/responses", {"model": "m", "input": f"the key is {AWS_KEY}"})


def test_an_uploads_routes_are_told_from_others() -> None:
    assert staged_upload("/v1/uploads/upload_1/parts") == UploadStep("upload_1", completes=False)
    assert staged_upload("/openai/uploads/u/complete?api-version=1") == UploadStep("u", completes=True)
    assert staged_upload("/v1/uploads") is None
    assert staged_upload("/repos/o/r/uploads/u/complete") is None
    chunk = f"{GEMINI_UPLOAD}?upload_id=g1&upload_protocol=resumable"
    assert staged_upload(chunk, "upload", "0") == UploadStep("g1", completes=False, offset=0)
    assert staged_upload(chunk, "Upload, Finalize", "12") == UploadStep("g1", completes=True, offset=12)
    assert staged_upload(chunk, "upload, finalize", "twelve") == UploadStep("g1", completes=True, offset=-1)
    assert staged_upload(chunk, "query", "") is None
    assert staged_upload(GEMINI_UPLOAD, "start", "") is None
    assert staged_upload("/drive/v3/files?upload_id=g1") is None
    assert staged_upload("/drive/v3/files", "upload", "0") is None
    resumable = "/resumable/upload/v1beta/files?upload_id=g1"
    assert staged_upload(resumable, "upload", "5") == UploadStep("g1", completes=False, offset=5)


def test_every_way_a_google_upload_sends_bytes_is_told() -> None:
    """Google's other resumable protocol (``uploadType=resumable``) says where a chunk goes by its
    ``Content-Range``: the last one (its end the total) or ``bytes */N`` finalizes, ``bytes */*`` only
    asks. A request whose chunk cannot be placed (a range that does not read, two ids, both protocols'
    headers) is a step no kept chunks complete, so it is refused."""
    session = f"{STORAGE_UPLOAD}?uploadType=resumable&upload_id=g1"
    assert staged_upload(session, content_range="bytes 0-99/*") == UploadStep("g1", False, 0)
    assert staged_upload(session, content_range="bytes 100-149/200") == UploadStep("g1", False, 100)
    assert staged_upload(session, content_range="bytes 100-199/200") == UploadStep("g1", True, 100)
    assert staged_upload(session, content_range="bytes */200") == UploadStep("g1", True, 200)
    assert staged_upload(session, content_range="bytes */*") is None
    assert staged_upload(session) == UploadStep("g1", True, 0)  # the whole file in one request
    unreadable = UploadStep("g1", completes=True, offset=-1)
    for content_range in ("bytes=0-99", "bytes 0-99", "items 0-9/10", "bytes 0-x/10"):
        assert staged_upload(session, content_range=content_range) == unreadable
    assert staged_upload(session, "upload", "0", "bytes 0-9/*") == unreadable
    assert staged_upload(f"{session}&upload_id=g2", "upload", "0") == UploadStep("g1,g2", True, -1)
    assert staged_upload(f"{GEMINI_UPLOAD}?upload_id=g1", content_range="bytes 0-9/20") == UploadStep(
        "g1", False, 0
    )
    # Cloud Storage's XML API: the session on the object's own path.
    assert staged_upload("/corp-docs/a.jsonl?upload_id=g1", content_range="bytes 0-9/*") == UploadStep(
        "g1", False, 0
    )


def test_a_chunk_is_kept_as_far_as_the_server_took_it() -> None:
    assert bytes_taken(0, "bytes=0-19") == 20
    assert bytes_taken(10, "bytes=0-19") == 10
    assert bytes_taken(30, "bytes=0-19") == 0
    assert bytes_taken(0, "") == 0  # no range: the server holds none of it
    assert bytes_taken(0, "bytes=5-19") == 0


def test_chunks_are_joined_by_offset_without_gap_or_overlap(tmp_path: Path) -> None:
    parts = StagedParts(tmp_path)
    parts.keep("g", "0", b"abc", 100)
    parts.keep("g", "3", b"de", 100)
    assert parts.assemble_chunks("g", 5, 100) == b"abcde"
    assert parts.assemble_chunks("g", 3, 100) == b"abc"
    for end in (4, 6, -1):
        with pytest.raises(UnseenPartError):
            parts.assemble_chunks("g", end, 100)
    with pytest.raises(OverCapError):
        parts.assemble_chunks("g", 5, 4)


def test_staged_parts_are_the_owner_s_alone_from_their_creation(tmp_path: Path) -> None:
    """A part may hold what an agent uploaded, secrets included: under a umask that opens files to anyone,
    its folders are 0700 and its files 0600, rewritten or not, marks too."""
    previous = os.umask(0)
    try:
        parts = StagedParts(tmp_path / "staged")
        parts.keep("u", "p1", b"AKIA", 100)
        parts.keep("u", "p1", b"AKIA again", 100)
        parts.keep("u", "p2", None, 100)
    finally:
        os.umask(previous)
    folders = [path for path in (tmp_path / "staged").rglob("*") if path.is_dir()]
    files = [path for path in (tmp_path / "staged").rglob("*") if path.is_file()]
    assert len(files) == 2 and folders
    assert {path.stat().st_mode & 0o777 for path in files} == {0o600}
    assert {path.stat().st_mode & 0o777 for path in [tmp_path / "staged", *folders]} == {0o700}


def test_parts_are_joined_in_the_order_complete_names(tmp_path: Path) -> None:
    parts = StagedParts(tmp_path)
    parts.keep("u", "p1", b'{"a": "fir', 100)
    parts.keep("u", "p2", b'st"}\n', 100)
    assert parts.assemble("u", ["p1", "p2"], 100) == b'{"a": "first"}\n'
    assert parts.assemble("u", ["p2", "p1"], 100) == b'st"}\n{"a": "fir'
    with pytest.raises(UnseenPartError, match="part 1"):
        parts.assemble("u", ["p1", "p3"], 100)
    with pytest.raises(UnseenPartError):
        parts.assemble("other", ["p1"], 100)
    parts.forget("u")
    with pytest.raises(UnseenPartError):
        parts.assemble("u", ["p1"], 100)


def test_parts_past_the_cap_or_unread_make_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    parts = StagedParts(tmp_path)
    parts.keep("u", "p1", b"x" * 60, 100)
    parts.keep("u", "p2", b"x" * 60, 100)
    parts.keep("u", "p3", b"x", 100)
    with pytest.raises(OverCapError):
        parts.assemble("u", ["p3"], 100)
    parts.keep("v", "p1", b"x" * 60, 100)
    with pytest.raises(OverCapError):
        parts.assemble("v", ["p1", "p1"], 100)  # a part named twice is in the file twice
    parts.keep("w", "p1", b"x", 100)
    parts.keep("w", "p2", None, 100)
    with pytest.raises(UnseenPartError, match="unread"):
        parts.assemble("w", ["p1"], 100)


def test_the_uploads_kept_are_bounded(tmp_path: Path) -> None:
    parts = StagedParts(tmp_path)
    for upload in range(MOST_UPLOADS + 5):
        parts.keep(f"u{upload}", "p", b"x", 10)
    assert len(list(tmp_path.iterdir())) == MOST_UPLOADS
    assert parts.assemble(f"u{MOST_UPLOADS + 4}", ["p"], 10) == b"x"


def test_a_completes_parts_and_a_parts_form_field_are_read() -> None:
    assert named_parts(b'{"part_ids": ["a", "b"], "md5": ""}') == ["a", "b"]
    for body in (b"{", b'{"part_ids": "a"}', b'{"part_ids": [1]}', b"[]"):
        with pytest.raises(UnseenPartError):
            named_parts(body)
    form = (
        b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nno\r\n'
        b'--b\r\nContent-Disposition: form-data; name="data"; filename="d"\r\n\r\nline\nline\r\n--b--\r\n'
    )
    assert form_field(form, b"b", "data") == b"line\nline"
    assert form_field(form, b"b", "missing") is None
    assert form_field(b"not a form", b"b", "data") is None
    # Which of two fields of one name a server keeps differs from server to server: neither is the part.
    twice = form.replace(
        b"--b--", b'--b\r\nContent-Disposition: form-data; name="data"\r\n\r\nother\r\n--b--'
    )
    assert form_field(twice, b"b", "data") is None


def test_the_joined_file_is_read_as_a_batch_file_is() -> None:
    view = read_batch_file(f"{CLEAN}\n{UNASKED}\n".encode())
    assert [tool.where for tool in view.declared_tools] == ["[1].body.tools[0]"]


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    extra = "redaction: {requests: true}\ninspection: {max_body_bytes: 64KiB}\n"
    return _agent(start_proxy(mode="enforce", extra=extra), monkeypatch)


def upload_in_parts(client: openai.OpenAI, upstream: FakeUpstream, *pieces: bytes) -> list[str]:
    """Sends ``pieces`` as the parts of upload ``upload_1``, the fake provider naming each; their ids."""
    ids = []
    for number, piece in enumerate(pieces):
        part = {"id": f"part_{number}", "object": "upload.part", "created_at": 1, "upload_id": "upload_1"}
        upstream.reply = Reply(body=json.dumps(part).encode())
        ids.append(client.uploads.parts.create("upload_1", data=piece).id)
    return ids


COMPLETED = {
    "id": "upload_1",
    "object": "upload",
    "bytes": 1,
    "created_at": 1,
    "expires_at": 2,
    "filename": "b.jsonl",
    "purpose": "batch",
    "status": "completed",
}


def test_a_line_split_across_parts_refuses_the_complete(enforce: Proxy, upstream: FakeUpstream) -> None:
    client = openai_client(upstream)
    whole = f"{CLEAN}\n{UNASKED}\n".encode()
    middle = whole.index(b"server_url")
    ids = upload_in_parts(client, upstream, whole[:middle], whole[middle:])
    assert [refusals(last_record(enforce, count)) for count in (1, 2)] == [[], []]
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.complete("upload_1", part_ids=ids)
    assert len(upstream.received) == 2
    assert refusals(last_record(enforce, 3)) == [
        ("lateral_movement", MCP_SERVER_EGRESS_RULE, "upload[1].body.tools[0]", True),
        ("tool_abuse", "tool-mcp-unrestricted", "upload[1].body.tools[0]", True),
    ]
    # The same parts in the order that makes a clean file complete, and the upload is then forgotten.
    clean = f"{CLEAN}\n".encode()
    ids = upload_in_parts(client, upstream, clean[:20], clean[20:])
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    assert client.uploads.complete("upload_1", part_ids=ids).status == "completed"
    assert refusals(last_record(enforce, 6)) == []
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.complete("upload_1", part_ids=ids)
    assert refusals(last_record(enforce, 7))[0][1:] == ("inspection.staged_upload", "request", True)


def test_a_secret_split_across_parts_refuses_the_complete(enforce: Proxy, upstream: FakeUpstream) -> None:
    client = openai_client(upstream)
    whole = f"{KEYED}\n".encode()
    middle = whole.index(AWS_KEY.encode()) + 8
    ids = upload_in_parts(client, upstream, whole[:middle], whole[middle:])
    assert AWS_KEY.encode() not in upstream.received[0].body + upstream.received[1].body
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.complete("upload_1", part_ids=ids)
    record = last_record(enforce, 3)
    assert record["decision"] == "blocked"
    # A file of one line is one JSON document, read as a batch file of one line is.
    found = [(f["rule"], f["where"], f["action"], f["enforced"]) for f in record["findings"]]
    assert found == [("aws-access-key-id", "upload.body.input", "redact", True)]


def test_parts_not_seen_or_over_the_cap_refuse_the_complete(enforce: Proxy, upstream: FakeUpstream) -> None:
    client = openai_client(upstream)
    ids = upload_in_parts(client, upstream, f"{CLEAN}\n".encode())
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.complete("upload_1", part_ids=[*ids, "part_sent_around"])
    assert refusals(last_record(enforce, 2))[0][1:] == ("inspection.staged_upload", "request", True)
    line = f"{CLEAN}\n".encode() * (40 * 1024 // len(CLEAN))
    ids += upload_in_parts(client, upstream, line, line)
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    with pytest.raises(openai.APIStatusError) as refused:
        client.uploads.complete("upload_1", part_ids=ids[1:])
    assert refused.value.status_code == 413
    assert refusals(last_record(enforce, 5))[0][1:] == ("inspection.decoded_over_cap", "request", True)


@dataclass(frozen=True)
class Upload:
    """An agent's HTTP client sending the chunks of upload ``g1`` to ``url`` through egressguard."""

    client: httpx.Client
    url: str

    def chunk(self, command: str, offset: int, chunk: bytes) -> httpx.Response:
        """A chunk of Gemini's protocol (``X-Goog-Upload-Command`` at ``X-Goog-Upload-Offset``)."""
        headers = {**HEADERS, "X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
        return self.client.post(
            f"{self.url}?upload_id=g1&upload_protocol=resumable", content=chunk, headers=headers
        )

    def put(self, content_range: str, chunk: bytes) -> httpx.Response:
        """A chunk of the ``uploadType=resumable`` protocol, placed by its ``Content-Range``."""
        headers = {**HEADERS, "Content-Range": content_range}
        return self.client.put(
            f"{self.url}?uploadType=resumable&upload_id=g1", content=chunk, headers=headers
        )


@contextmanager
def upload_to(
    proxy: Proxy,
    upstream: FakeUpstream,
    route: str = GEMINI_UPLOAD,
    agent: str = AGENT,
    token: str = AGENT_TOKEN,
) -> Iterator[Upload]:
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with httpx.Client(proxy=proxy.url(agent, token), verify=context, timeout=CLIENT_TIMEOUT_S) as client:
        yield Upload(client, f"{upstream.url}{route}")


def fetching_file() -> tuple[bytes, int, int]:
    """A Gemini batch file whose second line has the API fetch an address outside the allowlist; where
    inside that address to cut it, and where its first line ends."""
    clean = json.dumps({"key": "k0", "request": {"contents": [{"parts": [{"text": "hello"}]}]}})
    fetching = json.dumps({"key": "k1", "request": GEMINI})
    whole = f"{clean}\n{fetching}\n".encode()
    return whole, whole.index(OUTSIDE.encode()) + 10, len(clean) + 1


FETCHED_WHERE = [
    "upload[1].request.contents[0].parts[0].fileData.fileUri",
    "upload[1].request.tools[0].urlContext",
]


@pytest.mark.parametrize("route", [GEMINI_UPLOAD, "/resumable/upload/v1beta/files"])
def test_a_gemini_upload_in_chunks_is_read_as_the_file_they_make(
    enforce: Proxy, upstream: FakeUpstream, route: str
) -> None:
    whole, middle, first_line = fetching_file()
    with upload_to(enforce, upstream, route) as upload:
        upstream.reply = Reply(body=b"", headers={"X-Goog-Upload-Status": "active"})
        assert upload.chunk("upload", 0, whole[:middle]).status_code == 200
        upstream.reply = Reply(body=b'{"file": {"name": "files/f1"}}')
        refused = upload.chunk("upload, finalize", middle, whole[middle:])
        assert refused.status_code == 403
        assert len(upstream.received) == 1
        assert [where for _, rule, where, _ in refusals(last_record(enforce, 2))] == FETCHED_WHERE
        assert {rule for _, rule, _, _ in refusals(last_record(enforce, 2))} == {PROVIDER_FETCH_RULE}
        # A last chunk after a gap (a chunk that went around egressguard) is refused too.
        refused = upload.chunk("upload, finalize", middle + 5, whole[middle + 5 :])
        assert refused.status_code == 403
        assert refusals(last_record(enforce, 3))[0][1:] == ("inspection.staged_upload", "request", True)
        # The chunks of a clean file make it, and the upload is then forgotten.
        upload.chunk("upload", 0, whole[:20])
        assert upload.chunk("upload, finalize", 20, whole[20:first_line]).status_code == 200
        assert refusals(last_record(enforce, 5)) == []
        assert upload.chunk("upload, finalize", 20, b"x").status_code == 403


def test_a_cloud_storage_upload_placed_by_content_range_is_read_as_the_file_its_chunks_make(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """``uploadType=resumable``: chunks sent by PUT, each answered 308 with the range the server holds
    until the last. A chunk the server took only part of is kept as far as it took it, the client
    sending the rest again from there; a range that does not read is refused."""
    whole, middle, first_line = fetching_file()

    def resume(received: Received) -> Reply:
        placed = received.headers["Content-Range"].split()[1]
        first, _, rest = placed.partition("-")
        last, _, total = rest.partition("/")
        if total != "*" and int(last) + 1 == int(total):
            return Reply(body=b'{"name": "batch.jsonl", "bucket": "corp-docs"}')
        # The server keeps at most 30 bytes of a chunk.
        held = min(int(last), int(first) + 29)
        return Reply(body=b"", status=308, headers={"Range": f"bytes=0-{held}"})

    upstream.answer = resume
    with upload_to(enforce, upstream, STORAGE_UPLOAD) as upload:
        assert upload.put(f"bytes 0-{middle - 1}/*", whole[:middle]).status_code == 308
        # The server held 30 bytes: the client resends from there.
        assert upload.put(f"bytes 30-{middle - 1}/*", whole[30:middle]).status_code == 308
        sent = upload.put(f"bytes 60-{middle - 1}/*", whole[60:middle])
        assert sent.headers["Range"] == "bytes=0-89"
        refused = upload.put(f"bytes 90-{len(whole) - 1}/{len(whole)}", whole[90:])
        assert refused.status_code == 403
        assert [where for _, rule, where, _ in refusals(last_record(enforce, 4))] == FETCHED_WHERE
        assert len(upstream.received) == 3
        # A clean file in chunks, finalized by a request with no bytes: it passes.
        clean = whole[:first_line]
        starts = range(0, len(clean), 30)
        for start in starts:
            piece = clean[start : start + 30]
            assert upload.put(f"bytes {start}-{start + len(piece) - 1}/*", piece).status_code == 308
        upstream.answer = None
        upstream.reply = Reply(body=b'{"name": "batch.jsonl"}')
        assert upload.put(f"bytes */{len(clean)}", b"").status_code == 200
        finalized = 4 + len(starts) + 1
        assert refusals(last_record(enforce, finalized)) == []
        # A range that does not read, or the last chunk of a file whose first chunks did not pass here.
        last = f"bytes {len(clean) - 5}-{len(clean) - 1}/{len(clean)}"
        for count, content_range in enumerate(("bytes=0-4", last), finalized + 1):
            refused = upload.put(content_range, b"x" * 5)
            assert refused.status_code == 403
            unread = ("inspection.staged_upload", "request", True)
            assert refusals(last_record(enforce, count))[0][1:] == unread


def test_an_upload_id_is_kept_apart_for_each_agent_and_server(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, upstream_pki: UpstreamPKI
) -> None:
    """An upload id is the server's: another agent, or the same agent at another server, sending a chunk
    under the same id keeps its own chunk, and neither replaces nor completes the first agent's."""
    proxy = start_proxy(mode="enforce", other_agent="batch-bot")
    whole, middle, _ = fetching_file()
    decoy = b" " * middle
    other_server = FakeUpstream(upstream_pki)
    try:
        for server in (upstream, other_server):
            server.reply = Reply(body=b"", headers={"X-Goog-Upload-Status": "active"})
        with upload_to(proxy, upstream) as first:
            assert first.chunk("upload", 0, whole[:middle]).status_code == 200
        with upload_to(proxy, upstream, agent="batch-bot", token="tob-hctab") as other_agent:
            assert other_agent.chunk("upload", 0, decoy).status_code == 200
        with upload_to(proxy, other_server) as elsewhere:
            assert elsewhere.chunk("upload", 0, decoy).status_code == 200
        with upload_to(proxy, upstream) as first:
            refused = first.chunk("upload, finalize", middle, whole[middle:])
        assert refused.status_code == 403
        assert [where for _, _, where, _ in refusals(proxy.wait_for_records(4)[-1])] == FETCHED_WHERE
        # The other agent's own chunks make its own file, which its finalize completes.
        other_server.reply = upstream.reply = Reply(body=b'{"file": {"name": "files/f2"}}')
        with upload_to(proxy, upstream, agent="batch-bot", token="tob-hctab") as other_agent:
            completed = other_agent.chunk("upload, finalize", middle, whole[middle:])
        assert completed.status_code == 200
        assert refusals(proxy.wait_for_records(5)[-1]) == []
    finally:
        other_server.close()


def test_an_upload_through_the_gemini_sdk_in_chunks_is_read_joined(
    enforce: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official Gemini SDK uploads a file in chunks of ``CHUNK_SIZE`` (made small here): the file
    its chunks make is read before its last chunk leaves."""
    from google import genai
    from google.genai import _api_client

    monkeypatch.setattr(_api_client, "CHUNK_SIZE", 64)
    monkeypatch.setattr(_api_client, "INITIAL_RETRY_DELAY", 0)
    session = f"{upstream.url}{GEMINI_UPLOAD}?upload_id=g1&upload_protocol=resumable"

    def protocol(received: Received) -> Reply:
        command = received.headers.get("X-Goog-Upload-Command", "")
        if command == "start":
            return Reply(body=b"{}", headers={"X-Goog-Upload-URL": session, "X-Goog-Upload-Status": "active"})
        if "finalize" in command:
            name = b'{"file": {"name": "files/f1", "mimeType": "text/plain"}}'
            return Reply(body=name, headers={"X-Goog-Upload-Status": "final"})
        return Reply(body=b"", headers={"X-Goog-Upload-Status": "active"})

    upstream.answer = protocol
    client = gemini_client(upstream)
    whole, _, first_line = fetching_file()
    with pytest.raises(genai.errors.ClientError) as refused:
        client.files.upload(file=io.BytesIO(whole), config={"mime_type": "text/plain"})
    assert refused.value.code == 403
    chunks = [r for r in upstream.received if "upload_id=g1" in r.path]
    assert b"".join(r.body for r in chunks) == whole[: len(chunks) * 64]
    assert all(r.headers["X-Goog-Upload-Command"] == "upload" for r in chunks)
    # The SDK sends a chunk again where the answer says nothing of the upload's state, as a refusal does.
    refused_count = 1 + len(chunks) + _api_client.MAX_RETRY_COUNT
    rules = {rule for _, rule, _, _ in refusals(last_record(enforce, refused_count))}
    assert rules == {PROVIDER_FETCH_RULE}
    upstream.received.clear()
    uploaded = client.files.upload(file=io.BytesIO(whole[:first_line]), config={"mime_type": "text/plain"})
    assert uploaded.name == "files/f1"
    assert len(upstream.received) == 1 + -(-first_line // 64)
    assert refusals(last_record(enforce, refused_count + len(upstream.received))) == []


def test_a_binary_file_uploaded_in_parts_is_read_as_binary_content(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """A PDF or an image uploaded through Uploads is no batch file: the file its parts make is read in
    its printable runs, as one uploaded whole is, and passes where it holds nothing."""
    client = openai_client(upstream)
    document = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(range(256)) * 8
    ids = upload_in_parts(client, upstream, document[:1000], document[1000:])
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    assert client.uploads.complete("upload_1", part_ids=ids).status == "completed"
    assert refusals(last_record(enforce, 3)) == []
    keyed = document[:1000] + b"\x00key=" + AWS_KEY.encode() + b"\x00" + document[1000:]
    middle = keyed.index(AWS_KEY.encode()) + 8
    ids = upload_in_parts(client, upstream, keyed[:middle], keyed[middle:])
    upstream.reply = Reply(body=json.dumps(COMPLETED).encode())
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.complete("upload_1", part_ids=ids)
    found = [
        (f["rule"], f["enforced"])
        for f in last_record(enforce, 6)["findings"]
        if f["rule"] != "egress.first_seen"
    ]
    assert found == [("aws-access-key-id", True)]


def test_a_gemini_upload_finalized_by_a_bare_command_is_read_joined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """The resumable protocol lets a finalize with no bytes follow the last chunk: it completes the file
    the chunks make, read as a last chunk that finalizes is."""
    fetching = json.dumps({"key": "k1", "request": GEMINI})
    whole = f"{fetching}\n".encode()
    middle = whole.index(OUTSIDE.encode()) + 10
    with upload_to(enforce, upstream) as upload:
        upstream.reply = Reply(body=b"", headers={"X-Goog-Upload-Status": "active"})
        assert upload.chunk("upload", 0, whole[:middle]).status_code == 200
        assert upload.chunk("upload", middle, whole[middle:]).status_code == 200
        upstream.reply = Reply(body=b'{"file": {"name": "files/f1"}}')
        assert upload.chunk("finalize", len(whole), b"").status_code == 403
        assert {rule for _, rule, _, _ in refusals(last_record(enforce, 3))} == {PROVIDER_FETCH_RULE}
