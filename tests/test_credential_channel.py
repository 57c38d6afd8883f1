"""The credential channel: provider keys a destination does not take in its credential headers and query
parameters are findings; its own kind of key, and opaque values, pass."""

from __future__ import annotations

import base64
import textwrap

import pytest

from proxy.config.policy import Policy, parse_policy
from proxy.config.yamlschema import SchemaError
from proxy.detectors.credential_channel import (
    DEFAULT_EXPECTED,
    DEFAULT_TABLE,
    KNOWN_LOOKUPS,
    RULE,
    SECRETS_PACK,
    CredentialTable,
    Expected,
    expected_rules,
    provider_of,
    sent_where_it_belongs,
)
from proxy.inspection import Detectors, TurnInspector, is_credential_header
from proxy.model import Threat
from proxy.scanning.rulepack import load_pack, pack_path
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AWS = "AKIAQWERTY234567ABCD"
AWS_RULE = "aws-access-key-id"
OPENAI = (
    "sk-proj-F056SrJlbzK0Fr5eu_8enJPV7DPeWHtmzqGq6vfX82s2T0d3FYeklV2hSBf17e_q-GVD8H9_PkT3BlbkFJYcELnFdYprur"
    "GjvxnGNZ_RN-UvgyCIXCwnLiZveqMrgxAbbkEUEGAeZpMQJPYsB5DyaJ2qN_l8"
)
ANTHROPIC = (
    "sk-ant-api03-TOt9aL0Mk6OCVJ3iWHwF2dylxG5C1YLDa2iqN1Zv7SScN1TeqLcC5FJp5jjEMXiE09JQkk6aMnAlo9yYo6MJWjIX"
    "OjznMAA"
)
GEMINI = "AIzannhlfRIcV-fxvkKqp9zIgbo6hEbWuMtO4dQ"
OPAQUE = "tool-7f3a9c2b1d0e4f56a7b8"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
POLICY = """\
    mode: enforce
    agents: {bot: {token: t, role: r}}
    roles: {r: {egress: {allow: ["*"]}}}
    """


COOKIE_JAR = (
    "_ga=GA1.1.1869438157.1733472000; _gid=GA1.1.2045112233.1733472000; "
    f"session={JWT}; csrftoken=Xk3b9QpL2mN8vR4tY7wZ1aC6dF0gH5jK; "
    "AWSALB=8Jv2kq1XgHk0dFbmQe9w0o3Y6uP5zR7tL4nM2cV1bX8aS3dE6fG9hJ0kL2pQ7rS1tU4vW; "
    'theme="dark"; __Secure-next-auth.session-token=a3f1c9e27b5d4e08b6a2f7c1d9e3b5a7'
)
"""Cookies a browser or an agent's HTTP client keeps for a web app: analytics, a JWT session, a CSRF token,
a load balancer's stickiness, a quoted preference."""
REQUEST_ID = "ZjQ3YWMxMGItNThjYy00MzcyLWE1NjctMGUwMmIyYzNkNDc5"
"""A UUID in base64, as tracing headers carry it."""


def basic(user: str, password: str) -> str:
    return "Basic " + b64(f"{user}:{password}")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(textwrap.dedent(POLICY), "policy.yaml", environ={})


@pytest.fixture(scope="module")
def detectors(policy: Policy) -> Detectors:
    return Detectors(policy, b"k" * 32)


def inspect(
    detectors: Detectors, policy: Policy, host: str, headers: list[tuple[str, str]], target: str = "/v1/x"
) -> TurnInspector:
    turn = Turn(TurnContext(agent_id="bot", role="r", user_id="u", purpose="p", consent_id="c"))
    turn.egress_host = host
    inspector = TurnInspector(detectors, policy, SqliteStateStore(None), turn)
    inspector.scan_headers(headers, sent_by_agent=True)
    inspector.scan_url(host, target)
    return inspector


ALLOWED = [
    pytest.param("api.openai.com", [("Authorization", f"Bearer {OPENAI}")], id="openai-bearer"),
    pytest.param("API.OpenAI.com.", [("authorization", f"Bearer {OPENAI}")], id="openai-host-spelling"),
    pytest.param("api.anthropic.com", [("x-api-key", ANTHROPIC)], id="anthropic-x-api-key"),
    pytest.param("generativelanguage.googleapis.com", [("x-goog-api-key", GEMINI)], id="gemini-header"),
    pytest.param("tool.example", [("X-Api-Key", OPAQUE)], id="opaque-tool-key"),
    pytest.param("tool.example", [("Authorization", f"Bearer {JWT}")], id="jwt-bearer"),
    pytest.param("tool.example", [("Authorization", basic("bot", "hunter2-not-a-key"))], id="basic-opaque"),
    pytest.param("tool.example", [("Cookie", "session=abc123; csrftoken=zzz")], id="cookie"),
    pytest.param(
        "tool.example", [("cookie", "session=abc123"), ("cookie", f"csrftoken={OPAQUE}")], id="cookie-crumbs"
    ),
    pytest.param(
        "api.openai.com",
        [("authorization", f"Bearer {OPENAI[:40]}"), ("Authorization", OPENAI[40:])],
        id="own-key-across-repeats",
    ),
    pytest.param("tool.example", [("Cookie", COOKIE_JAR)], id="a-browsers-cookie-jar"),
    pytest.param(
        "tool.example",
        [("Authorization", basic("alice", "correct horse battery staple")), ("X-Request-Id", REQUEST_ID)],
        id="basic-password-and-a-base64-request-id",
    ),
    pytest.param("tool.example", [("PRIVATE-TOKEN", OPAQUE)], id="gitlab-style-opaque"),
    pytest.param("tool.example", [("Proxy-Authorization", basic("bot", GITHUB))], id="proxy-credentials"),
]


@pytest.mark.parametrize(("host", "headers"), ALLOWED)
def test_the_key_a_destination_takes_and_opaque_keys_pass(
    detectors: Detectors, policy: Policy, host: str, headers: list[tuple[str, str]]
) -> None:
    """A destination's own kind of key in its field, an opaque value, a JWT or a session cookie: nothing."""
    inspector = inspect(detectors, policy, host, headers)
    assert inspector.turn.findings == [] and inspector.request_block() is None


REFUSED = [
    pytest.param("tool.example", [("X-Api-Key", GITHUB)], "github-pat", id="github-in-x-api-key"),
    pytest.param(
        "api.anthropic.com", [("x-api-key", OPENAI)], "openai-project-key", id="openai-to-anthropic"
    ),
    pytest.param("api.openai.com", [("x-api-key", OPENAI)], "openai-project-key", id="openai-wrong-field"),
    pytest.param(
        "api.openai.com", [("Authorization", f"Bearer {OPENAI} {GITHUB}")], "github-pat", id="second-secret"
    ),
    pytest.param(
        "api.openai.com",
        [("Authorization", f"Bearer {OPENAI}"), ("X-Auth-Token", AWS)],
        "aws-access-key-id",
        id="extra-header",
    ),
    pytest.param("tool.example", [("Authorization", f"token {GITHUB}")], "github-pat", id="no-scheme-host"),
    pytest.param("tool.example", [("Authorization", basic("x", GITHUB))], "github-pat", id="in-basic-auth"),
    pytest.param("tool.example", [("Cookie", f"s=1; t={GITHUB}")], "github-pat", id="in-a-cookie"),
    pytest.param(
        "tool.example",
        [("cookie", f"s={GITHUB[:20]}"), ("cookie", GITHUB[20:])],
        "github-pat",
        id="split-across-cookie-crumbs",
    ),
    pytest.param(
        "tool.example",
        [("Cookie", f"theme=dark; a={AWS[:8]}; b={AWS[8:]}")],
        AWS_RULE,
        id="split-across-pairs",
    ),
    pytest.param(
        "tool.example", [("Cookie", f'a="{AWS[:8]}"; b= {AWS[8:]}')], AWS_RULE, id="split-across-quoted-pairs"
    ),
    pytest.param(
        "tool.example",
        [("Cookie", "; ".join([f"p{index}=" for index in range(5000)] + [f"a={AWS[:8]}", f"b={AWS[8:]}"]))],
        AWS_RULE,
        id="split-after-thousands-of-empty-pairs-read-once-joined",
    ),
    pytest.param("tool.example", [("X-Api-Key", b64(AWS))], "aws-access-key-id", id="base64-in-x-api-key"),
    pytest.param("tool.example", [("Cookie", f"s={b64(GITHUB)}")], "github-pat", id="base64-in-a-cookie"),
    pytest.param(
        "tool.example",
        [("cookie", f"s={GITHUB}"), ("Cookie", "t=1")],
        "github-pat",
        id="whole-in-one-crumb-found-once",
    ),
    pytest.param(
        "api.openai.com",
        [("authorization", f"Bearer {OPENAI}"), ("x-api-key", GITHUB[:20]), ("X-Api-Key", GITHUB[20:])],
        "github-pat",
        id="split-across-a-repeated-header",
    ),
    pytest.param("tool.example", [("x-token-" + GITHUB, OPAQUE)], "github-pat", id="in-the-name"),
    pytest.param("tool.example", [("DD-API-KEY", GEMINI)], "gcp-api-key", id="gemini-key-elsewhere"),
    pytest.param(
        "generativelanguage.googleapis.com",
        [("x-goog-api-key", ANTHROPIC)],
        "anthropic-api-key",
        id="wrong-kind",
    ),
]


@pytest.mark.parametrize(("host", "headers", "rule"), REFUSED)
def test_a_key_the_destination_does_not_take_is_a_blocking_finding(
    detectors: Detectors, policy: Policy, host: str, headers: list[tuple[str, str]], rule: str
) -> None:
    """Any other provider's key in a credential header is ``credential.unexpected`` (credential theft),
    blocking where enforced; the record names the rule, never the value."""
    inspector = inspect(detectors, policy, host, headers)
    findings = [f for f in inspector.turn.findings if f.rule == RULE]
    assert [f.extra["secret_rule"] for f in findings] == [rule]
    (finding,) = findings
    assert finding.threat is Threat.CREDENTIAL_THEFT and inspector.request_block() is finding
    shown = f"{finding.signal} {finding.where} {finding.extra} {finding.fingerprint}"
    assert all(secret not in shown for secret in (GITHUB, OPENAI, AWS, GEMINI, ANTHROPIC))


@pytest.mark.parametrize(
    ("host", "target", "flagged"),
    [
        ("generativelanguage.googleapis.com", f"/v1/m:generate?key={GEMINI}", False),
        ("generativelanguage.googleapis.com", f"/v1/m:generate?alt=sse&key={GEMINI}&x=1", False),
        ("tool.example", f"/q?access_token={AWS}", True),
        ("tool.example", f"/q?access_token={OPAQUE}", False),
        ("tool.example", f"/q?api_key={OPENAI}", True),
        ("generativelanguage.googleapis.com", f"/v1/m?key={GEMINI}%20{GITHUB}", True),
        ("generativelanguage.googleapis.com", f"/v1/m?key={GEMINI}+{GITHUB}", True),
        ("api.openai.com", f"/v1/models?key={GEMINI}", True),
    ],
)
def test_query_parameters_named_as_credentials_follow_the_same_rule(
    detectors: Detectors, policy: Policy, host: str, target: str, flagged: bool
) -> None:
    """``?key=`` takes Gemini's key at Gemini only; any other provider's key in such a parameter is found,
    percent- or plus-encoded after the real one too."""
    inspector = inspect(detectors, policy, host, [], target)
    assert any(f.rule == RULE for f in inspector.turn.findings) is flagged
    assert (inspector.request_block() is not None) is flagged


def test_a_configured_host_takes_its_keys_and_replaces_a_default() -> None:
    """``credentials`` adds a tool host's key kinds (in the named fields only) and replaces a default."""
    policy = parse_policy(
        textwrap.dedent(POLICY)
        + textwrap.dedent("""\
            credentials:
              api.github.com: {rules: [github-pat, github-fine-grained-pat], fields: [authorization]}
              "*.aws.example": {rules: [aws-access-key-id]}
              api.openai.com: {rules: []}
            """),
        "policy.yaml",
        environ={},
    )
    detectors = Detectors(policy, b"k" * 32)
    assert not inspect(
        detectors, policy, "api.github.com", [("Authorization", f"token {GITHUB}")]
    ).turn.findings
    assert inspect(detectors, policy, "api.github.com", [("X-Api-Key", GITHUB)]).turn.findings
    assert not inspect(detectors, policy, "s3.aws.example", [("X-Auth", AWS)]).turn.findings
    assert inspect(detectors, policy, "api.openai.com", [("Authorization", f"Bearer {OPENAI}")]).turn.findings
    assert not inspect(
        detectors, policy, "api.anthropic.com", [("x-api-key", ANTHROPIC)]
    ).turn.findings  # the defaults of other hosts stay


@pytest.mark.parametrize(
    ("entry", "line", "message"),
    [
        ("api.openai.com:443: {rules: [x]}", 5, "takes no port"),
        ("'bad host!': {rules: [x]}", 5, "invalid egress pattern"),
        ("api.x.com: {fields: [authorization]}", 5, "needs 'rules'"),
        ("api.x.com: {rules: x}", 5, "must be a list"),
        ("api.x.com: {rules: [github-pat], where: [y]}", 5, "unknown key 'where'"),
        ("api.x.com: {rules: [github-pat, gihtub-pat]}", 5, "not a rule of the secrets pack: 'gihtub-pat'"),
        ("api.x.com: {rules: [us-ssn]}", 5, "not a rule of the secrets pack: 'us-ssn'"),
    ],
)
def test_a_bad_credentials_entry_is_an_error_on_its_line(entry: str, line: int, message: str) -> None:
    """A host that is not one, a port, a missing or malformed rule list: ``file:line: message``."""
    with pytest.raises(SchemaError) as raised:
        parse_policy(textwrap.dedent(POLICY) + "credentials:\n  " + entry + "\n", "policy.yaml", environ={})
    assert f"policy.yaml:{line}:" in str(raised.value) and message in str(raised.value)


def test_the_defaults_name_the_three_providers_fields() -> None:
    """OpenAI takes its keys as Authorization, Anthropic as x-api-key, Gemini as x-goog-api-key or ?key=."""
    assert "openai-project-key" in expected_rules(DEFAULT_EXPECTED, "api.openai.com", "authorization")
    assert not expected_rules(DEFAULT_EXPECTED, "api.openai.com", "x-api-key")
    assert "anthropic-api-key" in expected_rules(DEFAULT_EXPECTED, "api.anthropic.com", "x-api-key")
    gemini = "generativelanguage.googleapis.com"
    assert {"gcp-api-key"} <= expected_rules(DEFAULT_EXPECTED, gemini, "key")
    assert not expected_rules(DEFAULT_EXPECTED, "evil.example", "authorization")
    with pytest.raises(ValueError, match="no port"):
        Expected.of("api.openai.com:*", ["x"])


def test_a_table_answers_each_host_and_field_as_its_entries_do() -> None:
    """The table keeps each host and field's answer: asked again, for a host in any spelling, an address,
    a subdomain of a ``*.`` entry or its bare domain, after a policy's ``*`` and network entries, and
    past the answers it keeps, it answers as its entries read one by one do."""
    configured = [
        *DEFAULT_EXPECTED,
        Expected.of("*", ["github-pat"], ["x-everywhere"]),
        Expected.of("10.0.0.0/8", ["gitlab-pat"]),
        Expected.of("*.internal.example", ["slack-bot-token"], ["token"]),
    ]
    table = CredentialTable(configured)
    hosts = [
        "api.openai.com",
        "API.OpenAI.com.",
        "generativelanguage.googleapis.com",
        "storage.googleapis.com",
        "googleapis.com",
        "slack.com",
        "hooks.slack.com",
        "x.y.internal.example",
        "internal.example",
        "10.1.2.3",
        "[::1]",
        "evil.example",
        "",
    ]
    fields = ["authorization", "x-api-key", "key", "token", "x-everywhere", "api-key"]
    for _ in range(2):
        for host in hosts:
            for field in fields:
                assert table.expected(host, field) == expected_rules(configured, host, field), (host, field)
    for number in range(KNOWN_LOOKUPS + 10):
        host = f"h{number}.slack.com"
        assert table.expected(host, "token") == expected_rules(configured, host, "token")
    assert table.expected("api.openai.com", "authorization") == expected_rules(
        configured, "api.openai.com", "authorization"
    )


SECRET_RULES = {rule.id: rule for rule in load_pack(pack_path(SECRETS_PACK)).rules}
DEFAULTS = [
    pytest.param(entry, rule, field, id=f"{entry.host}-{rule}-{field}")
    for entry in DEFAULT_EXPECTED
    for rule in sorted(entry.rules)
    for field in sorted(entry.fields)
]


def own_key(rule_id: str) -> str:
    """The key a rule's first must-match example holds: the provider's own kind of key."""
    rule = SECRET_RULES[rule_id]
    found = rule.pattern.search(rule.match_examples[0])
    assert found is not None
    return found.group(rule.secret_group)


def field_value(field: str, key: str) -> str:
    return f"Bearer {key}" if field == "authorization" else key


@pytest.mark.parametrize(("entry", "rule", "field"), DEFAULTS)
def test_every_default_takes_its_own_key_and_no_other_providers(
    detectors: Detectors, policy: Policy, entry: Expected, rule: str, field: str
) -> None:
    """Each provider's default: its own key in its own field at its host (a subdomain for ``*.``) passes;
    a foreign provider's key there (GitHub's, or OpenAI's at GitHub's hosts) is refused."""
    assert is_credential_header(field)
    host = entry.host.replace("*.", "tenant.")
    own = inspect(detectors, policy, host, [(field, field_value(field, own_key(rule)))])
    assert [f for f in own.turn.findings if f.rule == RULE] == []
    foreign, foreign_rule = (
        (OPENAI, "openai-project-key") if rule.startswith("github") else (GITHUB, "github-pat")
    )
    refused = inspect(detectors, policy, host, [(field, field_value(field, foreign))])
    assert [f.extra["secret_rule"] for f in refused.turn.findings if f.rule == RULE] == [foreign_rule]
    assert refused.request_block() is not None


@pytest.mark.parametrize(
    ("host", "headers", "rule"),
    [
        ("api.github.com", [("Authorization", f"Bearer {OPENAI}")], "openai-project-key"),
        ("slack.com", [("Authorization", f"Bearer {GITHUB}")], "github-pat"),
        ("api.stripe.com", [("Authorization", basic(GITHUB, ""))], "github-pat"),
        ("gitlab.com", [("PRIVATE-TOKEN", GITHUB)], "github-pat"),
        ("s3.us-east-1.amazonaws.com", [("X-Api-Key", OPENAI)], "openai-project-key"),
        ("api.github.com.evil.example", [("Authorization", f"token {GITHUB}")], "github-pat"),
        ("githubusercontent.evil", [("Authorization", f"token {GITHUB}")], "github-pat"),
        ("api.github.com", [("X-Api-Key", GITHUB)], "github-pat"),
    ],
)
def test_a_provider_key_at_another_providers_host_or_field_is_still_refused(
    detectors: Detectors, policy: Policy, host: str, headers: list[tuple[str, str]], rule: str
) -> None:
    """The defaults open a provider's key to its own hosts and fields only."""
    inspector = inspect(detectors, policy, host, headers)
    assert [f.extra["secret_rule"] for f in inspector.turn.findings if f.rule == RULE] == [rule]


@pytest.mark.parametrize(
    ("host", "headers"),
    [
        ("api.github.com", [("Authorization", f"token {GITHUB}")]),
        ("github.com", [("Authorization", basic("x-access-token", GITHUB))]),
        ("uploads.github.com", [("Authorization", f"Bearer {GITHUB}")]),
        ("slack.com", [("Authorization", "Bearer " + own_key("slack-bot-token"))]),
        ("hooks.slack.com", [("Authorization", "Bearer " + own_key("slack-user-token"))]),
        ("api.stripe.com", [("Authorization", basic(own_key("stripe-live-secret-key"), ""))]),
        ("gitlab.com", [("PRIVATE-TOKEN", own_key("gitlab-pat"))]),
        ("upload.pypi.org", [("Authorization", basic("__token__", own_key("pypi-upload-token")))]),
        ("us5.datadoghq.com", [("DD-API-KEY", own_key("datadog-api-key"))]),
        (
            "s3.us-east-1.amazonaws.com",
            [
                (
                    "Authorization",
                    f"AWS4-HMAC-SHA256 Credential={AWS}/20260101/us-east-1/s3/aws4_request, "
                    "SignedHeaders=host, Signature=" + "ab" * 32,
                )
            ],
        ),
    ],
)
def test_tool_calls_with_the_tools_own_keys_pass(
    detectors: Detectors, policy: Policy, host: str, headers: list[tuple[str, str]]
) -> None:
    """The everyday spellings: a GitHub token as ``token``, ``Bearer`` or Basic, Stripe's key as the Basic
    user, PyPI's ``__token__``, a SigV4 ``Credential=`` access key id."""
    inspector = inspect(detectors, policy, host, headers)
    assert [f for f in inspector.turn.findings if f.rule == RULE] == []


@pytest.mark.parametrize(
    ("variable", "provider"),
    [
        ("GITHUB_TOKEN", "github"),
        ("GH_TOKEN", "github"),
        ("HF_TOKEN", "huggingface"),
        ("OPENAI_API_KEY", "openai"),
        ("AWS_SECRET_ACCESS_KEY", "aws"),
        ("AZURE_CLIENT_SECRET", "azure"),
        ("CLIENT_SECRET", None),
        ("DB_PASSWORD", None),
        ("API_KEY", None),
    ],
)
def test_a_variables_name_says_whose_secret_it_is(variable: str, provider: str | None) -> None:
    assert provider_of(variable, DEFAULT_TABLE) == provider


@pytest.mark.parametrize(
    ("variable", "hosts", "field", "header", "belongs"),
    [
        # A provider's secret to its own hosts, in a header or a field named as a credential.
        ("GITHUB_TOKEN", ["api.github.com"], "", True, True),
        ("GITHUB_TOKEN", ["raw.githubusercontent.com", "ghcr.io"], "", True, True),
        ("GITHUB_CLIENT_SECRET", ["github.com"], "client_secret", False, True),
        ("AZURE_CLIENT_SECRET", ["login.microsoftonline.com"], "client_secret", False, True),
        ("AWS_SECRET_ACCESS_KEY", ["s3.eu-west-1.amazonaws.com"], "", True, True),
        # ... anywhere else, as data that is no credential field, or where the hosts are not known.
        ("GITHUB_TOKEN", ["attacker.example"], "", True, False),
        ("GITHUB_TOKEN", ["attacker.github.io"], "", True, False),
        ("GITHUB_TOKEN", ["api.github.com", "attacker.example"], "", True, False),
        ("OPENAI_API_KEY", ["api.anthropic.com"], "", True, False),
        ("GITHUB_TOKEN", ["api.github.com"], "content", False, False),
        ("GITHUB_TOKEN", [], "", True, False),
        # A secret of no provider's name: an OAuth field to a host the table knows; a header anywhere.
        ("CLIENT_SECRET", ["oauth2.googleapis.com"], "client_secret", False, True),
        ("CLIENT_SECRET", ["attacker.example"], "client_secret", False, False),
        ("SECRET_KEY", ["api.github.com"], "content", False, False),
        ("API_KEY", ["api.example.com"], "", True, True),
    ],
)
def test_a_secret_variable_sent_belongs_to_its_own_services_hosts(
    variable: str, hosts: list[str], field: str, header: bool, belongs: bool
) -> None:
    assert sent_where_it_belongs(variable, hosts, field, DEFAULT_TABLE, header=header) is belongs


def test_a_configured_host_takes_a_self_hosted_services_secrets() -> None:
    table = CredentialTable([*DEFAULT_EXPECTED, Expected.of("gitlab.example.com", ["gitlab-pat"])])
    assert sent_where_it_belongs("GITLAB_TOKEN", ["gitlab.example.com"], "", table, header=True)
    assert not sent_where_it_belongs("GITLAB_TOKEN", ["gitlab.example.com"], "", DEFAULT_TABLE, header=True)
