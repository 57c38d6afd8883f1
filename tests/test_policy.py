"""Policy loading: every problem reported with its file and line, defaults filled in."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from proxy.config.paths import default_data_dir
from proxy.config.policy import load_policy, parse_policy
from proxy.config.yamlschema import SchemaError
from proxy.model import Mode, Threat

ENV = {"BOT_TOKEN": "t0ken"}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SchemaError) as raised:
        parse_policy(textwrap.dedent(text), "policy.yaml", environ=ENV if environ is None else environ)
    return [str(problem) for problem in raised.value.problems]


def test_minimal_policy_loads_with_defaults() -> None:
    """A policy with one agent and role loads; unset sections take their defaults."""
    policy = parse_policy(
        textwrap.dedent("""\
        agents:
          bot: {token_env: BOT_TOKEN, role: support}
        roles:
          support:
            egress: {allow: [api.openai.com]}
        """),
        "policy.yaml",
        environ=ENV,
    )
    assert policy.mode is Mode.OBSERVE
    assert policy.agents["bot"].token == "t0ken"
    assert [pattern.text for pattern in policy.roles["support"].egress.allow] == ["api.openai.com"]
    assert policy.audit_path == default_data_dir(ENV) / "audit"
    assert policy.audit_path.is_absolute()
    assert policy.max_body_bytes == 8 * 1024 * 1024


def test_unknown_key_and_undefined_role_both_reported_with_lines() -> None:
    """An unknown key and an agent naming a missing role are both reported, each on its own line."""
    found = problems("""\
        mode: observe
        agents:
          bot: {token_env: BOT_TOKEN, role: sales}
        roles:
          support:
            egress: {alow: [api.openai.com]}
        """)
    assert any(line.startswith("policy.yaml:6: unknown key 'alow'") for line in found), found
    assert any(line.startswith("policy.yaml:3: agent 'bot' names role 'sales'") for line in found), found


def test_wrong_type_reported_with_line() -> None:
    """A list where a mapping belongs, and a bad mode value, are reported with their lines."""
    found = problems("""\
        mode: paranoid
        roles: [support]
        """)
    assert found[0].startswith("policy.yaml:1: mode must be 'observe' or 'enforce'")
    assert found[1].startswith("policy.yaml:2: roles must be a mapping")


def test_unset_token_env_is_an_error() -> None:
    """An agent whose token_env is not set in the environment cannot authenticate: an error."""
    found = problems("""\
        agents:
          bot: {token_env: MISSING_TOKEN, role: support}
        roles:
          support: {}
        """)
    assert found == ["policy.yaml:2: agent 'bot': environment variable MISSING_TOKEN is not set or empty"]


@pytest.mark.parametrize("blank", [" ", "\t", "\n", "  \r\n"])
def test_a_blank_agent_token_is_an_error(blank: str) -> None:
    """A token of nothing but whitespace, in the environment or the file, is no token: an agent whose
    proxy password is a space must not exist."""
    from_env = problems(
        "agents:\n  bot: {token_env: BOT_TOKEN, role: r}\nroles:\n  r: {}\n", environ={"BOT_TOKEN": blank}
    )
    assert from_env == ["policy.yaml:2: agent 'bot': environment variable BOT_TOKEN is not set or empty"]
    literal = problems(f"agents:\n  bot: {{token: {json.dumps(blank)}, role: r}}\nroles:\n  r: {{}}\n")
    assert literal == ["policy.yaml:2: agent 'bot' needs token_env (or token)"]


def test_literal_token_is_a_warning() -> None:
    """A literal token works but is warned about, so the file holds no secret unnoticed."""
    policy = parse_policy("agents:\n  bot: {token: abc, role: r}\nroles:\n  r: {}\n", "p.yaml", environ={})
    assert policy.agents["bot"].token == "abc"
    assert str(policy.warnings[0]).startswith("p.yaml:2: agent 'bot' has a literal token")


def test_invalid_yaml_reports_line() -> None:
    """Broken YAML is one problem on the line where the parser gave up."""
    found = problems("mode: observe\nagents: {bot: [\n")
    assert len(found) == 1 and found[0].startswith("policy.yaml:3: not valid YAML")


def test_duplicate_key_reported() -> None:
    """A key given twice is an error, not a silent override."""
    found = problems("mode: observe\nmode: enforce\n")
    assert found == ["policy.yaml:2: duplicate key 'mode' in "]


def test_bad_egress_pattern_reported_on_its_line() -> None:
    """An egress entry that is not a host pattern is an error on that entry's line."""
    found = problems("""\
        roles:
          support:
            egress:
              allow:
                - api.openai.com
                - "10.0.0.0/33"
        """)
    assert len(found) == 1 and found[0].startswith(
        "policy.yaml:6: roles.support.egress.allow[1]: invalid egress"
    )


def test_agent_without_role_uses_default_role() -> None:
    """An agent with no role gets the `default` role, which must then exist."""
    assert problems("agents:\n  bot: {token: t}\n") == [
        "policy.yaml:2: agent 'bot' names role 'default', which is not defined under roles"
    ]


def test_unknown_alerts_key_reported_on_its_line() -> None:
    """A misspelt key in the alerts section is an error with its line, like everywhere else."""
    found = problems("alerts:\n  destination: {}\n")
    assert found[0].startswith("policy.yaml:2: unknown key 'destination' in alerts")


def test_readme_policy_example_checks_clean() -> None:
    """The policy shown in the README is valid."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("## The policy", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, "README.md", environ={"SUPPORT_BOT_TOKEN": "x"})
    assert "support-bot" in policy.agents


def test_per_threat_modes() -> None:
    """A threat can be switched to enforce on its own; --mode overrides them all."""
    policy = parse_policy("mode: observe\nthreats: {prompt_injection: enforce}\n", "p.yaml", environ={})
    assert policy.enforces(Threat.PROMPT_INJECTION) and not policy.enforces(Threat.TOOL_ABUSE)
    assert policy.with_mode(Mode.OBSERVE).mode_for(Threat.PROMPT_INJECTION) is Mode.OBSERVE


def test_size_values() -> None:
    """Inspection caps take human sizes; nonsense is an error on its line."""
    policy = parse_policy("inspection: {max_body_bytes: 2MiB}\n", "p.yaml", environ={})
    assert policy.max_body_bytes == 2 * 1024 * 1024
    assert problems("inspection: {max_body_bytes: lots}\n")[0].startswith(
        "policy.yaml:1: inspection.max_body_bytes"
    )


def test_stream_decoding_cap_is_a_setting_with_a_default() -> None:
    """How far a relayed compressed body may inflate is set under inspection; 64 MiB unless said."""
    assert parse_policy("", "p.yaml", environ={}).max_stream_decoded_bytes == 64 << 20
    policy = parse_policy("inspection: {max_stream_decoded_bytes: 16MiB}\n", "p.yaml", environ={})
    assert policy.max_stream_decoded_bytes == 16 << 20
    assert problems("inspection: {max_stream_decoded_bytes: -1}\n")[0].startswith(
        "policy.yaml:1: inspection.max_stream_decoded_bytes"
    )


def test_rule_time_limit_is_a_setting_in_milliseconds_or_seconds() -> None:
    """How long a secret or PII rule may run over one text: 50 ms unless said."""
    assert parse_policy("", "p.yaml", environ={}).detection.rule_time_limit_s == 0.05
    for written, seconds in (("200ms", 0.2), ("2s", 2.0)):
        policy = parse_policy(f"inspection: {{rule_time_limit: {written}}}\n", "p.yaml", environ={})
        assert policy.detection.rule_time_limit_s == seconds
    assert problems("inspection: {rule_time_limit: soon}\n")[0].startswith(
        "policy.yaml:1: inspection.rule_time_limit"
    )


@pytest.mark.parametrize(
    "written", ["0ms", "0s", "-5ms", "-1s", "1h", "6s", "5001ms", "99999999999999999999w", "0.5ms", "ms"]
)
def test_a_rule_time_limit_of_nothing_or_out_of_all_measure_is_a_problem_on_its_line(written: str) -> None:
    """No limit, a negative one or one of hours is no limit to run rules under: the policy is refused,
    naming the file and line, rather than run on the default."""
    text = f"mode: enforce\ninspection:\n  max_body_bytes: 8MiB\n  rule_time_limit: {written}\n"
    found = problems(text)
    assert len(found) == 1 and found[0].startswith("policy.yaml:4: inspection.rule_time_limit: "), found


def test_rule_time_limit_bounds_are_accepted() -> None:
    """A millisecond and five seconds are the ends of the range."""
    for written, seconds in (("1ms", 0.001), ("5s", 5.0), ("5000ms", 5.0)):
        policy = parse_policy(f"inspection: {{rule_time_limit: {written}}}\n", "p.yaml", environ={})
        assert policy.detection.rule_time_limit_s == seconds


def test_embedded_default_policy_loads() -> None:
    """The embedded default policy is valid and observe-only."""
    policy = load_policy(None, environ={"EGRESSGUARD_AGENT_TOKEN": "x"})
    assert policy.mode is Mode.OBSERVE and "agent" in policy.agents


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    """A missing policy file is reported, not a traceback."""
    with pytest.raises(SchemaError) as raised:
        load_policy(tmp_path / "missing.yaml")
    assert "cannot read" in str(raised.value)


def test_workers_are_a_count_or_auto() -> None:
    """workers: N or auto (one per core, the cores this process may run on); one per core when absent;
    anything else is an error."""
    cores = len(os.sched_getaffinity(0))
    assert parse_policy("mode: observe\n", "p.yaml", environ={}).workers == cores
    assert parse_policy("workers: 3\n", "p.yaml", environ={}).workers == 3
    assert parse_policy("workers: auto\n", "p.yaml", environ={}).workers == cores
    assert problems("workers: 0\n") == [
        "policy.yaml:1: workers: must be at least 1, or auto for one per core"
    ]


def test_indirect_injection_choice_defaults_to_quarantine() -> None:
    """``injection.indirect`` is flag, quarantine or block; quarantine when not given; anything else
    is reported on its line."""
    assert parse_policy("mode: enforce\n", "p.yaml", environ={}).detection.indirect_injection == "quarantine"
    chosen = parse_policy("injection: {indirect: block}\n", "p.yaml", environ={})
    assert chosen.detection.indirect_injection == "block"
    messages = problems("version: 1\ninjection:\n  indirect: drop\n")
    assert any(message.startswith("policy.yaml:3:") and "quarantine" in message for message in messages)


@pytest.mark.parametrize(
    ("setting", "line", "message"),
    [
        ("version: 2", 1, "version must be 1"),
        ("version: 0", 1, "version must be 1"),
        ("freeze: {after: 0}", 1, "freeze.after must be an integer of at least 1"),
        ("freeze:\n  after: -3", 2, "freeze.after must be an integer of at least 1"),
        ("audit: {retention_days: 0}", 1, "audit.retention_days must be an integer of at least 1"),
        ("audit:\n  checkpoint_every: -1", 2, "audit.checkpoint_every must be an integer of at least 1"),
    ],
)
def test_values_out_of_range_are_errors_with_their_line(setting: str, line: int, message: str) -> None:
    """A value that cannot mean what it says is refused on its own line, never replaced by a default."""
    found = problems(setting + "\n")
    assert any(problem.startswith(f"policy.yaml:{line}: {message}") for problem in found), found


def test_version_one_and_positive_values_load() -> None:
    policy = parse_policy(
        "version: 1\nfreeze: {after: 1}\naudit: {retention_days: 1, checkpoint_every: 1}\n",
        "p.yaml",
        environ={},
    )
    assert policy.detection.freeze_after == 1
    assert (policy.audit.retention_days, policy.audit.checkpoint_every) == (1, 1)


def test_empty_compliance_required_turns_compliance_findings_off() -> None:
    """`required: []` is taken as written: no field is required. Leaving the key out keeps the default."""
    assert parse_policy("compliance: {required: []}\n", "p.yaml", environ={}).detection.required_fields == ()
    assert parse_policy("compliance: {}\n", "p.yaml", environ={}).detection.required_fields == (
        "user_id",
        "purpose",
        "consent_id",
    )


def test_required_fields_block_even_when_compliance_flags_nothing() -> None:
    """`required: []` with `require: [purpose]` still refuses a turn without a purpose."""
    detection = parse_policy(
        "compliance: {required: [], require: [purpose]}\n", "p.yaml", environ={}
    ).detection
    assert (detection.required_fields, detection.blocking_fields) == ((), ("purpose",))


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"EGRESSGUARD_DATA_DIR": "/srv/guard", "XDG_STATE_HOME": "/x", "HOME": "/home/me"}, "/srv/guard"),
        ({"XDG_STATE_HOME": "/var/state", "HOME": "/home/me"}, "/var/state/egressguard"),
        ({"XDG_STATE_HOME": "relative/state", "HOME": "/home/me"}, "/home/me/.local/state/egressguard"),
        ({"HOME": "/home/me"}, "/home/me/.local/state/egressguard"),
    ],
)
def test_default_data_dir_is_per_user_and_absolute(environ: dict[str, str], expected: str) -> None:
    """Without data_dir in the policy: EGRESSGUARD_DATA_DIR, else the XDG state home (when absolute, as
    the spec requires), else ~/.local/state; never the working directory."""
    text = "agents: {}\nroles: {r: {egress: {allow: [api.openai.com]}}}\n"
    policy = parse_policy(text, "p.yaml", environ=environ)
    assert policy.data_dir == Path(expected)
    assert policy.audit_path == Path(expected) / "audit"
    assert parse_policy(text + "data_dir: /elsewhere\n", "p.yaml", environ=environ).data_dir == Path(
        "/elsewhere"
    )


MCP_SERVERS_POLICY = """\
agents:
  bot: {token_env: BOT_TOKEN, role: ops}
roles:
  ops:
    tools:
      mcp_servers:
        - tools.internal/mcp
        - "10.1.2.3:8080/api/mcp"
        - %s
"""


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("tools.internal", "is not host/route"),
        ("/mcp", "is not host/route"),
        ("'*.corp.example/mcp'", "names more than one host"),
        ("'*/mcp'", "names more than one host"),
        ("api.openai.com/v1/mcp", "model provider's host"),
        ("API.Anthropic.com./mcp", "model provider's host"),
        ("us-east5-aiplatform.googleapis.com/mcp", "model provider's host"),
        ("bedrock-runtime.us-east-1.amazonaws.com/mcp", "model provider's host"),
        ("tools.internal/mcp/../admin", "'.' or '..' step"),
        ("'tools internal/mcp'", "invalid egress pattern"),
    ],
)
def test_a_bad_mcp_server_is_a_problem_on_its_line(entry: str, why: str) -> None:
    """``tools.mcp_servers``: each entry names one host and the route its MCP server serves; anything else
    is reported at its file and line, and the policy does not load."""
    found = problems(MCP_SERVERS_POLICY % entry)
    assert len(found) == 1 and found[0].startswith("policy.yaml:9: roles.ops.tools.mcp_servers[2]"), found
    assert why in found[0]


def test_mcp_servers_name_hosts_ports_and_routes() -> None:
    """An entry serves its route and those under it, on its host and ports (443 and 80 when it names
    none), never a route that only starts like it or steps out of it."""
    policy = parse_policy(textwrap.dedent(MCP_SERVERS_POLICY % "'[fd00::1]/'"), "policy.yaml", environ=ENV)
    named, address, everything = policy.roles["ops"].mcp_servers
    assert named.serves("TOOLS.internal.", 443, "/mcp") and named.serves("tools.internal", 80, "/mcp/x?y=1")
    assert named.serves("tools.internal", 443, "/%6dcp/")
    for host, port, path in [
        ("tools.internal", 8443, "/mcp"),
        ("tools.internal", 443, "/mcpx"),
        ("tools.internal", 443, "/api/mcp"),
        ("tools.internal", 443, "/mcp/../admin"),
        ("tools.internal", 443, "/mcp/%2e%2e/admin"),
        ("evil.tools.internal", 443, "/mcp"),
        ("tools.internal.evil.example", 443, "/mcp"),
    ]:
        assert not named.serves(host, port, path), (host, port, path)
    assert address.serves("10.1.2.3", 8080, "/api/mcp") and not address.serves("10.1.2.3", 443, "/api/mcp")
    assert everything.serves("[FD00::1]", 443, "/anything") and not everything.serves("fd00::2", 443, "/")
