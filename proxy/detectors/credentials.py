"""Credential theft: a file-read or shell tool call whose arguments name credential material.

The patterns are the `credential_access` rule pack; they run over the arguments of tools that read files
or run commands, never over prose or other tools' arguments (an email that mentions `.env` is not theft).
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.detectors.tools import name_matches
from proxy.exchange import ToolCall
from proxy.model import Action, Finding
from proxy.scanning.rulepack import RulePack, ScanBudget, Scanner, scan_timeout_finding

PACK = "credential_access"
# Tools that read files or run commands, by the names agent frameworks and MCP servers give them.
READING_TOOLS = (
    "*shell*", "*bash*", "*terminal*", "*exec*", "*command*", "run_*", "*python*", "*code_interpreter*",
    "*read*", "*cat*", "*file*", "*open*", "*view*", "*fs*", "*head*", "*tail*", "*grep*", "*search_files*",
    # Editors view files as well as change them (Anthropic's text editor: str_replace_based_edit_tool).
    "edit*", "*_edit*", "*_editor*", "str_replace*",
)  # fmt: skip


def is_reading_tool(name: str) -> bool:
    return name_matches(name, READING_TOOLS)


def credential_reads(calls: Iterable[ToolCall], scanner: Scanner, budget: ScanBudget) -> list[Finding]:
    """One finding per credential rule matched in a reading tool's arguments (or out of time on them:
    ``SCAN_TIMEOUT_RULE``); where the policy enforces ``credential_theft`` the call is withheld (an MCP
    ``tools/call`` refused), elsewhere recorded. The scans are charged to ``budget``."""
    findings = []
    for call in calls:
        if not is_reading_tool(call.name):
            continue
        scan = scanner.scan(call.arguments, budget)
        rules = {match.rule.id: match.rule for match in scan.found}
        # A rule out of time may have read a credential path there: the call is withheld all the same.
        findings += [
            scan_timeout_finding(
                scanner.rules_by_id[rule_id], call.where, action=Action.WITHHOLD, tool=call.name
            )
            for rule_id in scan.timed_out
        ]
        findings += [
            Finding(
                threat=rule.threat,
                rule=rule.id,
                signal=f"{call.name}: {rule.description}",
                severity=rule.severity,
                action=Action.WITHHOLD,
                where=call.where,
                owasp=rule.owasp,
                extra={"tool": call.name},
            )
            for rule in rules.values()
        ]
    return findings


def credential_scanner(packs: Iterable[RulePack]) -> Scanner:
    return Scanner([pack for pack in packs if pack.name == PACK])


def withheld_notice(name: str, rules: Iterable[str]) -> str:
    """The assistant text that stands in for a withheld credential read."""
    return (
        f"The call to the tool `{name}` was withheld by egressguard: its arguments name credential material"
        f" ({', '.join(sorted(set(rules)))}), and this agent's policy does not let it read credentials."
    )
