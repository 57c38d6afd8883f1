"""`egressguard alerts test|run` through a running proxy's admin API, and cron time zones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from proxy.alerts import AlertConfigError, load_alerts_config
from proxy.alerts.engine import next_run
from tests.harness import free_port
from tests.test_admin import Admin, chat, start_admin  # noqa: F401 - the fixture is used by name
from tests.upstream import FakeUpstream
from tests.webhook_receiver import Receiver

SCHEDULED = {
    "id": "morning",
    "description": "every morning",
    "severity": "low",
    "destinations": ["hook"],
    "schedule": "0 8 * * *",
    "query": "SELECT agent_id FROM turns",
}


def webhook(url: str) -> str:
    return f'alerts:\n  destinations:\n    secops: {{type: webhook, url: "{url}"}}\n'


def test_alerts_test_sends_one_marked_alert_to_the_rules_destinations(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """`alerts test RULE` delivers one [TEST] alert of that rule and reports each destination."""
    receiver = Receiver()
    try:
        admin = start_admin(extra=webhook(receiver.url))
        result = admin.cli("alerts", "test", "critical-secret-leak")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "critical-secret-leak -> secops: delivered" in result.stdout
        (alert,) = receiver.accepted()
        assert alert["rule"] == "critical-secret-leak" and alert["description"].startswith("[TEST]")
        assert admin.cli("alerts", "test", "no-such-rule").returncode == 1
    finally:
        receiver.close()


def test_alerts_test_fails_when_the_destination_is_unreachable(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """A destination nobody answers: exit 1 naming it and the retry."""
    admin = start_admin(extra=webhook(f"http://127.0.0.1:{free_port()}/hook"))
    result = admin.cli("alerts", "test", "critical-secret-leak", "--wait", "2")
    assert result.returncode == 1 and "secops: retrying" in result.stdout


def test_alerts_run_evaluates_a_scheduled_rule_now(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
    upstream: FakeUpstream,
) -> None:
    """`alerts run compliance-trace-gap` runs the daily query at once: a turn without a purpose is
    reported; a rule that is not scheduled is refused."""
    receiver = Receiver()
    try:
        admin = start_admin(extra=webhook(receiver.url))
        chat(admin.proxy, upstream, **{"X-Purpose": ""})
        admin.proxy.wait_for_records(1)
        result = admin.cli("alerts", "run", "compliance-trace-gap")
        assert result.returncode == 0, result.stdout + result.stderr
        (alert,) = [a for a in receiver.accepted() if a["rule"] == "compliance-trace-gap"]
        assert alert["rows"][0]["agent_id"] == "support-bot" and alert["rows"][0]["missing_purpose"] == 1
        refused = admin.cli("alerts", "run", "critical-secret-leak")
        assert refused.returncode == 1 and "not a query rule" in refused.stderr
    finally:
        receiver.close()


def test_schedules_are_read_in_utc_unless_a_tz_is_given() -> None:
    """`0 8 * * *` is 08:00 UTC by default and 08:00 local time with a tz, summer and winter."""
    utc, paris = load_alerts_config(
        {
            "destinations": {"hook": {"type": "stdout"}},
            "rules": [SCHEDULED, {**SCHEDULED, "id": "paris", "tz": "Europe/Paris"}],
        }
    ).rules
    winter = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 0, 0, tzinfo=UTC)
    assert next_run(utc, winter) == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    assert next_run(paris, winter) == datetime(2026, 1, 15, 7, 0, tzinfo=UTC)
    assert next_run(paris, summer) == datetime(2026, 7, 15, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"tz": "Mars/Olympus"}, "not a time zone name"), ({"tz": "UTC", "schedule": None}, "schedule")],
)
def test_a_bad_tz_is_a_configuration_error(extra: dict[str, object], message: str) -> None:
    """An unknown zone, or a tz on a rule without a schedule, is refused with the rule named."""
    rule = {key: value for key, value in {**SCHEDULED, **extra}.items() if value is not None}
    if "schedule" not in rule:
        rule.pop("query")
        rule["threshold"] = ">=1"
        rule["match"] = {"threat": "tool_abuse"}
    with pytest.raises(AlertConfigError, match=message):
        load_alerts_config({"destinations": {"hook": {"type": "stdout"}}, "rules": [rule]})
