"""The credential channel: request headers and query parameters named as credentials (``Authorization``,
``x-api-key``, ``?key=``) carry the agent's own key for the API it calls, so they are not read as data the
agent sends. They are a channel all the same: a GitHub token in ``X-Api-Key``, an OpenAI key in
Anthropic's ``x-api-key``, a second key after the real one, any key to a host that takes none.

The rule: a destination expects credentials of known kinds (secret rule ids) in known fields. A value in
the channel is scanned like any other text; a match of a provider's key format that the destination does
not expect there is a finding. Matches of rules that recognise only a shape every service's credential
takes (a JWT, a bearer or basic header, an assignment) say nothing about whose key it is and are left to
the destination, as is a value no rule recognises (a custom tool's opaque key). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxy.egress import HostPattern, canonical_host
from proxy.model import Action, Finding, Severity, Threat
from proxy.scanning.rulepack import Rule

RULE = "credential.unexpected"
SECRETS_PACK = "secrets"
SHAPE_ONLY_RULES = frozenset(
    {
        "jwt",
        "jwt-unsigned",
        "authorization-scheme-header",
        "authorization-bearer-header",
        "authorization-basic-header",
        "header-api-key",
        "generic-password-assignment",
        "generic-secret-assignment",
        "generic-api-key-assignment",
        "dotenv-secret",
        "publishable-key",
    }
)
"""Secret rules that recognise a credential's shape, not its issuer: what a destination's own scheme
looks like as often as anything else."""
UNSENT_FIELDS = frozenset({"proxy-authorization"})
"""Credential headers that never leave egressguard: the agent's credentials for the proxy itself."""
KNOWN_LOOKUPS = 4096
"""The hosts and fields a ``CredentialTable`` keeps the answers for; it starts again when full."""


@dataclass(frozen=True, slots=True)
class Expected:
    """Credentials a destination takes: rule ids, in fields (lower-case header or query parameter names;
    empty: any field named as a credential). ``host`` is the policy's pattern as written."""

    host: str
    rules: frozenset[str]
    fields: frozenset[str] = frozenset()
    pattern: HostPattern | None = None

    @classmethod
    def of(cls, host: str, rules: Iterable[str], fields: Iterable[str] = ()) -> Expected:
        """Raises ValueError for a host pattern that is not one or that names a port."""
        pattern = HostPattern.parse(host, None)
        if pattern.port is not None or host.strip().endswith(":*"):
            raise ValueError(f"{host!r}: a credentials host takes no port")
        return cls(host, frozenset(rules), frozenset(field.lower() for field in fields), pattern)

    def covers(self, host: str, field: str) -> bool:
        assert self.pattern is not None
        return self.pattern.names(canonical_host(host)) and (not self.fields or field in self.fields)


BEARER = ("authorization",)
"""``Authorization``: a bearer token, or a key in Basic auth (git over HTTPS, registry uploads)."""
MODEL_PROVIDERS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    # (hosts, secret rule ids, fields): each provider's own keys where its API takes them.
    (
        ("api.openai.com",),
        ("openai-project-key", "openai-admin-key", "openai-service-account-key", "openai-legacy-key"),
        BEARER,
    ),
    (
        ("api.anthropic.com",),
        ("anthropic-api-key", "anthropic-admin-key", "anthropic-oauth-token"),
        ("x-api-key", "authorization"),
    ),
    (
        ("generativelanguage.googleapis.com",),
        ("gcp-api-key", "google-ai-studio-key"),
        ("x-goog-api-key", "key"),
    ),
    (("generativelanguage.googleapis.com",), ("google-oauth-access-token",), BEARER),
    (("*.openai.azure.com", "*.cognitiveservices.azure.com"), ("azure-openai-api-key",), ("api-key",)),
    (("api.groq.com",), ("groq-api-key",), BEARER),
    (("api.mistral.ai", "codestral.mistral.ai"), ("mistral-api-key",), BEARER),
    (("api.cohere.com", "api.cohere.ai"), ("cohere-api-key",), BEARER),
    (("api.replicate.com",), ("replicate-api-token",), BEARER),
    (("api.together.xyz", "api.together.ai"), ("together-api-key", "together-legacy-key"), BEARER),
    (("api.perplexity.ai",), ("perplexity-api-key",), BEARER),
    (("openrouter.ai",), ("openrouter-api-key",), BEARER),
    (("api.deepseek.com",), ("deepseek-api-key",), BEARER),
    (("api.x.ai",), ("xai-api-key",), BEARER),
    (("api.fireworks.ai",), ("fireworks-api-key",), BEARER),
    (("api.cerebras.ai",), ("cerebras-api-key",), BEARER),
    (("api.ai21.com",), ("ai21-api-key",), BEARER),
    (("api.voyageai.com",), ("voyage-api-key",), BEARER),
)
"""The model providers' APIs (an agent's model, its embeddings): each one's hosts, key rules and the
fields its API takes them in. Vertex AI and Bedrock are served from their clouds' hosts, whose keys are
``CLOUD_APIS``' (``MODEL_CLOUD_HOSTS`` names their model hosts)."""
MODEL_CLOUD_HOSTS = re.compile(
    r"(?:[a-z]+-[a-z]+[0-9]+-)?aiplatform\.googleapis\.com"
    r"|bedrock(?:-runtime|-agent-runtime|-agent)?(?:-fips)?\.[a-z]{2}(?:-gov)?-[a-z]+-[0-9]+\.amazonaws\.com"
)
"""Vertex AI's global and regional endpoints (``aiplatform.googleapis.com``,
``us-central1-aiplatform.googleapis.com``) and Bedrock's by region, FIPS ones too (``bedrock-runtime``
for models, ``bedrock`` for their management, ``bedrock-agent-runtime`` and ``bedrock-agent`` for
agents): the model hosts among ``*.googleapis.com`` and ``*.amazonaws.com``, where storage, compute and
every other service of the two clouds is served too."""
MODEL_PROVIDER_HOSTS = tuple(
    HostPattern.parse(host, None) for hosts, _, _ in MODEL_PROVIDERS for host in hosts
)
CLOUD_APIS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("*.googleapis.com",),
        ("gcp-api-key", "google-oauth-access-token"),
        ("authorization", "x-goog-api-key", "key"),
    ),
    (
        ("*.amazonaws.com",),
        ("aws-access-key-id", "aws-temporary-access-key-id", "aws-session-token", "aws-bedrock-api-key"),
        ("authorization", "x-amz-security-token", "x-amz-credential"),
    ),
)
"""Google Cloud's and AWS's APIs, Vertex AI and Bedrock among them: any of their services takes the
cloud's keys."""
PROVIDERS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    *MODEL_PROVIDERS,
    *CLOUD_APIS,
    (
        # The API, git over HTTPS, raw files, release downloads and the container and package registries.
        (
            "api.github.com",
            "uploads.github.com",
            "github.com",
            "*.github.com",
            "*.githubusercontent.com",
            "ghcr.io",
        ),
        (
            "github-pat",
            "github-fine-grained-pat",
            "github-oauth-token",
            "github-user-to-server-token",
            "github-server-to-server-token",
            "github-refresh-token",
        ),
        BEARER,
    ),
    (
        ("gitlab.com",),
        (
            "gitlab-pat",
            "gitlab-deploy-token",
            "gitlab-ci-job-token",
            "gitlab-oauth-app-secret",
            "gitlab-feed-token",
            "gitlab-pipeline-trigger-token",
            "gitlab-runner-auth-token",
            "gitlab-agent-token",
            "gitlab-scim-token",
        ),
        ("authorization", "private-token", "job-token", "private_token", "job_token", "feed_token", "token"),
    ),
    (("api.bitbucket.org", "bitbucket.org"), ("bitbucket-app-password", "bitbucket-access-token"), BEARER),
    (
        ("slack.com", "*.slack.com"),
        (
            "slack-bot-token",
            "slack-user-token",
            "slack-app-token",
            "slack-config-token",
            "slack-legacy-token",
        ),
        ("authorization", "token"),
    ),
    (
        ("api.stripe.com", "files.stripe.com"),
        (
            "stripe-live-secret-key",
            "stripe-test-secret-key",
            "stripe-restricted-key",
            "stripe-test-restricted-key",
        ),
        BEARER,
    ),
    (("huggingface.co", "*.huggingface.co"), ("huggingface-token", "huggingface-org-token"), BEARER),
    (("api.elevenlabs.io",), ("elevenlabs-api-key",), ("xi-api-key",)),
    (("*.pinecone.io",), ("pinecone-api-key",), ("api-key",)),
    (("api.smith.langchain.com",), ("langsmith-api-key",), ("x-api-key",)),
    (
        ("api.twilio.com", "*.twilio.com"),
        ("twilio-api-key-sid", "twilio-auth-token", "twilio-credentials-pair"),
        BEARER,
    ),
    (("api.sendgrid.com",), ("sendgrid-api-key",), BEARER),
    (("api.mailgun.net", "api.eu.mailgun.net"), ("mailgun-api-key",), BEARER),
    (("*.api.mailchimp.com",), ("mailchimp-api-key",), BEARER),
    (("api.postmarkapp.com",), ("postmark-server-token",), ("x-postmark-server-token",)),
    (("discord.com",), ("discord-bot-token",), BEARER),
    (("registry.npmjs.org",), ("npm-access-token",), BEARER),
    (("upload.pypi.org",), ("pypi-upload-token",), BEARER),
    (("test.pypi.org",), ("testpypi-upload-token",), BEARER),
    (
        ("hub.docker.com", "auth.docker.io", "registry-1.docker.io"),
        ("dockerhub-pat", "dockerhub-org-token"),
        BEARER,
    ),
    (("api.notion.com",), ("notion-integration-token",), BEARER),
    (("api.linear.app",), ("linear-api-key", "linear-oauth-token"), BEARER),
    (("*.atlassian.net", "api.atlassian.com"), ("atlassian-api-token", "atlassian-legacy-api-token"), BEARER),
    (
        ("*.datadoghq.com", "*.datadoghq.eu", "*.ddog-gov.com"),
        ("datadog-api-key", "datadog-app-key"),
        ("dd-api-key", "dd-application-key"),
    ),
    (
        ("api.newrelic.com", "*.newrelic.com"),
        ("newrelic-user-api-key", "newrelic-license-key", "newrelic-insert-key", "newrelic-query-key"),
        ("api-key", "x-license-key", "x-insert-key", "x-query-key"),
    ),
    (("sentry.io", "*.sentry.io"), ("sentry-user-token", "sentry-org-token", "sentry-legacy-token"), BEARER),
    (
        ("api.cloudflare.com",),
        ("cloudflare-api-token", "cloudflare-global-api-key", "cloudflare-origin-ca-key"),
        ("authorization", "x-auth-key", "x-auth-user-service-key"),
    ),
    (("api.vercel.com",), ("vercel-token",), BEARER),
    (("api.netlify.com",), ("netlify-token", "netlify-legacy-token"), BEARER),
    (("api.heroku.com",), ("heroku-api-key", "heroku-legacy-api-key"), BEARER),
    (("api.digitalocean.com",), ("digitalocean-pat", "digitalocean-oauth-token"), BEARER),
    (("app.terraform.io",), ("terraform-cloud-token",), BEARER),
    (
        ("api.doppler.com",),
        (
            "doppler-personal-token",
            "doppler-service-token",
            "doppler-service-account-token",
            "doppler-cli-token",
        ),
        BEARER,
    ),
    (("api.pulumi.com",), ("pulumi-access-token",), BEARER),
    (("circleci.com",), ("circleci-pat",), ("circle-token", "authorization")),
    (("api.buildkite.com",), ("buildkite-token",), BEARER),
    (("api.airtable.com",), ("airtable-pat",), BEARER),
    (("api.figma.com",), ("figma-pat",), ("x-figma-token", "authorization")),
    (("api.supabase.com",), ("supabase-access-token",), BEARER),
    (("*.supabase.co",), ("supabase-secret-key",), ("apikey", "authorization")),
    (
        ("*.myshopify.com",),
        ("shopify-access-token", "shopify-custom-app-token", "shopify-private-app-token"),
        ("x-shopify-access-token", "authorization"),
    ),
    (("api.hubapi.com",), ("hubspot-private-app-token",), BEARER),
    (("api.intercom.io",), ("intercom-access-token",), BEARER),
    (("*.zendesk.com",), ("zendesk-api-token",), BEARER),
    (("api.snyk.io", "snyk.io"), ("snyk-token",), BEARER),
    (("api.getpostman.com",), ("postman-api-key",), ("x-api-key",)),
    (("*.grafana.net",), ("grafana-cloud-token", "grafana-service-account-token", "grafana-api-key"), BEARER),
    (("api.dropboxapi.com", "content.dropboxapi.com"), ("dropbox-access-token",), BEARER),
    (("api.mapbox.com",), ("mapbox-secret-token",), ("access_token",)),
    (("api.render.com",), ("render-api-key",), BEARER),
    (("rubygems.org",), ("rubygems-api-key",), BEARER),
    (("api.nuget.org", "www.nuget.org"), ("nuget-api-key",), ("x-nuget-apikey",)),
    (("crates.io",), ("crates-io-token",), BEARER),
    (("api.tailscale.com",), ("tailscale-key",), BEARER),
    (("*.okta.com",), ("okta-api-token",), BEARER),
    (("api.twitter.com", "api.x.com"), ("twitter-bearer-token",), BEARER),
    (("graph.facebook.com",), ("facebook-access-token",), ("authorization", "access_token")),
    (("*.cloud.databricks.com", "*.azuredatabricks.net"), ("databricks-token",), BEARER),
    (("connect.squareup.com",), ("square-access-token", "square-legacy-access-token"), BEARER),
    (("sourcegraph.com",), ("sourcegraph-token",), BEARER),
    (("api.typeform.com",), ("typeform-pat",), BEARER),
    (("api.contentful.com", "cdn.contentful.com"), ("contentful-pat",), BEARER),
    (("app.launchdarkly.com",), ("launchdarkly-access-token",), BEARER),
    (("dev.azure.com", "*.visualstudio.com"), ("azure-devops-pat",), BEARER),
    # Microsoft's identity platform: an app's client secret goes to its token endpoint.
    (("login.microsoftonline.com",), ("azure-ad-client-secret",), ("client_secret",)),
)
"""Tools agents call every day with the tool's own key: the hosts (``*.`` where a provider serves from
subdomains), its key rules, and the fields it reads them from."""
DEFAULT_EXPECTED: tuple[Expected, ...] = tuple(
    Expected.of(host, rules, fields) for hosts, rules, fields in PROVIDERS for host in hosts
)
"""What each provider's API takes by default; a policy entry for the same host replaces it."""


def is_model_provider(host: str) -> bool:
    """Whether ``host`` serves a model provider's API (``MODEL_PROVIDERS``, ``MODEL_CLOUD_HOSTS``)."""
    named = canonical_host(host)
    return MODEL_CLOUD_HOSTS.fullmatch(named) is not None or any(
        pattern.names(named) for pattern in MODEL_PROVIDER_HOSTS
    )


def expected_rules(table: Sequence[Expected], host: str, field: str) -> frozenset[str]:
    """The rule ids whose matches ``host`` expects in the credential field ``field`` (lower case)."""
    return frozenset(rule for entry in table if entry.covers(host, field) for rule in entry.rules)


class CredentialTable:
    """A policy's ``Expected`` entries, with ``expected_rules`` of each host and field worked out once: an
    agent sends the same credential fields to the same few hosts turn after turn, and matching a host
    against every one of the table's hundred-odd patterns cost more than the rest of a header's check."""

    __slots__ = ("_known", "entries", "providers")

    def __init__(self, entries: Iterable[Expected]) -> None:
        self.entries = tuple(entries)
        self._known: dict[tuple[str, str], frozenset[str]] = {}
        self.providers = frozenset(rule.split("-", 1)[0] for entry in self.entries for rule in entry.rules)
        """The first words of the rule ids the table's hosts take (``github`` of ``github-pat``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CredentialTable) and self.entries == other.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"CredentialTable({len(self.entries)} entries)"

    def takes(self, host: str, provider: str) -> bool:
        """Whether ``host`` takes a credential of ``provider`` (``provider_of``) in any field."""
        named = canonical_host(host)
        return any(
            entry.pattern is not None
            and entry.pattern.names(named)
            and any(rule.startswith(f"{provider}-") for rule in entry.rules)
            for entry in self.entries
        )

    def knows(self, host: str) -> bool:
        """Whether ``host`` is one whose credentials the table names: a service's own."""
        named = canonical_host(host)
        return any(entry.pattern is not None and entry.pattern.names(named) for entry in self.entries)

    def expected(self, host: str, field: str) -> frozenset[str]:
        """``expected_rules`` of the entries."""
        key = (host, field)
        rules = self._known.get(key)
        if rules is None:
            if len(self._known) >= KNOWN_LOOKUPS:
                self._known.clear()
            rules = self._known[key] = expected_rules(self.entries, host, field)
        return rules


NAME_PROVIDERS = {"gh": "github", "hf": "huggingface", "hugging": "huggingface", "google": "gcp",
                  "gemini": "google", "cf": "cloudflare", "dd": "datadog", "do": "digitalocean",
                  "tf": "terraform", "az": "azure", "claude": "anthropic", "amazon": "aws"}  # fmt: skip
"""First words of variables' names that name a provider other than as its rule ids do (``GH_TOKEN``)."""
CREDENTIAL_FIELD = re.compile(
    r"(?i)(?:secret|token|password|passwd|key|apikey|assertion|credentials?|code_verifier)$"
)
"""A field's name that says it carries a credential (``client_secret``, ``refresh_token``, ``api_key``):
where a service is handed one of its own."""


def provider_of(variable: str, table: CredentialTable) -> str | None:
    """The provider a variable's name says its secret is for, by its first word, where the table knows
    the provider's hosts (``GITHUB_TOKEN``, ``GH_TOKEN``: github; ``CLIENT_SECRET``: none)."""
    first = variable.split("_", 1)[0].lower()
    for word in (first, NAME_PROVIDERS.get(first)):
        if word is not None and word in table.providers:
            return word
    return None


def sent_where_it_belongs(
    variable: str, hosts: Sequence[str], field: str, table: CredentialTable, *, header: bool
) -> bool:
    """Whether a secret variable a command or code sends goes to its own service alone: every one of
    ``hosts`` (the destinations the command names; none: not known) takes the provider's credentials its
    name says, in a header (``header``) or in a field named as a credential (``client_secret=``); one of
    no provider's name, in a field named as a credential to hosts the table knows (an OAuth token
    request's ``client_secret=$CLIENT_SECRET`` to the provider's token endpoint), or in a header, where no
    host says whose it is."""
    provider = provider_of(variable, table)
    if provider is None:
        return header or (
            bool(hosts) and CREDENTIAL_FIELD.search(field) is not None and all(map(table.knows, hosts))
        )
    return (
        bool(hosts)
        and (header or CREDENTIAL_FIELD.search(field) is not None)
        and all(table.takes(host, provider) for host in hosts)
    )


DEFAULT_TABLE = CredentialTable(DEFAULT_EXPECTED)
"""The table of a policy that configures no credentials."""


def expectations(configured: Mapping[str, Expected]) -> CredentialTable:
    """The defaults, each replaced by the policy's entry for the same host, then the policy's others."""
    return CredentialTable(
        (*(entry for entry in DEFAULT_EXPECTED if entry.host not in configured), *configured.values())
    )


def is_provider_key(rule: Rule) -> bool:
    """Whether a rule recognises whose credential a value is: a secret rule not of ``SHAPE_ONLY_RULES``."""
    return rule.pack == SECRETS_PACK and rule.id not in SHAPE_ONLY_RULES


def unexpected_finding(rule: Rule, kind: str, where: str, host: str, value_fingerprint: str) -> Finding:
    """A provider's key in a credential field (``kind``: header or query parameter) of a destination that
    does not take it there: the secret is named by its rule id and keyed fingerprint only, the field by
    ``where`` (which the recorder redacts), since a field's name is the sender's to choose."""
    return Finding(
        threat=Threat.CREDENTIAL_THEFT,
        rule=RULE,
        signal=f"{rule.id} credential in a {kind} named as a credential, which {host} does not expect there",
        severity=Severity.CRITICAL,
        action=Action.BLOCK,
        where=where,
        owasp="LLM06",
        fingerprint=value_fingerprint,
        extra={"secret_rule": rule.id},
    )
