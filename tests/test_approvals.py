from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.control.approvals import (
    PENDING_TTL_S,
    SUMMARY_CHARS,
    Approval,
    ApprovalError,
    Approvals,
    arguments_sha256,
    canonical_arguments,
)
from proxy.state import SqliteStateStore
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.test_state import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def approvals(clock: FakeClock) -> Iterator[Approvals]:
    store = SqliteStateStore(None, clock=clock)
    yield Approvals(store, clock=clock)
    store.close()


def no_redaction(text: str) -> str:
    return text


def redeem(approvals: Approvals, approval_id: str, arguments: str = '{"id":42}') -> str | None:
    return approvals.redeem(approval_id, agent_id="bot", tool="delete_customer", arguments=arguments)


def request(
    approvals: Approvals, arguments: str = '{"id": 42}', tool: str = "delete_customer"
) -> tuple[Approval, bool]:
    return approvals.request(
        agent_id="bot", user_id="u1", session_id="s1", tool=tool, arguments=arguments, redact=no_redaction
    )


def pending(approvals: Approvals, arguments: str = '{"id": 42}', tool: str = "delete_customer") -> str:
    return request(approvals, arguments, tool)[0].id


@pytest.mark.parametrize(
    "spelling", ['{"id":42,"force":true}', '{ "force": true, "id": 42 }', '\n{"force":true,\n "id":42}\n']
)
def test_canonical_arguments_ignore_spacing_and_key_order(spelling: str) -> None:
    """The same call spelled with other whitespace or key order binds to the same approval."""
    assert arguments_sha256(spelling) == arguments_sha256('{"id": 42, "force": true}')


@pytest.mark.parametrize("other", ['{"id": 43}', '{"id": "42"}', '{"id": 42, "force": true}', "id=42"])
def test_different_arguments_hash_differently(other: str) -> None:
    """Any change of value, type or key is a different call."""
    assert arguments_sha256(other) != arguments_sha256('{"id": 42}')


def test_text_arguments_are_kept_as_sent() -> None:
    """Arguments that are not JSON are compared as text (trimmed)."""
    assert canonical_arguments("  rm -rf /tmp/x \n") == "rm -rf /tmp/x"


def test_request_records_a_pending_approval_with_a_redacted_summary(approvals: Approvals) -> None:
    """A withheld call becomes a pending approval; the summary passes the redactor and is short."""
    approval, opened = approvals.request(
        agent_id="bot",
        user_id="u1",
        session_id="s1",
        tool="wire_funds",
        arguments='{"a_token": "SECRET", "note": "' + "x" * 500 + '"}',
        redact=lambda text: text.replace("SECRET", "[REDACTED]"),
    )
    assert opened and approval.status == "pending" and approval.id.startswith("apr_")
    assert "SECRET" not in approval.summary and "[REDACTED]" in approval.summary
    assert len(approval.summary) <= SUMMARY_CHARS
    assert approvals.list() == [approval]


def test_the_same_withheld_call_reuses_its_pending_approval(approvals: Approvals) -> None:
    """A retrying agent does not open a new approval per retry (only the first request opens one); other
    arguments do."""
    first, opened = request(approvals)
    assert opened
    assert request(approvals, '{ "id" : 42 }') == (first, False)
    assert request(approvals, '{"id": 7}')[1]


@pytest.mark.parametrize("grant", [True, False])
def test_a_decided_approval_no_longer_stands_for_the_call(approvals: Approvals, grant: bool) -> None:
    """Once decided, the same call withheld again opens a new pending approval."""
    first = pending(approvals)
    approvals.decide(first, grant=grant, by="alice")
    second, opened = request(approvals)
    assert opened and second.id != first and second.status == "pending"
    assert request(approvals) == (second, False)


def test_an_expired_pending_approval_is_opened_anew(approvals: Approvals, clock: FakeClock) -> None:
    """A pending approval nobody decided expires; the call withheld after that asks again."""
    first = pending(approvals)
    clock.now += PENDING_TTL_S + 1
    second, opened = request(approvals)
    assert opened and second.id != first


def test_racing_requests_for_one_call_open_one_approval(clock: FakeClock, tmp_path: Path) -> None:
    """Two workers withholding the same call at once (two stores on one file) open one approval."""
    stores = [SharedSqliteStateStore(tmp_path, clock=clock) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda store: request(Approvals(store, clock=clock)), stores * 4))
        assert len({approval.id for approval, _ in results}) == 1
        assert sum(opened for _, opened in results) == 1
    finally:
        for store in stores:
            store.close()


def test_granted_approval_passes_exactly_once(approvals: Approvals) -> None:
    """A granted approval lets the same agent, tool and arguments through once, then is used up."""
    approval_id = pending(approvals)
    approvals.decide(approval_id, grant=True, by="alice")
    assert redeem(approvals, approval_id) is None
    again = redeem(approvals, approval_id)
    assert again is not None and "used up" in again


def test_an_approval_can_be_granted_for_several_uses(approvals: Approvals) -> None:
    """The approver sets how many calls the approval covers."""
    approval_id = pending(approvals)
    approvals.decide(approval_id, grant=True, by="alice", uses=3)
    results = [redeem(approvals, approval_id) for _ in range(4)]
    assert results[:3] == [None, None, None] and results[3] is not None
    (listed,) = approvals.list()
    assert listed.used == 4 and listed.uses == 3 and listed.decided_by == "alice"


@pytest.mark.parametrize(
    ("agent", "tool", "arguments", "reason"),
    [
        ("other-bot", "delete_customer", '{"id": 42}', "another agent"),
        ("bot", "drop_table", '{"id": 42}', "not drop_table"),
        ("bot", "delete_customer", '{"id": 43}', "other arguments"),
    ],
)
def test_approval_binds_agent_tool_and_arguments(
    approvals: Approvals, agent: str, tool: str, arguments: str, reason: str
) -> None:
    """A granted approval refuses any other agent, tool or arguments, and is not spent by them."""
    approval_id = pending(approvals)
    approvals.decide(approval_id, grant=True, by="alice")
    refused = approvals.redeem(approval_id, agent_id=agent, tool=tool, arguments=arguments)
    assert refused is not None and reason in refused
    assert redeem(approvals, approval_id) is None


def test_pending_denied_unknown_and_expired_approvals_refuse(approvals: Approvals, clock: FakeClock) -> None:
    """Only a granted, unexpired approval passes."""
    approval_id = pending(approvals)
    call = {"agent_id": "bot", "tool": "delete_customer", "arguments": '{"id": 42}'}
    assert "pending" in (approvals.redeem(approval_id, **call) or "")
    approvals.decide(approval_id, grant=False, by="bob")
    assert "denied" in (approvals.redeem(approval_id, **call) or "")
    assert "unknown" in (approvals.redeem("apr_made_up", **call) or "")
    granted = pending(approvals, '{"id": 1}')
    approvals.decide(granted, grant=True, by="alice", ttl_s=60)
    clock.now += 61
    assert redeem(approvals, granted, '{"id": 1}') is not None


def test_a_decision_is_final_and_needs_a_pending_approval(approvals: Approvals, clock: FakeClock) -> None:
    """An approval is decided once; unknown and expired ones cannot be decided; counts must be positive."""
    approval_id = pending(approvals)
    with pytest.raises(ApprovalError):
        approvals.decide(approval_id, grant=True, by="alice", uses=0)
    approvals.decide(approval_id, grant=False, by="bob")
    with pytest.raises(ApprovalError, match="already denied"):
        approvals.decide(approval_id, grant=True, by="alice")
    with pytest.raises(ApprovalError, match="unknown"):
        approvals.decide("apr_nope", grant=True, by="alice")
    late = pending(approvals, '{"id": 2}')
    clock.now += PENDING_TTL_S + 1
    with pytest.raises(ApprovalError, match="unknown or expired"):
        approvals.decide(late, grant=True, by="alice")
