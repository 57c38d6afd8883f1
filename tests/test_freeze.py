"""Freezes: the pure state-store functions and the addon that refuses frozen users, sessions and agents."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow, tutils

from addons.gate.freeze import FROZEN_CODE, Freeze
from addons.gate.turns import METADATA_KEY
from proxy.alerts import Alert
from proxy.config.policy import parse_policy
from proxy.control.freeze import (
    FREEZE_RULE,
    UNNAMED_CAUSE,
    FreezeMemory,
    active_freezes,
    apply_alert_action,
    block_agent,
    freeze_user,
    lift,
    record_injection_attempt,
    refusal,
    refusal_reason,
    revoke_session,
)
from proxy.model import Decision, Threat
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore, StateStore
from proxy.state.fallback import FallbackStore
from proxy.state.redis_store import RedisSettings, RedisStateStore
from proxy.turn import Turn, TurnContext
from tests.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> SqliteStateStore:
    return SqliteStateStore(None, clock=clock)


def alert(**ids: list[str]) -> Alert:
    return Alert(
        alert_id="a1",
        rule="critical-secret-leak",
        description="d",
        severity="critical",
        ts="2025-01-01T00:00:00Z",
        dedup_key="k",
        group={},
        count=1,
        window_seconds=300,
        agent_ids=ids.get("agents", []),
        user_ids=ids.get("users", []),
        session_ids=ids.get("sessions", []),
        event_ids=["e1"],
        threats=["credential_theft"],
        finding_rules=["aws-access-key"],
    )


# -- the pure functions ------------------------------------------------------------------------------


def test_nothing_frozen_gives_no_reason(store: SqliteStateStore) -> None:
    """With no freeze in the store nobody is refused."""
    assert refusal_reason(store, "bot", "u-1", "s-1") is None


def test_frozen_user_is_refused_with_the_reason(store: SqliteStateStore) -> None:
    """A frozen user's requests are refused, naming the user and the reason given."""
    freeze_user(store, "u-1", 60, "3 prompt-injection attempts")
    assert refusal_reason(store, "bot", "u-1", None) == "user 'u-1' is frozen: 3 prompt-injection attempts"
    assert refusal_reason(store, "bot", "u-2", None) is None


def test_revoked_session_and_blocked_agent_are_refused(store: SqliteStateStore) -> None:
    """A revoked session and a blocked agent are refused; the agent is named first."""
    revoke_session(store, "s-1", 60, "alert x")
    assert refusal_reason(store, "bot", None, "s-1") == "session 's-1' is revoked: alert x"
    block_agent(store, "bot", 60, "alert y")
    assert refusal_reason(store, "bot", None, "s-1") == "agent 'bot' is blocked: alert y"


def test_freeze_lifts_when_its_time_is_up(store: SqliteStateStore, clock: Clock) -> None:
    """A freeze expires by itself after its duration."""
    freeze_user(store, "u-1", 60, "r")
    clock.now += 59
    assert refusal_reason(store, None, "u-1", None) is not None
    clock.now += 2
    assert refusal_reason(store, None, "u-1", None) is None


def test_lift_ends_a_freeze_early(store: SqliteStateStore) -> None:
    """An operator can lift a freeze before it expires."""
    block_agent(store, "bot", 3600, "r")
    lift(store, "agent", "bot")
    assert refusal_reason(store, "bot", None, None) is None


def test_freeze_needs_a_positive_duration(store: SqliteStateStore) -> None:
    """A freeze of zero seconds is a caller's mistake, not a silent no-op."""
    with pytest.raises(ValueError, match="positive duration"):
        freeze_user(store, "u-1", 0, "r")


def attempt(
    store: StateStore,
    user: str | None,
    agent: str = "bot",
    *,
    window_s: float = 3600,
    threshold: int = 3,
    agent_threshold: int | None = 100,
) -> str | None:
    return record_injection_attempt(
        store, agent, user, window_s=window_s, threshold=threshold, agent_threshold=agent_threshold, ttl_s=600
    )


def test_injection_attempts_freeze_the_user_at_the_threshold(store: SqliteStateStore) -> None:
    """The third attempt within the window freezes the user for the agent it came through; the first two
    do not, and another agent naming the same user is not refused for it."""
    assert [attempt(store, "u-1") for _ in range(3)] == [None, None, "user"]
    assert (
        refusal_reason(store, "bot", "u-1", None)
        == "user 'u-1' is frozen: 3 prompt-injection attempts within 1h"
    )
    assert refusal_reason(store, "other-bot", "u-1", None) is None


def test_injection_attempts_outside_the_window_do_not_count(store: SqliteStateStore, clock: Clock) -> None:
    """Attempts spread wider than the window never reach the threshold."""
    for _ in range(5):
        assert attempt(store, "u-1", window_s=60, threshold=2) is None
        clock.now += 61
    assert refusal_reason(store, "bot", "u-1", None) is None


def test_injection_attempts_are_counted_per_user_of_each_agent(store: SqliteStateStore) -> None:
    """One user's attempts never freeze another user, nor the same user id named by another agent."""
    attempt(store, "u-1", threshold=2)
    assert attempt(store, "u-2", threshold=2) is None
    assert attempt(store, "u-1", "other-bot", threshold=2) is None


@pytest.mark.parametrize("users", [["u-1", "u-2", "u-3", "u-4"], [None] * 4], ids=["rotating", "unnamed"])
def test_an_agents_users_together_block_it_at_its_threshold(
    store: SqliteStateStore, users: list[str | None]
) -> None:
    """Attempts under ever new user ids, or none, are the agent's: at its threshold the agent is blocked,
    whoever it names next; another agent is not."""
    assert [attempt(store, user, threshold=3, agent_threshold=4) for user in users] == [
        None,
        None,
        None,
        "agent",
    ]
    assert (
        refusal_reason(store, "bot", "u-9", None)
        == "agent 'bot' is blocked: 4 prompt-injection attempts by its users within 1h"
    )
    assert refusal_reason(store, "other-bot", "u-9", None) is None


def test_an_agent_is_not_blocked_by_its_users_attempts_unless_its_threshold_is_set(
    store: SqliteStateStore,
) -> None:
    """Without ``freeze.agent_after`` the agent's attempts are not counted: many users' attempts freeze
    each user at theirs, and the agent keeps serving the others."""
    policy = parse_policy(
        "version: 1\nmode: enforce\nagents: {}\nfreeze: {after: 2}\n", "policy.yaml", environ={}
    )
    assert policy.detection.freeze_agent_after is None
    users = [f"u-{index}" for index in range(50) for _ in range(2)]
    frozen = [attempt(store, user, threshold=2, agent_threshold=None) for user in users]
    assert frozen == [None, "user"] * 50
    assert refusal_reason(store, "bot", "u-new", None) is None


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("freeze_user", ("bot", "u-1", None)),
        ("revoke_session", ("bot", None, "s-1")),
        ("block_agent", ("bot", None, None)),
    ],
)
def test_alert_actions_freeze_the_identities_the_alert_names(
    store: SqliteStateStore, action: str, expected: tuple[str, str | None, str | None]
) -> None:
    """Each built-in alert action freezes its kind of identity from the alert, naming the alert: a user
    for the agents the alert names."""
    frozen = apply_alert_action(store, action, alert(agents=["bot"], users=["u-1"], sessions=["s-1"]), 60)
    assert len(frozen) == 1
    reason = refusal_reason(store, *expected)
    assert reason is not None and reason.endswith("alert critical-secret-leak (a1)")
    others = {"freeze_user": ("other-bot", "u-1", "s-1"), "revoke_session": (None, "u-1", None)}
    if action in others:
        assert refusal_reason(store, *others[action]) is None


def test_unknown_alert_action_raises(store: SqliteStateStore) -> None:
    """An action that is not built in is refused loudly."""
    with pytest.raises(ValueError, match="unknown alert action"):
        apply_alert_action(store, "reboot", alert(), 60)


# -- the addon ----------------------------------------------------------------------------------------


def runtime(mode: str, store: SqliteStateStore, threats: str = "") -> Runtime:
    policy = textwrap.dedent(f"""\
        mode: {mode}
        threats: {{{threats}}}
        agents:
          bot: {{token: "t0ken", role: support}}
        roles:
          support: {{}}
        """)
    return Runtime(parse_policy(policy, "p.yaml", environ={}), store)


def chat_flow(user_id: str | None = "u-1", session_id: str | None = None, *, anthropic: bool = False) -> Any:
    flow = tflow.tflow()
    flow.request.method = "POST"
    if anthropic:
        flow.request.path = "/v1/messages"
        body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    else:
        flow.request.path = "/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(body).encode()
    context = TurnContext(agent_id="bot", role="support", user_id=user_id, session_id=session_id)
    flow.metadata[METADATA_KEY] = Turn(context=context)
    return flow


def run_request(addon: Freeze, flow: Any) -> Turn:
    with taddons.context(addon):
        addon.request(flow)
    turn = flow.metadata[METADATA_KEY]
    assert isinstance(turn, Turn)
    return turn


def test_enforced_freeze_answers_403_in_the_api_error_shape(store: SqliteStateStore) -> None:
    """In enforce mode a frozen user gets a 403 shaped like an OpenAI error, and the turn is blocked."""
    freeze_user(store, "u-1", 60, "3 prompt-injection attempts", Threat.PROMPT_INJECTION)
    flow = chat_flow()
    turn = run_request(Freeze(runtime("enforce", store)), flow)
    assert flow.response is not None and flow.response.status_code == 403
    error = json.loads(flow.response.content)["error"]
    assert error["code"] == FROZEN_CODE
    assert "user 'u-1' is frozen" in error["message"] and turn.event_id in error["message"]
    assert turn.decision is Decision.BLOCKED
    (finding,) = turn.findings
    assert (finding.threat, finding.rule, finding.enforced) == (Threat.PROMPT_INJECTION, FREEZE_RULE, True)


def test_anthropic_request_gets_the_anthropic_error_shape(store: SqliteStateStore) -> None:
    """The refusal follows the dialect of the request: Anthropic callers get Anthropic's error body."""
    revoke_session(store, "s-1", 60, "alert x")
    flow = chat_flow(None, "s-1", anthropic=True)
    run_request(Freeze(runtime("enforce", store)), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert json.loads(flow.response.content)["type"] == "error"


def test_observe_mode_flags_a_frozen_user_without_refusing(store: SqliteStateStore) -> None:
    """In observe mode the frozen user's request goes on, with a finding of what enforce would do."""
    freeze_user(store, "u-1", 60, "r")
    flow = chat_flow()
    turn = run_request(Freeze(runtime("observe", store)), flow)
    assert flow.response is None
    assert turn.decision is Decision.ALLOWED
    (finding,) = turn.findings
    assert finding.rule == FREEZE_RULE and not finding.enforced


def test_blocked_agent_is_refused_even_in_observe_mode(store: SqliteStateStore) -> None:
    """An alert's block_agent applies whatever the policy's mode."""
    block_agent(store, "bot", 60, "alert y")
    flow = chat_flow()
    turn = run_request(Freeze(runtime("observe", store)), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert turn.decision is Decision.BLOCKED


def test_unfrozen_request_passes_untouched(store: SqliteStateStore) -> None:
    """Without a freeze the addon adds nothing."""
    flow = chat_flow()
    turn = run_request(Freeze(runtime("enforce", store)), flow)
    assert flow.response is None and turn.findings == []


def test_flow_already_answered_is_left_alone(store: SqliteStateStore) -> None:
    """A request an earlier addon already answered is not looked at again."""
    block_agent(store, "bot", 60, "r")
    flow = chat_flow()
    flow.response = tutils.tresp()
    turn = run_request(Freeze(runtime("enforce", store)), flow)
    assert flow.response.status_code == 200 and turn.findings == []


def test_broken_state_store_fails_open(store: SqliteStateStore) -> None:
    """A state store that raises does not break the request: it goes on unrefused."""
    freeze_user(store, "u-1", 60, "r")
    store.close()
    flow = chat_flow()
    turn = run_request(Freeze(runtime("enforce", store)), flow)
    assert flow.response is None and turn.findings == []


@pytest.mark.parametrize("hook", ["requestheaders", "requestovercap"])
def test_a_body_relayed_as_it_arrives_is_judged_before_it_leaves(store: SqliteStateStore, hook: str) -> None:
    """Over the inspection cap a body is relayed as it arrives and the request hook would come after it
    had left: a blocked agent is refused on the request's headers, or when its chunked body grows past
    the cap, and the request hook does not judge the turn again."""
    block_agent(store, "bot", 60, "alert y")
    addon = Freeze(runtime("observe", store))
    flow = chat_flow()
    flow.request.stream = True
    with taddons.context(addon):
        getattr(addon, hook)(flow)
        refusal = flow.response
        flow.response = None
        addon.request(flow)
    assert refusal is not None and refusal.status_code == 403
    assert [finding.rule for finding in flow.metadata[METADATA_KEY].findings] == [FREEZE_RULE]


def test_a_body_read_whole_is_judged_in_the_request_hook(store: SqliteStateStore) -> None:
    """Under the cap the body is read first: its context (user, session) counts."""
    freeze_user(store, "u-1", 60, "r")
    addon = Freeze(runtime("enforce", store))
    flow = chat_flow()
    with taddons.context(addon):
        addon.requestheaders(flow)
        assert flow.response is None
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 403


def test_freezes_hold_while_the_shared_store_is_away_under_on_error_open(own_redis: RedisServer) -> None:
    """on_error open serves from this process's local state while Redis is away, which holds no freeze:
    a blocked agent, frozen user or revoked session stays refused meanwhile, from the freezes the
    process read at its first check and since; a freeze lifted while Redis answered is forgotten."""
    shared = RedisStateStore(RedisSettings(url=own_redis.url, timeout_s=0.5))
    store = FallbackStore(shared, SqliteStateStore(None), on_error="open")
    memory = FreezeMemory()
    block_agent(store, "rogue", 3600, "alert a1")
    freeze_user(store, "mallory", 3600, "alert a2")
    revoke_session(store, "s-9", 3600, "alert a3")
    freeze_user(store, "lifted", 3600, "alert a4")
    assert refusal(store, "bot", "lifted", None, memory) is not None
    assert lift(store, "user", "lifted")
    assert refusal(store, "bot", "lifted", None, memory) is None
    own_redis.stop()
    assert refusal(store, "rogue", None, None, memory) is not None  # read at the first check
    assert refusal(store, "bot", "mallory", None, memory) is not None
    assert refusal(store, "bot", "u-1", "s-9", memory) is not None
    assert refusal(store, "bot", "lifted", None, memory) is None
    assert refusal(store, "bot", "u-1", "s-1", memory) is None


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_a_blocked_agent_is_refused_under_the_threat_its_alert_answers(
    store: SqliteStateStore, mode: str
) -> None:
    """An alert's block_agent refuses the agent in every mode, the finding filed under the threat of the
    alert's findings (credential theft here), not prompt injection."""
    apply_alert_action(store, "block_agent", alert(agents=["bot"]), 60)
    turn = run_request(Freeze(runtime(mode, store)), chat_flow())
    (finding,) = turn.findings
    assert (finding.threat, finding.owasp, finding.enforced) == (Threat.CREDENTIAL_THEFT, "LLM06", True)
    assert "alert critical-secret-leak" in finding.signal and turn.decision is Decision.BLOCKED


def test_a_freeze_that_names_no_threat_is_filed_as_an_egress_control(store: SqliteStateStore) -> None:
    """An alert over an SQL query names no threat (nor did freezes made before threats were kept)."""
    nameless = dataclasses.replace(alert(agents=["bot"]), threats=[])
    apply_alert_action(store, "block_agent", nameless, 60)
    (finding,) = run_request(Freeze(runtime("observe", store)), chat_flow()).findings
    assert (finding.threat, finding.enforced) == (
        UNNAMED_CAUSE,
        True,
    ) and UNNAMED_CAUSE is not Threat.PROMPT_INJECTION


def test_a_query_alerts_rows_name_its_threat(store: SqliteStateStore) -> None:
    queried = dataclasses.replace(
        alert(users=["u-1"]), threats=[], rows=[{"user_id": "u-1", "threat": "data_exfiltration"}]
    )
    apply_alert_action(store, "freeze_user", queried, 60)
    (finding,) = run_request(Freeze(runtime("enforce", store)), chat_flow()).findings
    assert finding.threat is Threat.DATA_EXFILTRATION


@pytest.mark.parametrize(
    ("enforced_threat", "refused"), [("credential_theft", True), ("prompt_injection", False)]
)
def test_a_frozen_user_is_refused_where_the_freezes_threat_is_enforced(
    store: SqliteStateStore, enforced_threat: str, refused: bool
) -> None:
    """A user frozen by an alert on credential theft is refused where that threat is enforced, and only
    recorded where only prompt injection is."""
    apply_alert_action(store, "freeze_user", alert(users=["u-1"]), 60)
    flow = chat_flow()
    turn = run_request(Freeze(runtime("observe", store, f"{enforced_threat}: enforce")), flow)
    (finding,) = turn.findings
    assert (flow.response is not None) is refused and finding.enforced is refused
    assert finding.threat is Threat.CREDENTIAL_THEFT


def test_injection_attempts_freeze_under_prompt_injection(store: SqliteStateStore, clock: Clock) -> None:
    for _ in range(3):
        attempt(store, "u-1")
    (finding,) = run_request(Freeze(runtime("enforce", store)), chat_flow()).findings
    assert (finding.threat, finding.owasp, finding.enforced) == (Threat.PROMPT_INJECTION, "LLM01", True)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_agent_its_users_attempts_blocked_is_refused_where_injection_is_enforced(
    store: SqliteStateStore, mode: str
) -> None:
    """An agent blocked for its users' attempts answers prompt injection, as a user's freeze does:
    refused where that is enforced, recorded as would-be refused in observe mode."""
    for user in ("a", "b"):
        attempt(store, user, agent_threshold=2)
    flow = chat_flow(user_id="someone-new")
    (finding,) = run_request(Freeze(runtime(mode, store)), flow).findings
    assert (finding.threat, finding.enforced) == (Threat.PROMPT_INJECTION, mode == "enforce")
    assert (flow.response is not None) is (mode == "enforce")


def test_a_freeze_the_policy_only_observes_does_not_hide_one_it_enforces(store: SqliteStateStore) -> None:
    """The user's own attempts froze them for this agent under prompt injection, which the policy only
    observes; an alert froze them everywhere under data exfiltration, which it enforces: refused for that."""
    record_injection_attempt(store, "bot", "u-1", window_s=3600, threshold=1, agent_threshold=None, ttl_s=600)
    freeze_user(store, "u-1", 600, "exfiltration burst", Threat.DATA_EXFILTRATION)
    flow = chat_flow()
    turn = run_request(
        Freeze(runtime("observe", store, "data_exfiltration: enforce, prompt_injection: observe")), flow
    )
    assert flow.response is not None and flow.response.status_code == 403
    (finding,) = turn.findings
    assert (finding.threat, finding.enforced) == (Threat.DATA_EXFILTRATION, True)


@pytest.mark.parametrize("alert_first", [True, False], ids=["alert-then-attempts", "attempts-then-alert"])
def test_attempts_do_not_overwrite_an_alerts_block_of_the_agent(
    store: SqliteStateStore, alert_first: bool
) -> None:
    """An alert blocked the agent, which is refused in every mode; its users' attempts, which block it only
    where prompt injection is enforced and for a shorter while, neither replace nor shorten that block."""

    def by_alert() -> None:
        block_agent(store, "bot", 86400, "alert lateral-burst", Threat.LATERAL_MOVEMENT)

    if alert_first:
        by_alert()
    for user in ("a", "b"):
        attempt(store, user, agent_threshold=2)
    if not alert_first:
        by_alert()
    flow = chat_flow(user_id="someone-new")
    (finding,) = run_request(Freeze(runtime("observe", store, "prompt_injection: observe")), flow).findings
    assert flow.response is not None and flow.response.status_code == 403
    assert (finding.threat, finding.enforced) == (Threat.LATERAL_MOVEMENT, True)
    assert {(entry["kind"], entry.get("by_attempts", False)) for entry in active_freezes(store)} >= {
        ("agent", False),
        ("agent", True),
    }


def test_attempts_do_not_overwrite_an_alerts_freeze_of_the_user_for_the_agent(
    store: SqliteStateStore,
) -> None:
    """An alert froze the user for this agent under data exfiltration; the user's own attempts, filed
    under prompt injection (only observed), do not replace it."""
    freeze_user(store, "u-1", 86400, "exfiltration burst", Threat.DATA_EXFILTRATION, agent_id="bot")
    assert attempt(store, "u-1", threshold=1) == "user"
    flow = chat_flow()
    (finding,) = run_request(
        Freeze(runtime("observe", store, "data_exfiltration: enforce, prompt_injection: observe")), flow
    ).findings
    assert flow.response is not None
    assert (finding.threat, finding.enforced) == (Threat.DATA_EXFILTRATION, True)


def test_lift_ends_an_agents_block_by_alert_and_by_attempts_alike(store: SqliteStateStore) -> None:
    block_agent(store, "bot", 600, "alert")
    for user in ("a", "b"):
        attempt(store, user, agent_threshold=2)
    assert lift(store, "agent", "bot")
    assert refusal(store, "bot", None, None) is None and active_freezes(store) == []
