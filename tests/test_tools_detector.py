import base64
import dataclasses
from pathlib import Path

import pytest

from proxy.detectors.tools import (
    APPROVAL_HEADER,
    ARGUMENT_ENTROPY_RULE,
    ENTROPY_WINDOW,
    MCP_SERVER_EGRESS_RULE,
    NO_OVERRIDES,
    ROLE_ADDED_RULE,
    UNRESTRICTED_SERVER_RULE,
    UNSEEN_SEQUENCE_RULE,
    ApprovalCheck,
    CatalogueEntry,
    RoleOverrides,
    ToolCatalogue,
    ToolCatalogueError,
    approval_notice,
    argument_entropy,
    argument_entropy_finding,
    check_tool_calls,
    declared_tool_findings,
    entropy_outlier,
    sequence_key,
    unseen_sequence_finding,
)
from proxy.exchange import DeclaredTool, ToolCall
from proxy.model import Action, Severity, Threat

CATALOGUE = ToolCatalogue.load()


def call(name: str, arguments: str = "{}", where: str = "choices[0].message.tool_calls[0]") -> ToolCall:
    return ToolCall(id="call_1", name=name, arguments=arguments, where=where)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("shell", "tool-shell-exec"),
        ("bash", "tool-shell-exec"),
        ("exec_python", "tool-shell-exec"),
        ("run_terminal_command", "tool-shell-exec"),
        ("remote_shell", "tool-shell-exec"),
        ("delete_user", "tool-delete"),
        ("drop_table", "tool-delete"),
        ("remove_file", "tool-delete"),
        ("rm", "tool-delete"),
        ("send_email", "tool-outbound-message"),
        ("wire_funds", "tool-money-movement"),
        ("transfer_money", "tool-money-movement"),
        ("pay_invoice", "tool-money-movement"),
        ("deploy_service", "tool-deploy"),
        ("kubectl_apply", "tool-deploy"),
        ("sql_execute", "tool-database-write"),
    ],
)
def test_catalogue_flags_destructive_tools(name: str, rule: str) -> None:
    """Each catalogued family is recognised by its glob."""
    assert CATALOGUE.is_destructive(name) == rule


@pytest.mark.parametrize("entry", CATALOGUE.entries, ids=lambda entry: entry.id)
def test_each_catalogue_entry_matches_its_examples_and_leaves_its_counterexamples_alone(
    entry: CatalogueEntry,
) -> None:
    """Every family carries names it must match (``nuke_*``, ``obliterate``, ``kill_process``, ``wipe``
    among the destructive ones) and names that only read or ask about the act, which no entry matches."""
    assert entry.match_examples and entry.no_match_examples
    assert {name: CATALOGUE.is_destructive(name) for name in entry.match_examples} == dict.fromkeys(
        entry.match_examples, entry.id
    )
    assert {name: CATALOGUE.is_destructive(name) for name in entry.no_match_examples} == dict.fromkeys(
        entry.no_match_examples
    )


@pytest.mark.parametrize(
    "name", ["search", "get_weather", "read_file", "list_users", "payload_schema", "sender"]
)
def test_catalogue_leaves_benign_tools_alone(name: str) -> None:
    """Read-only tools are not destructive."""
    assert CATALOGUE.is_destructive(name) is None


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("deleteCustomer", "tool-delete"),
        ("DeleteRepo", "tool-delete"),
        ("delete-customer", "tool-delete"),
        ("crm_delete_customer", "tool-delete"),
        ("HTTPDelete", "tool-delete"),
        ("sendEmail", "tool-outbound-message"),
        ("calendar_send_invite", "tool-outbound-message"),
        ("transferFunds", "tool-money-movement"),
        ("runShellCommand", "tool-shell-exec"),
        ("stripe.createPayment", "tool-money-movement"),
    ],
)
def test_a_catalogued_name_in_another_spelling_or_after_a_system_prefix_is_destructive(
    name: str, rule: str
) -> None:
    """camelCase, PascalCase and kebab-case read as the catalogue's snake case; a name whose last words
    are a destructive one (``crm_delete_customer``) is destructive."""
    assert CATALOGUE.is_destructive(name) == rule


@pytest.mark.parametrize(
    "name",
    [
        "is_deleted",
        "undelete",
        "get_send_status",
        "list_deleted_items",
        "can_delete_user",
        "preview_transfer_funds",
        "show_delete_button",
        "fetch_payment_history",
        "describe_payment_methods",
        "model_eval",
        "refresh_token",
        "update_customer",
    ],
)
def test_a_name_that_only_reads_or_asks_about_a_destructive_act_is_not_destructive(name: str) -> None:
    """A word before the destructive words that reads or asks (``get``, ``list``, ``can``, ``preview``)
    makes the call a question about the act; a one-word glob (``eval``) matches a name's last segment,
    not its last word."""
    assert CATALOGUE.is_destructive(name) is None


def test_an_exemption_reaches_only_the_name_it_spells() -> None:
    """A role's exempt glob does not exempt a name that merely ends like the exempt one."""
    overrides = RoleOverrides(exempt=("delete_draft",))
    assert CATALOGUE.is_destructive("deleteDraft", overrides) is None
    assert CATALOGUE.is_destructive("crm_delete_draft", overrides) == "tool-delete"


def test_matching_ignores_case() -> None:
    """Tool names are matched case-insensitively."""
    assert CATALOGUE.is_destructive("Delete_User") == "tool-delete"


def test_namespaced_tool_names_match_on_last_segment() -> None:
    """MCP-style and dotted names are judged by their last segment."""
    assert CATALOGUE.is_destructive("filesystem__delete_file") == "tool-delete"
    assert CATALOGUE.is_destructive("github.delete_repo") == "tool-delete"


def test_role_may_exempt_a_tool() -> None:
    """An exempt glob makes a catalogued tool safe for that role."""
    overrides = RoleOverrides(exempt=("send_slack_*",))
    assert CATALOGUE.is_destructive("send_slack_message", overrides) is None
    assert CATALOGUE.is_destructive("send_email", overrides) == "tool-outbound-message"


def test_role_may_add_a_tool() -> None:
    """A role's own glob makes an uncatalogued tool destructive."""
    overrides = RoleOverrides(destructive=("approve_loan",))
    assert CATALOGUE.is_destructive("approve_loan", overrides) == ROLE_ADDED_RULE
    assert CATALOGUE.is_destructive("approve_loan") is None


def test_exemption_wins_over_role_addition() -> None:
    """When a role both adds and exempts a name, the exemption wins."""
    overrides = RoleOverrides(destructive=("approve_*",), exempt=("approve_leave",))
    assert CATALOGUE.is_destructive("approve_leave", overrides) is None


def test_destructive_call_without_approval_is_withheld() -> None:
    """A destructive call with no approval id is withheld with a high or critical severity."""
    (finding,) = check_tool_calls([call("delete_user", '{"id": 7}')], None, CATALOGUE)
    assert finding.threat is Threat.TOOL_ABUSE
    assert finding.rule == "tool-delete"
    assert finding.action is Action.WITHHOLD
    assert finding.severity is Severity.HIGH
    assert finding.where == "choices[0].message.tool_calls[0]"
    assert finding.extra == {"tool": "delete_user"}


def test_blank_approval_id_counts_as_none() -> None:
    """An empty approval header does not approve anything."""
    (finding,) = check_tool_calls([call("shell")], "  ", CATALOGUE)
    assert finding.action is Action.WITHHOLD
    assert finding.severity is Severity.CRITICAL


def test_destructive_call_with_an_approved_id_is_a_low_note() -> None:
    """When the approval check accepts the id the call passes, noted with the approval it ran under."""
    (finding,) = check_tool_calls([call("wire_funds")], "APR-42", CATALOGUE, approve=lambda call: None)
    assert finding.action is Action.FLAG
    assert finding.severity is Severity.LOW
    assert finding.extra["approval_id"] == "APR-42"


@pytest.mark.parametrize("approve", [None, lambda call: "approval APR-42 was given for other arguments"])
def test_an_approval_id_that_does_not_check_out_is_withheld(approve: ApprovalCheck | None) -> None:
    """Any id the approval check refuses (or with no check at all) withholds the call as approval-invalid,
    with the reason."""
    (finding,) = check_tool_calls([call("wire_funds")], "APR-42", CATALOGUE, approve=approve)
    assert finding.action is Action.WITHHOLD
    assert finding.rule == "approval-invalid"
    assert finding.severity is Severity.CRITICAL or finding.severity is Severity.HIGH
    assert finding.extra["presented_approval_id"] == "APR-42"
    if approve is not None:
        assert "other arguments" in finding.signal


def test_benign_calls_give_no_findings() -> None:
    """Only destructive calls are reported, one finding each."""
    calls = [call("search"), call("send_email", where="a"), call("get_time"), call("rm", where="b")]
    assert [f.where for f in check_tool_calls(calls, None, CATALOGUE)] == ["a", "b"]


def test_role_overrides_apply_to_checks() -> None:
    """check_tool_calls honours the role's exemptions."""
    assert check_tool_calls([call("send_email")], None, CATALOGUE, RoleOverrides(exempt=("send_*",))) == []


def test_approval_notice_names_tool_and_header() -> None:
    """The notice says which tool needs approval and how to resend."""
    notice = approval_notice("delete_user")
    assert "`delete_user`" in notice
    assert f"{APPROVAL_HEADER}: <approval id>" in notice
    assert "X-Gate" in approval_notice("rm", header="X-Gate")


def test_load_rejects_a_file_that_is_not_a_catalogue(tmp_path: Path) -> None:
    """A file without `catalogue: tools` is refused."""
    path = tmp_path / "x.yaml"
    path.write_text("pack: refusal\nrules: []\n")
    with pytest.raises(ToolCatalogueError, match="not a tool catalogue"):
        ToolCatalogue.load(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("catalogue: tools\ntools: []\n", "non-empty list"),
        ("catalogue: tools\ntools: [{globs: [rm]}]\n", "needs an `id`"),
        ("catalogue: tools\ntools: [{id: a, globs: []}]\n", "globs"),
        ("catalogue: tools\ntools: [{id: a, globs: [rm]}, {id: a, globs: [rm]}]\n", "duplicate"),
        ("catalogue: tools\ntools: [{id: a, globs: [rm], severity: huge}]\n", "unknown severity"),
        ("catalogue: tools\ntools: [{id: a, globs: [rm], examples: [rm]}]\n", "`examples` must be"),
        ("catalogue: tools\ntools: [{id: a, globs: [rm], examples: {match: rm}}]\n", "examples.match"),
    ],
)
def test_load_rejects_malformed_entries(tmp_path: Path, body: str, message: str) -> None:
    """Malformed entries fail at load time with the file named."""
    path = tmp_path / "tools.yaml"
    path.write_text(body)
    with pytest.raises(ToolCatalogueError, match=message):
        ToolCatalogue.load(path)


def test_entropy_outlier_only_above() -> None:
    """Only values far above the mean are outliers."""
    assert entropy_outlier(5.0, mean=3.0, stddev=0.5)
    assert not entropy_outlier(4.4, mean=3.0, stddev=0.5)
    assert not entropy_outlier(0.5, mean=3.0, stddev=0.5)


def test_entropy_outlier_has_a_deviation_floor() -> None:
    """A zero-deviation baseline does not make every small change an outlier."""
    assert not entropy_outlier(3.4, mean=3.0, stddev=0.0)
    assert entropy_outlier(3.5, mean=3.0, stddev=0.0)


def test_argument_entropy_finding_for_random_payload() -> None:
    """A base64-looking blob in arguments stands out against the windows of ordinary commands."""
    blob = '{"q": "' + "".join(chr(33 + (i * 37) % 90) for i in range(200)) + '"}'
    entropy = argument_entropy(blob)
    assert entropy is not None
    finding = argument_entropy_finding(call("search", blob), entropy, mean=4.5, stddev=0.2)
    assert finding is not None
    assert finding.rule == ARGUMENT_ENTROPY_RULE
    ordinary = "{\"command\": \"find . -name '*.py' -not -path './node_modules/*' | xargs grep -n def\"}"
    usual = argument_entropy(ordinary)
    assert usual is not None
    assert argument_entropy_finding(call("shell", ordinary), usual, mean=4.5, stddev=0.2) is None


def test_argument_entropy_does_not_grow_with_length() -> None:
    """A long ordinary command measures like a short one, where a string's entropy over its own
    characters grew with its length; a payload inside ordinary words still raises it, and arguments
    shorter than a window are not measured."""
    words = "git log --oneline --graph --decorate --all --since=yesterday -- src tests docs "
    short, long = argument_entropy(words[:70]), argument_entropy(words * 20)
    assert short is not None and long is not None
    assert abs(long - short) < 0.3
    payload = base64.b64encode(bytes(range(7, 250, 3))).decode()
    hidden = argument_entropy(words * 10 + payload + words * 10)
    assert hidden is not None and hidden > long + 0.6
    assert argument_entropy('{"id": "order-1842"}') is None
    assert len('{"id": "order-1842"}') < ENTROPY_WINDOW


def test_sequence_key_is_order_sensitive_and_collapses_repeats() -> None:
    """Order matters, case and immediate repeats do not."""
    assert sequence_key(["search", "fetch"]) != sequence_key(["fetch", "search"])
    assert sequence_key(["Search", "search", "fetch"]) == sequence_key(["search", "fetch"])
    assert sequence_key(["a", "b", "a"]) != sequence_key(["a", "b"])


def test_sequence_key_does_not_confuse_joined_names() -> None:
    """Names are separated, so [ab, c] and [a, bc] differ."""
    assert sequence_key(["ab", "c"]) != sequence_key(["a", "bc"])


def test_unseen_sequence_is_flagged_once_known_is_quiet() -> None:
    """A new sequence is flagged; a known one is not; no calls is not a sequence."""
    names = ["search", "send_email"]
    finding = unseen_sequence_finding(names, known_keys=set())
    assert finding is not None
    assert finding.rule == UNSEEN_SEQUENCE_RULE
    assert finding.extra["sequence_key"] == sequence_key(names)
    assert unseen_sequence_finding(names, {sequence_key(names)}) is None
    assert unseen_sequence_finding([], set()) is None


def declared_rules(
    declared: list[DeclaredTool], overrides: RoleOverrides = NO_OVERRIDES
) -> list[tuple[str, str]]:
    """(rule, where) of the findings of ``declared``, for an agent allowed to reach ``mcp.allowed`` only."""
    return [
        (finding.rule, finding.where)
        for finding in declared_tool_findings(
            declared, CATALOGUE, overrides, lambda host, port: host == "mcp.allowed"
        )
    ]


def test_a_declared_connector_is_reached_only_where_the_role_names_it() -> None:
    gmail = DeclaredTool("mail", "tools[0]", None, ("search",), mcp_server=True, connector="connector_gmail")
    assert declared_rules([gmail]) == [(MCP_SERVER_EGRESS_RULE, "tools[0]")]
    assert declared_rules([gmail], RoleOverrides(connectors=("connector_drive",))) == [
        (MCP_SERVER_EGRESS_RULE, "tools[0]")
    ]
    assert declared_rules([gmail], RoleOverrides(connectors=("Connector_*",))) == []


def test_a_declared_server_allowing_all_its_tools_unasked_is_refused_unless_approval_or_exempt() -> None:
    everything = DeclaredTool("ops", "tools[0]", "https://mcp.allowed/mcp", None, mcp_server=True)
    assert declared_rules([everything]) == [(UNRESTRICTED_SERVER_RULE, "tools[0]")]
    assert declared_rules([dataclasses.replace(everything, asks_approval=True)]) == []
    assert declared_rules([everything], RoleOverrides(exempt=("ops",))) == []
    assert declared_rules([dataclasses.replace(everything, allowed_tools=())]) == []
    outside = dataclasses.replace(
        everything, server_url="https://mcp.elsewhere/mcp", allowed_tools=("search",)
    )
    assert declared_rules([outside]) == [(MCP_SERVER_EGRESS_RULE, "tools[0]")]
