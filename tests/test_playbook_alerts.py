"""The playbook's alert file (tests/fixtures/playbook, its YAML indentation restored) as egressguard reads it:
`check` names its one real error with the line, accepts it once the cron has its five fields, and its
secret-leak rule pages a loopback webhook within seconds of a leaked key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.alerts.rules import AlertConfigError, load_alerts_config
from proxy.commands.cli import main
from tests.harness import AGENT, AGENT_TOKEN, AGENT_TOKEN_ENV, Proxy, proxy_authorization
from tests.test_admin import Admin, chat, start_admin  # noqa: F401 - the fixture is used by name
from tests.upstream import FakeUpstream, Reply
from tests.webhook_receiver import Receiver

PUBLISHED = Path(__file__).parent / "fixtures" / "playbook" / "clawpulse-security-alerts.yaml"
DESTINATIONS = ("pagerduty", "slack_secops", "slack_compliance")
SYNTHETIC_AWS_KEY = "AKIA" + "Q7ZT4WNB2XK5RM3P"  # shaped like an access key id, issued to nobody


def fixed_copy(directory: Path) -> Path:
    """The published file with its one edit: the schedule's cron written with five fields."""
    path = directory / "clawpulse-security-alerts.yaml"
    path.write_text(PUBLISHED.read_text().replace('schedule: "0 9 *"', 'schedule: "0 9 * * *"'))
    return path


def schedule_line() -> int:
    return next(
        number for number, line in enumerate(PUBLISHED.read_text().splitlines(), 1) if "schedule:" in line
    )


def test_check_names_the_three_field_cron_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    """As published, the file has one error: `"0 9 *"` is not a cron expression; it is reported at its
    line, and nothing else is."""
    assert main(["check", str(PUBLISHED)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"{PUBLISHED}:{schedule_line()}: rule 'sec_compliance_trace_gap': schedule '0 9 *'"
    )


def test_check_accepts_it_with_a_five_field_cron(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every rule form it uses loads: SQL over TaskEntry with a threshold, ratio_to_baseline(...),
    see_query_N_above, a schedule; the destinations it names are listed for the policy to define, and
    the auto actions of a query returning no ids are warned about."""
    path = fixed_copy(tmp_path)
    assert main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert (
        "ok (5 alert rules; the policy using it defines destinations"
        " pagerduty, slack_compliance, slack_secops)" in captured.out
    )
    assert (
        "rule 'sec_critical_secret_leak': auto actions revoke_session, rotate_token, freeze_user act on"
        in captured.err
    )
    whole_log = [line for line in captured.err.splitlines() if "reads the whole audit log every 10s" in line]
    assert len(whole_log) == 2 and "sec_critical_secret_leak" in whole_log[0] + whole_log[1]


def test_its_rules_read_as_egressguards_triggers(tmp_path: Path) -> None:
    """Each playbook rule becomes the trigger it describes."""
    config = load_alerts_config(
        {
            "destinations": {name: {"type": "stdout"} for name in DESTINATIONS},
            "rules": str(fixed_copy(tmp_path)),
        }
    )
    rules = {rule.id: rule for rule in config.rules}
    leak = rules["sec_critical_secret_leak"]
    assert leak.query is not None and "TaskEntry" in leak.query and leak.schedule is None
    assert leak.every is not None and leak.every.total_seconds() <= 10
    assert leak.auto_actions == ("revoke_session", "rotate_token", "freeze_user")
    spike = rules["sec_injection_rate_spike"]
    assert spike.query is None and spike.baseline is not None and spike.match is not None
    assert (spike.baseline.ratio, spike.baseline.window.total_seconds(), spike.baseline.baseline_days) == (
        3,
        3600,
        14,
    )
    assert spike.match.threats == frozenset({"prompt_injection"})
    assert rules["sec_first_seen_egress"].query is not None and "WITH baseline AS" in str(
        rules["sec_first_seen_egress"].query
    )
    assert rules["sec_compliance_trace_gap"].schedule == "0 9 * * *"
    # The playbook's queries 4 and 5 look 30 and 7 days back, and only those days' files are read.
    assert (rules["sec_first_seen_egress"].reads, rules["sec_compliance_trace_gap"].reads) == (
        timedelta(days=30),
        timedelta(days=7),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("    owner: secops\n", "rule 'sec_extra': unknown key 'owner'"),
        (
            "    query: ratio_to_baseline(threat='prompt_injection', span='1h')\n",
            "ratio_to_baseline takes threat",
        ),
        ("    query: see_query_7_above\n", "'see_query_7_above' names no query of the playbook"),
        (
            "    schedule: '0 9'\n    query: SELECT 1\n",
            "schedule '0 9' is not a cron expression of five fields",
        ),
    ],
)
def test_mistakes_are_errors_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    """An unknown key, a ratio call with an argument it does not take, a reference to a query the
    playbook lacks, a short cron: each an error at its line, never ignored."""
    path = fixed_copy(tmp_path)
    text = path.read_text() + "\n  - id: sec_extra\n    threshold: '>=1'\n    destinations: [slack_secops]\n"
    if "query" not in line and "schedule" not in line:
        text += "    query: SELECT 1\n"
    text += line
    path.write_text(text)
    with pytest.raises(AlertConfigError) as raised:
        load_alerts_config(
            {"destinations": {name: {"type": "stdout"} for name in DESTINATIONS}, "rules": str(path)}
        )
    expected_line = len(text.splitlines()) - line.count("\n") + 1
    assert any(
        problem.startswith(f"{path}:{expected_line}: ") and message in problem
        for problem in raised.value.problems
    ), raised.value.problems


def test_a_query_that_cannot_run_fails_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` runs each rule's SQL over an empty log: a column TaskEntry does not have is an error."""
    path = fixed_copy(tmp_path)
    path.write_text(path.read_text().replace("AND approval_id IS NULL", "AND approver IS NULL"))
    assert main(["check", str(path)]) == 2
    assert "rule 'sec_destructive_tool_no_approval': its query does not run" in capsys.readouterr().err


@pytest.fixture
def pager() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_secret_leak_rule_pages_within_seconds(
    start_proxy: Any,
    upstream: FakeUpstream,
    pager: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The playbook's file in a policy whose destinations are a loopback webhook: the policy passes
    `check`, and a key leaked in a completion pages through sec_critical_secret_leak within seconds,
    without the key in the page."""
    rules = fixed_copy(tmp_path)
    destinations = "\n".join(f'    {name}: {{type: webhook, url: "{pager.url}"}}' for name in DESTINATIONS)
    proxy: Proxy = start_proxy(extra=f"alerts:\n  destinations:\n{destinations}\n  rules: {rules}\n")
    monkeypatch.setenv(AGENT_TOKEN_ENV, AGENT_TOKEN)
    assert main(["check", str(proxy.policy_path)]) == 0, capsys.readouterr().err
    upstream.reply = Reply(text=f"Use the key {SYNTHETIC_AWS_KEY} for the bucket.")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    client = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "The key?"}])
    leaked_at = time.monotonic()
    deadline = leaked_at + 30
    pages: list[dict[str, Any]] = []
    while not pages and time.monotonic() < deadline:
        pages = [alert for alert in pager.accepted() if alert.get("rule") == "sec_critical_secret_leak"]
        time.sleep(0.1)
    assert pages, proxy.output()[-3000:]
    assert time.monotonic() - leaked_at < 20
    assert pages[0]["severity"] == "critical" and pages[0]["count"] >= 1
    assert SYNTHETIC_AWS_KEY not in str(pager.bodies())


def test_rotate_token_issues_the_agent_a_new_token(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
    upstream: FakeUpstream,
    pager: Receiver,
    tmp_path: Path,
) -> None:
    """The secret-leak rule with its query selecting the ids its actions act on: the leak pages, the
    agent's old token is refused (407) from then on, and `egressguard tokens issue` prints a new one,
    which works."""
    rules = fixed_copy(tmp_path)
    rules.write_text(
        rules.read_text().replace(
            "SELECT 1 FROM TaskEntry", "SELECT agent_id, user_id, session_id FROM TaskEntry"
        )
    )
    destinations = "\n".join(f'    {name}: {{type: webhook, url: "{pager.url}"}}' for name in DESTINATIONS)
    admin = start_admin(extra=f"alerts:\n  destinations:\n{destinations}\n  rules: {rules}\n")
    upstream.reply = Reply(text=f"Use the key {SYNTHETIC_AWS_KEY} for the bucket.")
    chat(admin.proxy, upstream)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and admin.cli("tokens", "list").stdout.strip() == "no rotated tokens":
        time.sleep(0.2)
    listed = admin.cli("tokens", "list")
    assert AGENT in listed.stdout and "sec_critical_secret_leak" in listed.stdout, (
        listed.stdout + listed.stderr
    )
    status, _ = admin.proxy.raw(
        b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n" + proxy_authorization() + b"\r\n"
    )
    assert status == 407
    issued = admin.cli("tokens", "issue", AGENT)
    assert issued.returncode == 0, issued.stderr
    new_token = issued.stdout.strip()
    assert new_token.startswith("eg_agt_") and new_token != AGENT_TOKEN
    status, _ = admin.proxy.raw(
        b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n"
        + proxy_authorization(AGENT, new_token)
        + b"\r\n"
    )
    assert status == 200
    # The alert's own token is shown to no one; the one issued is in no page, log, audit record or file.
    kept = str(pager.bodies()) + admin.proxy.output()
    kept += "".join(path.read_text("latin-1") for path in admin.proxy.data_dir.rglob("*") if path.is_file())
    assert new_token not in kept
