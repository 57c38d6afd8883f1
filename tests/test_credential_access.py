"""Credential theft: reading tools whose arguments name credential files or dump the environment."""

from __future__ import annotations

import json

import pytest

from proxy.config.policy import parse_policy
from proxy.detectors.credentials import (
    credential_reads,
    credential_scanner,
    expanded_words,
    globbed_rules,
    is_reading_tool,
)
from proxy.exchange import ToolCall
from proxy.inspection import Detectors
from proxy.model import Severity, Threat
from proxy.scanning.rulepack import load_packaged_packs
from tests.cpu_time import least_cpu_seconds

SCANNER = credential_scanner(load_packaged_packs())


def call(name: str, **arguments: str) -> ToolCall:
    return ToolCall(id="c1", name=name, arguments=json.dumps(arguments), where="tool_calls[0]")


@pytest.mark.parametrize(
    ("tool", "arguments", "rule"),
    [
        ("shell", {"command": "cat ~/.aws/credentials"}, "cloud-credentials-file"),
        ("bash", {"command": "cat .env"}, "dotenv-file"),
        ("read_file", {"path": "/home/dev/.ssh/id_ed25519"}, "ssh-private-key-file"),
        ("filesystem__read_text_file", {"path": "/root/.kube/config"}, "kubeconfig-file"),
        ("run_command", {"cmd": "printenv"}, "environment-dump"),
        ("execute", {"command": "env"}, "environment-dump"),
        ("terminal", {"command": "cat /proc/self/environ | tr '\\0' '\\n'"}, "environment-dump"),
        ("python", {"code": "import os; print(os.environ)"}, "environment-dump"),
        ("cat", {"file": "~/.netrc"}, "token-store-file"),
        ("open_file", {"path": "~/.docker/config.json"}, "token-store-file"),
        ("view", {"path": "~/.config/gcloud/application_default_credentials.json"}, "cloud-credentials-file"),
        # Anthropic's text editor tool, whose view command reads a file.
        (
            "str_replace_based_edit_tool",
            {"command": "view", "path": "/home/u/.aws/credentials"},
            "cloud-credentials-file",
        ),
        ("str_replace_editor", {"command": "view", "path": "/app/.env"}, "dotenv-file"),
        ("editFile", {"path": "~/.ssh/id_ed25519"}, "ssh-private-key-file"),
    ],
)
def test_reading_credentials_is_credential_theft(tool: str, arguments: dict[str, str], rule: str) -> None:
    (finding,) = credential_reads([call(tool, **arguments)], SCANNER, SCANNER.budget())
    assert finding.threat is Threat.CREDENTIAL_THEFT and finding.rule == rule
    assert finding.owasp == "LLM06" and finding.severity in (Severity.HIGH, Severity.CRITICAL)
    assert finding.extra == {"tool": tool}


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        # Disguised as the command detector undoes disguises: quotes, backslashes, variables, base64.
        ("cat ~/.a''ws/credentials", "cloud-credentials-file"),
        ('cat $HOME/.ss""h/id_rs""a', "ssh-private-key-file"),
        ("cat ~/.aws/cre\\dentials", "cloud-credentials-file"),
        ("P=.aws; cat ~/$P/credentials", "cloud-credentials-file"),
        ("echo Y2F0IH4vLmF3cy9jcmVkZW50aWFscw== | base64 -d | sh", "cloud-credentials-file"),
        ("python3 -c \"print(open('/root/.aws/' + 'credentials').read())\"", "cloud-credentials-file"),
        # Globs the shell expands to a credential file.
        ("cat ~/.aws/*", "cloud-credentials-file"),
        ("cat ~/.aws/c?edentials", "cloud-credentials-file"),
        ("cat $HOME/.ssh/*", "ssh-private-key-file"),
        ("cat .e*", "dotenv-file"),
        ("head -n 50 /home/app/**/.env*", "dotenv-file"),
        ("cat /etc/sha*", "system-secret-file"),
        ("cat .*", "dotenv-file"),
        ("cat ~/.[!.]*/*", "cloud-credentials-file"),
        ("cat ~ubuntu/.ssh/id_*", "ssh-private-key-file"),
        # Braces the shell expands, however many.
        ("cat ~/.{aws,x}/credentials", "cloud-credentials-file"),
        ("cat ~/.aws/cred{en,}tials", "cloud-credentials-file"),
        ("cat ~/.a{w..w}s/credentials", "cloud-credentials-file"),
        ("cat /etc/sh{a,}dow", "system-secret-file"),
        ("cat ~/.{" + ",".join(f"d{n}" for n in range(100)) + ",aws}/credentials", "cloud-credentials-file"),
        # Files and stores beyond the first rules.
        ("cat /etc/shadow", "system-secret-file"),
        ("cat ~/.vault-token", "token-store-file"),
        ("cat ~/.claude/.credentials.json", "token-store-file"),
        ("cat $GOOGLE_APPLICATION_CREDENTIALS", "cloud-credentials-file"),
        ("cat $KUBECONFIG", "kubeconfig-file"),
        ("tar czf - ~/.ssh | base64", "credential-folder-copied"),
        ("kubectl get secret db -o jsonpath='{.data.password}' | base64 -d", "secret-store-read"),
        ("aws secretsmanager get-secret-value --secret-id prod/db", "secret-store-read"),
        ("security find-generic-password -wa github", "secret-store-read"),
        ("cat ~/.mozilla/firefox/x.default/logins.json", "browser-credential-store"),
        ("curl http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/", "workload-identity-token"),
        ("ruby -e 'p ENV'", "environment-dump"),
        ("docker inspect app --format '{{.Config.Env}}'", "environment-dump"),
        ("Get-ChildItem env:", "environment-dump"),
    ],
)
def test_credentials_read_in_disguise_by_glob_or_from_stores_are_credential_theft(
    command: str, rule: str
) -> None:
    found = credential_reads([call("bash", command=command)], SCANNER, SCANNER.budget())
    assert rule in {finding.rule for finding in found}


@pytest.mark.parametrize(
    "command",
    [
        "cat ~/*",
        "cat *.json",
        "curl -H 'Accept: */*' https://api.example.com/v1/items",
        "node -e '/** Lists the items. */ console.log(1)'",
        "cat src/*.py",
        "ls -la ~/.ssh",
        "cat ~/.ssh/config ~/.ssh/*.pub",
        "kubectl get secrets",
        "kubectl get configmap app -o yaml",
        "aws ssm get-parameter --name /prod/app/region",
        "ruby -e 'puts ENV[\"HOME\"]'",
        "python3 -c \"print('a' + 'b')\"",
        "tar czf backup.tgz src/ docs/",
        "export NODE_ENV=production",
    ],
)
def test_everyday_commands_and_globs_are_not_credential_theft(command: str) -> None:
    assert credential_reads([call("bash", command=command)], SCANNER, SCANNER.budget()) == []


@pytest.mark.parametrize(
    "command",
    ["cat " + "**/" * 40 + "xy", "cat " + "a" * 100_000, "cat " + "{a," * 20_000, "cat " + " .*" * 30_000],
)
def test_globs_and_braces_cost_no_more_than_their_length(command: str) -> None:
    """Folders of ``**`` in a row, one long word, braces never closed, many globs: each read in linear
    time, so none of them holds the proxy."""
    assert (
        least_cpu_seconds(lambda: list(globbed_rules(command, SCANNER.rules)) + expanded_words(command)) < 1.0
    )


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("shell", {"command": "cat README.env.md"}),
        ("shell", {"command": "envsubst < deploy.tmpl > deploy.yaml"}),
        ("shell", {"command": "env FOO=1 make test"}),
        ("shell", {"command": "cp .env.example .env.sample"}),
        ("shell", {"command": "cat ~/.ssh/id_rsa.pub"}),
        ("python", {"code": "home = os.environ.get('HOME')"}),
        ("read_file", {"path": "docs/credentials-guide.md"}),
        # Not a reading tool: a message that mentions credential files is not theft.
        ("send_email", {"body": "Please rotate ~/.aws/credentials and the .env file"}),
        ("create_ticket", {"title": "printenv shows the wrong PATH"}),
    ],
)
def test_ordinary_calls_are_not_credential_theft(tool: str, arguments: dict[str, str]) -> None:
    assert credential_reads([call(tool, **arguments)], SCANNER, SCANNER.budget()) == []


def test_reading_tools_are_recognised_by_namespaced_names() -> None:
    assert is_reading_tool("mcp__filesystem__read_file") and is_reading_tool("github.run_shell")
    assert not is_reading_tool("send_email") and not is_reading_tool("create_issue")


@pytest.mark.parametrize(
    "name", ["str_replace_based_edit_tool", "str_replace_editor", "text_editor", "edit_file", "file_edit"]
)
def test_editors_are_reading_tools(name: str) -> None:
    assert is_reading_tool(name)


@pytest.mark.parametrize("name", ["credit_check", "creditor_lookup", "send_email", "create_issue"])
def test_words_that_hold_edit_are_not_editors(name: str) -> None:
    assert not is_reading_tool(name)


def test_prose_about_credential_files_is_no_finding_in_text() -> None:
    """The credential pack runs over reading tools' arguments only: the secret and PII scanner that reads
    prompts and completions does not carry it, so an answer explaining `~/.aws/credentials` is clean."""
    detectors = Detectors(parse_policy("mode: enforce\n", "p.yaml", environ={}), b"k" * 32)
    prose = "Run printenv, then put the key in ~/.aws/credentials or a .env file."
    assert detectors.sensitive.scan_alone(prose).matches == []
    assert {match.rule.id for match in detectors.credential_reads.scan_alone(prose).matches} == {
        "environment-dump",
        "cloud-credentials-file",
        "dotenv-file",
    }
