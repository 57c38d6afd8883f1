"""The destructive-command reading of command tools' arguments (proxy/detectors/commands.py): every
destructive call of tests/fixtures/commands/destructive.txt found, as written and in every disguise of
bench/command_eval.py, and every hand-made variant of variants.txt withheld; the routine calls of noted.txt
noted and let pass; none of the everyday calls of benign.txt; other tools' arguments read for their command
fields alone; and the catalogue's, the credential reads' and the approval path's share of it."""

from __future__ import annotations

import dataclasses
import fnmatch
import json

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.command_eval import DISGUISES, fixture_cases, shell_commands, withheld
from proxy.detectors import commands, tools
from proxy.detectors.credentials import credential_reads, credential_scanner
from proxy.detectors.tools import CatalogueEntry, RoleOverrides, ToolCatalogue, check_tool_calls
from proxy.exchange import ToolCall
from proxy.model import Action, Severity, Threat
from proxy.scanning.rulepack import ScanBudget, Scanner, load_packaged_packs
from tests.cpu_time import least_cpu_seconds

PACKS = load_packaged_packs()
SCANNER = commands.command_scanner(PACKS)
CATALOGUE = ToolCatalogue.load()
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _call(name: str, arguments: str | dict[str, object]) -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(id="c1", name=name, arguments=text, where="choices[0].message.tool_calls[0]")


def _judge(call: ToolCall) -> CatalogueEntry | None:
    return commands.destructive_entry(call, SCANNER, SCANNER.budget())


def _rule(name: str, arguments: str | dict[str, object]) -> str | None:
    entry = commands.destructive_entry(_call(name, arguments), SCANNER, SCANNER.budget())
    return entry.id if entry else None


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("destructive.txt"))
def test_a_destructive_call_is_found(tool: str, arguments: str) -> None:
    assert _rule(tool, arguments) is not None


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_every_destructive_command_is_found_in_each_disguise(disguise: str) -> None:
    missed = [
        command
        for command in shell_commands("destructive.txt")
        if _rule("bash", {"command": DISGUISES[disguise](command)}) is None
    ]
    assert missed == []


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("benign.txt"))
def test_an_everyday_call_is_not_found(tool: str, arguments: str) -> None:
    assert _rule(tool, arguments) is None


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("variants.txt"))
def test_an_attacker_s_variant_is_withheld(tool: str, arguments: str) -> None:
    assert withheld(_judge(_call(tool, arguments)))


@pytest.mark.parametrize(("tool", "arguments"), fixture_cases("noted.txt"))
def test_a_routine_call_is_noted_and_passes(tool: str, arguments: str) -> None:
    """A scratch table dropped or a checkout reset is found by a rule of medium severity: recorded as a
    flag, neither withheld nor asking for an approval."""
    entry = _judge(_call(tool, arguments))
    assert entry is not None and entry.severity is Severity.MEDIUM
    name = "run" if tool == "bash" else tool  # `bash` needs an approval for its name alone
    (finding,) = check_tool_calls([_call(name, arguments)], None, CATALOGUE, judge=_judge)
    assert finding.action is Action.FLAG and finding.signal.endswith("noted")


def test_a_rule_only_noting_a_call_gives_way_to_its_name_s_need_of_approval() -> None:
    call = _call("bash", {"command": "git reset --hard origin/main"})
    named = CATALOGUE.entry_for("bash")
    assert named is not None
    (finding,) = check_tool_calls([call], None, CATALOGUE, judge=_judge)
    assert finding.action is Action.WITHHOLD and finding.rule == named.id


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        # A quote the shell does not read as one, hiding nothing.
        ("echo \\'; rm -rf /; echo \\'", "cmd-recursive-delete-broad"),
        ("echo $'\\''; rm -rf /; echo '", "cmd-recursive-delete-broad"),
        ('echo "a\\"; rm -rf /; echo \\""', "cmd-recursive-delete-broad"),
        ("# it's a comment\nrm -rf ~\n# don't", "cmd-recursive-delete-broad"),
        ('echo "$(rm -rf /)"', "cmd-recursive-delete-broad"),
        ("echo `rm -rf ~`", "cmd-recursive-delete-broad"),
        ("grep 'x y' f; rm -rf ~", "cmd-recursive-delete-broad"),
        # A string something in the text runs.
        ("X='rm -rf /'; eval \"$X\"", "cmd-recursive-delete-broad"),
        ("git -c alias.x='!rm -rf ~' x", "cmd-recursive-delete-broad"),
        ('set -- rm -rf /; "$@"', "cmd-recursive-delete-broad"),
        ("cat <<< 'rm -rf /' | sh", "cmd-recursive-delete-broad"),
        # As bash reads it, the quote runs from it's to the last line: rm is an argument of echo.
        ("echo it's fine\nrm -rf ~\necho '", None),
        ("grep -c 'rm -rf /' notes.md | head -1", None),
    ],
)
def test_quotes_are_read_as_the_shell_reads_them(command: str, rule: str | None) -> None:
    assert _rule("bash", {"command": command}) == rule


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        ("SELECT 'DROP TABLE x'", ["SELECT ''"]),
        ("SELECT 1; -- DROP TABLE users\nSELECT 2", ["SELECT 1", "SELECT 2"]),
        ("DROP/**/TABLE users", ["DROP TABLE users"]),
        ("DELETE FROM users\nWHERE id = 5;", ["DELETE FROM users WHERE id = 5"]),
        ("psql <<EOF\nDROP TABLE users\nEOF", ["psql <<EOF DROP TABLE users EOF", "DROP TABLE users EOF"]),
    ],
)
def test_sql_is_read_statement_by_statement_without_comments_and_literals(
    text: str, statements: list[str]
) -> None:
    assert commands.sql_statements(text).split("\n")[: len(statements)] == statements


def test_a_backslash_before_a_quote_is_read_both_ways() -> None:
    """Standard SQL ends ``'x\\'`` at its second quote, MySQL does not: both readings are made, so the
    statement the first reading finds after it is read."""
    assert "DROP TABLE users" in commands.sql_statements("SELECT 'x\\'; DROP TABLE users; --'").split("\n")


def test_a_mysql_executable_comment_is_read_as_the_sql_it_runs() -> None:
    """MySQL runs what ``/*!`` (and a version's digits) opens; other databases skip it as a comment."""
    assert commands.sql_statements("DROP /*!50000 TABLE */ users").split("\n") == [
        "DROP users",
        "DROP TABLE users",
    ]
    assert commands.sql_statements("SELECT 1 /* DROP TABLE users */").split("\n") == ["SELECT 1"]


def test_a_mysql_string_left_open_runs_to_the_end_whatever_ends_it() -> None:
    """MySQL runs nothing after a string left open: read so even where a lone backslash ends the text
    (it failed the string, and each quote after it was read as another's start); standard SQL still ends
    ``'\\'`` at its second quote and reads the statement after it."""
    text = "SELECT '\\'; DROP TABLE users; \\"
    assert commands.sql_statements(text, as_mysql=True) == "SELECT ''"
    assert "DROP TABLE users" in commands.sql_statements(text).split("\n")


HOSTILE_SHAPES = [
    "'\\",
    "[[[",
    '"\\',
    "'\\\"",
    "'a\\'",
    "< <(",
    "$(a)",
    "'+'",
    "'\\\n",
    "|",
    "(",
    ">a",
    "|a=",
    "a|\n",
    "unset a; $a ",
]
"""Command texts made of a short piece repeated, each read quadratically or worse once: every quote a
literal's start read to the end, every unclosed bracket of a glob read to the end, a fed command's 400
characters tried before every place, and every separator of a word read to the word's end for a
command's directory or assignment, every ``>`` to the command's end for a file it writes."""


@pytest.mark.parametrize("unit", HOSTILE_SHAPES)
def test_a_command_of_a_piece_repeated_is_read_in_time_linear_in_it(unit: str) -> None:
    """40 KB of the piece repeated is read within a second of CPU (the readings of a call are made
    within its budget, but no other agent's request should wait seconds on one call; the shapes took
    from 3 to 25 seconds at 40 KB), and a destructive command before it is still found."""
    padding = (unit * (40 * 1024 // len(unit) + 1))[: 40 * 1024]
    arguments = json.dumps({"command": padding})
    assert least_cpu_seconds(lambda: commands.readings("bash", arguments), runs=1) < 1.0
    for command in ("rm -rf /", 'subprocess.run(["rm", "-rf", "/"])'):
        assert _rule("bash", {"command": f"{command}\n{padding}"}) == "cmd-recursive-delete-broad"


@pytest.mark.parametrize(
    ("text", "joined"),
    [
        # An escaped quote of one kind inside a string of the other opens a literal where that one fails.
        ("x = \"a\\'rm -rf /' + 'x'", "rm -rf / x"),
        # A string longer than a literal may be is none, but the escaped quote nearest its end opens one.
        ("'" + "a" * 4096 + "\\'rm', '-rf', '/'", "rm -rf /"),
        ("run('rm', '-rf', '/')", "rm -rf /"),
    ],
)
def test_literals_are_joined_as_code_joins_them(text: str, joined: str) -> None:
    assert joined in commands._joined_literals(text).split("\n")


@pytest.mark.parametrize(
    ("tool", "arguments", "rule"),
    [
        ("my_tool", {"command": "rm -rf /"}, "cmd-recursive-delete-broad"),
        ("deploy_helper", {"options": {"script": "sudo rm -rf ~"}}, "cmd-recursive-delete-broad"),
        # The field's words in order, however written: the same every run, whatever the hash seed.
        ("my_tool", {"command_line": "rm -rf ~"}, "cmd-recursive-delete-broad"),
        ("my_tool", {"commandLine": "rm -rf ~"}, "cmd-recursive-delete-broad"),
        ("my_tool", {"Command-Line": "rm -rf ~"}, "cmd-recursive-delete-broad"),
        ("report", {"query": "DROP TABLE users"}, "cmd-sql-destructive"),
        ("report", {"sql": "UPDATE users SET admin = true"}, "cmd-sql-update-every-row"),
        ("search_docs", {"sql": "TRUNCATE orders"}, "cmd-sql-destructive"),
        # A query field is read by the data-store rules alone; a search's query not at all.
        ("report", {"query": "rm -rf / explained"}, None),
        ("report", {"query": "customers who dropped their plan"}, None),
        ("search_docs", {"query": "DROP TABLE syntax"}, None),
        ("create_ticket", {"description": "rm -rf / ran on staging", "body": "DROP TABLE users"}, None),
    ],
)
def test_another_tool_is_read_for_its_command_fields(
    tool: str, arguments: dict[str, object], rule: str | None
) -> None:
    assert not commands.is_command_tool(tool)
    assert _rule(tool, arguments) == rule


@pytest.mark.parametrize(
    ("name", "command_tool"),
    [
        ("search_database", False),
        ("vector_query", False),
        ("knowledge_base_query", False),
        ("query_database", True),
        ("run_query", True),
        ("database_admin", True),
    ],
)
def test_a_search_is_no_query_tool(name: str, command_tool: bool) -> None:
    assert commands.is_command_tool(name) is command_tool


@pytest.mark.parametrize(
    "path", ["../../..", "./../..", "/usr/..", "~/x/..", "//", "/./", "${HOME}/a/..", "~/..", "/home/alice/"]
)
def test_a_broad_path_is_known_however_it_is_spelled(path: str) -> None:
    assert _rule("bash", {"command": f"rm -rf {path}"}) == "cmd-recursive-delete-broad"


@pytest.mark.parametrize("path", ["./build/..x", "../build", "~/x/../y", "/home/alice/src", "/usr/../tmp/x"])
def test_a_path_under_a_broad_one_is_not(path: str) -> None:
    assert _rule("bash", {"command": f"rm -rf {path}"}) is None


def test_the_most_severe_rule_of_a_call_names_it() -> None:
    """A scratch table's drop beside a real one is no note: the critical rule names the call."""
    entry = _judge(_call("sql", {"query": "DROP TABLE tmp_a; git reset --hard; DROP TABLE users"}))
    assert entry is not None and entry.id == "cmd-sql-destructive" and entry.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    "command",
    [
        "r''m -rf /",
        'r"m" -rf ~',
        "rm${IFS}-rf${IFS}~",
        "a=r; b=m; $a$b -rf /",
        'IFS=,; x="rm,-rf,/"; $x',
        "IFS=:; x=rm:-rf:~; $x",
        "r${unset}m -rf /",
        "${x:-rm} -rf /",
        'rm -rf "${1:-/}"',
        "rm -rf ${@:-~}",
        'x() { rm -rf "${1:-/}"; }; x',
        "/???/r? -rf /",
        "\\rm -rf /",
        "{rm,-rf,/}",
        "$(echo rm) -rf /",
        "sudo -u root nohup env X=1 xargs rm -rf / < /dev/null",
        "echo 'rm -rf /' | sh",
        "X=$(echo cm0gLXJmIC8= | base64 -d); $X",
        "cat <<EOF | bash\nrm -rf ~\nEOF",
        "cat > x.sh <<EOF\n$(rm -rf ~)\nEOF",
    ],
)
def test_a_disguised_removal_is_found(command: str) -> None:
    assert _rule("bash", {"command": command}) is not None


def test_a_command_far_into_a_long_argument_is_found_and_cut_lines_do_not_read_as_broad() -> None:
    """Windows of a long argument end at a line's end and overlap, so a command past the first window is
    read whole and no path is read cut short (``./build`` as ``./``)."""
    filler = "rm -rf ./build/cache\n" * 4000
    assert _rule("bash", {"command": filler}) is None
    assert _rule("bash", {"command": filler + "cd / && rm -rf ~\n" + filler}) == "cmd-recursive-delete-broad"
    one_line = "echo " + "a" * 40_000 + " ; rm -rf ~ ; echo " + "b" * 40_000
    assert _rule("bash", {"command": one_line}) == "cmd-recursive-delete-broad"


def test_a_here_document_only_stored_is_data_and_one_run_is_commands() -> None:
    schema = "DROP TABLE IF EXISTS users;\nCREATE TABLE users (id int);"
    assert _rule("bash", {"command": f"cat > schema.sql <<'EOF'\n{schema}\nEOF"}) is None
    assert _rule("bash", {"command": f"psql app <<'EOF'\n{schema}\nEOF"}) == "cmd-sql-destructive"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("send_email", {"to": "a@example.com", "body": "Run rm -rf / to clean up"}),
        ("write_file", {"path": "cleanup.sh", "content": "rm -rf /"}),
        ("create_issue", {"title": "DROP TABLE users ran in prod"}),
        ("get_weather", {"city": "rm -rf ~"}),
    ],
)
def test_other_tools_arguments_are_not_read(tool: str, arguments: dict[str, object]) -> None:
    assert not commands.is_command_tool(tool)
    assert _rule(tool, arguments) is None


@pytest.mark.parametrize(
    ("tool", "arguments", "rule"),
    [
        ("aws_cli", {"command": "s3 rm s3://prod --recursive"}, "cmd-infrastructure-teardown"),
        ("kubectl", {"args": ["delete", "ns", "prod"]}, "cmd-kubernetes-mass-delete"),
        ("git", {"args": ["push", "--force", "origin", "main"]}, "cmd-git-history-rewritten"),
        ("local_shell", {"command": ["bash", "-lc", "rm -rf ~"]}, "cmd-recursive-delete-broad"),
        ("apply_patch", "*** Begin\nrm -rf /\n", None),
        ("run_code", "import os\nos.system('mkfs.ext4 /dev/sda')", "cmd-disk-overwrite"),
    ],
)
def test_a_cli_tool_s_words_and_an_argv_are_read_as_its_command_line(
    tool: str, arguments: str | dict[str, object], rule: str | None
) -> None:
    assert _rule(tool, arguments) == rule


def test_a_destructive_command_needs_approval_whatever_the_role_exempts() -> None:
    """The argument's rule names the finding; a role's exemption of the tool's name lifts the name's
    need for approval, not what its arguments run; an approval lets it run."""

    exempt = RoleOverrides(exempt=("bash",))
    calm = _call("bash", {"command": "ls -la"})
    assert check_tool_calls([calm], None, CATALOGUE, exempt, judge=_judge) == []
    (finding,) = check_tool_calls(
        [_call("bash", {"command": "rm -rf ~"})], None, CATALOGUE, exempt, judge=_judge
    )
    assert finding.rule == "cmd-recursive-delete-broad" and finding.threat is Threat.TOOL_ABUSE
    assert finding.action is Action.WITHHOLD and finding.severity is Severity.CRITICAL
    assert finding.signal.startswith("tool bash running a recursive delete")
    (approved,) = check_tool_calls(
        [_call("run", {"cmd": "rm -rf ~"})], "APR-1", CATALOGUE, approve=lambda call: None, judge=_judge
    )
    assert approved.action is Action.FLAG and approved.extra["approval_id"] == "APR-1"


def test_a_call_the_budget_has_nothing_left_for_is_withheld() -> None:
    entry = commands.destructive_entry(_call("run", {"cmd": "ls"}), SCANNER, ScanBudget(0.0))
    assert entry is not None and entry.id == "destructive_commands-unread"


def test_a_rule_out_of_time_is_withheld_whatever_a_routine_rule_found() -> None:
    """A checkout reset is only noted, but a rule that ran out of time on the same call may have missed
    the command that matters: the call is withheld under that rule, at high severity, and the budget
    names the rule for the record."""
    pack = next(pack for pack in PACKS if pack.name == commands.PACK)
    slow = dataclasses.replace(
        pack.rules[0], id="cmd-slow", pattern=regex.compile(r"(?:x|xx)+(?:x|xx)+[^x\s]"), keywords=("xx",)
    )
    # The time limit is every rule's: only the slow rule beside the one routine rule may run out of it.
    (checkout,) = (rule for rule in pack.rules if rule.id == "cmd-git-local-work-discarded")
    scanner = Scanner([dataclasses.replace(pack, rules=(checkout, slow))], timeout_s=0.01)
    budget = scanner.budget()
    call = _call("run", {"cmd": "git reset --hard; echo " + "x" * 64})
    entry = commands.destructive_entry(call, scanner, budget)
    assert entry is not None and entry.id == "cmd-slow" and entry.severity is Severity.CRITICAL
    assert "out of time" in entry.description and "cmd-slow" in budget.timed_out
    routine = dataclasses.replace(slow, severity=Severity.MEDIUM)
    scanner = Scanner([dataclasses.replace(pack, rules=(checkout, routine))], timeout_s=0.01)
    entry = commands.destructive_entry(call, scanner, scanner.budget())
    assert entry is not None and entry.id == "cmd-slow" and entry.severity is Severity.HIGH
    (finding,) = check_tool_calls([call], None, CATALOGUE, judge=lambda call: entry)
    assert finding.action is Action.WITHHOLD


@pytest.mark.parametrize(
    ("code", "runs"),
    [
        ("subprocess.run(args)", True),
        ("from subprocess import run\nrun(args)", True),
        ("os.system(x)", True),
        ("cursor.execute(q)", True),
        ("pool.query(q)", True),
        ("mysqli_query($db, $q)", True),
        ("spark.sql(q)", True),
        ("Model.objects.raw(q)", True),
        ("await sql`${q}`", True),
        ("exec.Command(name, args...)", True),
        ("std::process::Command::new(name)", True),
        ("Runtime.getRuntime().exec(cmd)", True),
        ("System.Diagnostics.Process.Start(cmd)", True),
        ("require('child_process')", True),
        ("new Function(body)()", True),
        ("getattr(os, name)(x)", True),
        ("c.run(cmd)", True),
        ("pattern = re.compile(x)", False),
        ("app.run(debug=True)", False),
        ("asyncio.run(main())", False),
        ("stmt = text(x)", False),
        ("items.forEach(function(item) { log(item) })", False),
        ("thread.start()", False),
        ("getattr(self, name)", False),
        ("parser.add_command(name)", False),
        ("session.call(method)", False),
    ],
)
def test_code_runs_strings_only_where_it_calls_a_runner(code: str, runs: bool) -> None:
    assert commands.runs_strings(code) is runs


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        # SQL is read as SQL: a WHERE after brackets is the statement's.
        ("UPDATE t SET x = round(x, 2) WHERE id = 1", None),
        ("UPDATE t SET x = round(x, 2)", "cmd-sql-update-every-row"),
        ('mysql -e "UPDATE t SET n = coalesce(n, (0)) WHERE id = 3"', None),
        # MySQL reads -- before a word as no comment.
        ("SELECT 1 --x; DROP TABLE users", "cmd-sql-destructive"),
        # The place a command runs in, named before it or in a subshell that ended.
        ("cd / && rm -rf usr", "cmd-recursive-delete-broad"),
        ("(cd / && ls); rm -rf usr", None),
        ("cd ~/work && git clean -fdx", "cmd-git-local-work-discarded"),
        ("cd ~/src/app; cd .. ; git clean -fdx", "cmd-git-local-work-discarded"),
        ("cd ~/work; cd ..; git clean -fdx", "cmd-git-clean-broad"),
        ("GIT_WORK_TREE=/ git status", None),
        # A variable the text unsets and never assigns is empty after the unset, and only there.
        ('unset X; rm -rf "$X"/', "cmd-recursive-delete-broad"),
        ('unset -v X Y && rm -rf "/${Y}"', "cmd-recursive-delete-broad"),
        ('rm -rf "$X"/; unset X', None),
        ('X=./build; unset X; rm -rf "$X"/', None),
        ('unset -f X; rm -rf "$X"/', None),
        ('rm -rf "$BUILD_DIR"/', None),
        # A switch set to false is no switch.
        ("docker system prune --all=false -f", None),
    ],
)
def test_a_command_is_read_where_and_as_what_it_runs(command: str, rule: str | None) -> None:
    assert _rule("bash", {"command": command}) == rule


@pytest.mark.parametrize(
    ("reading", "deploying"),
    [
        ("deploy_status", "deploy_service"),
        ("deploy_logs", "deploy_app"),
        ("vercel_deploy_status", "vercel_deploy_project"),
    ],
)
def test_a_deploy_s_status_and_logs_only_read(reading: str, deploying: str) -> None:
    assert CATALOGUE.is_destructive(reading) is None
    assert CATALOGUE.is_destructive(deploying) == "tool-deploy"


@pytest.mark.parametrize(
    ("tool", "arguments", "found"),
    [
        ("write_file", {"path": "job.py", "content": f"token = open('{TOKEN}').read()"}, False),
        ("str_replace_based_edit_tool", {"command": "create", "path": "k.py", "file_text": TOKEN}, False),
        ("edit_file", {"path": "a.py", "edits": [{"oldText": "x", "newText": TOKEN}]}, False),
        ("str_replace_based_edit_tool", {"command": "view", "path": TOKEN}, True),
        ("read_file", {"path": TOKEN}, True),
        ("bash", {"command": f"cat {TOKEN}"}, True),
    ],
)
def test_a_writing_tool_s_content_names_no_read(tool: str, arguments: dict[str, object], found: bool) -> None:
    scanner = credential_scanner(PACKS)
    rules = [
        finding.rule for finding in credential_reads([_call(tool, arguments)], scanner, scanner.budget())
    ]
    assert rules == (["workload-identity-token"] if found else [])


def _corpus_texts() -> list[str]:
    """Every command text of the corpora, as written and in each disguise, its readings besides (what
    the searches read), and each with letters ``re`` reads as another's case put in."""
    texts = [
        string
        for name in ("destructive.txt", "variants.txt", "noted.txt", "benign.txt")
        for _, arguments in fixture_cases(name)
        for string in commands.command_strings(arguments)
    ]
    texts += [
        disguise(command) for disguise in DISGUISES.values() for command in shell_commands("destructive.txt")
    ]
    texts += [commands._undisguised(text) for text in texts]
    cased = str.maketrans({"i": "\u0131", "I": "\u0130", "s": "\u017f", "k": "\u212a"})
    texts += [text.translate(cased) for text in texts] + [f"\u00e9 {text}" for text in texts]
    shapes = [(unit * (4096 // len(unit) + 1))[:4096] for unit in (*HOSTILE_SHAPES, "exec", "sh x", "a\nsh ")]
    return texts + shapes


@pytest.mark.parametrize(
    "loosened",
    [commands._FIRST_STRING_RUNNER, commands._FIRST_SEPARATED_ASSIGNMENT, commands._FIRST_COMMAND_RUNNER],
    ids=["string runners", "separated assignments", "command runners"],
)
def test_a_search_led_by_the_loosened_form_finds_what_the_pattern_finds(loosened: commands._Loosened) -> None:
    """The search that tries the pattern only where its loosened form (a line's start kept) may start a
    match finds the first match a plain search finds, in every text of the corpora and their readings:
    the same verdicts, read some twice as fast."""
    for text in _corpus_texts():
        found, expected = loosened.search(text), loosened.pattern.search(text)
        assert (found and found.span()) == (expected and expected.span()), text


@pytest.mark.parametrize("unit", ["the quick brown fox reads its mail ", "exec", "\u00e9 exec ", "popen"])
def test_prose_and_words_that_run_strings_glued_are_read_in_time_linear_in_them(unit: str) -> None:
    """40 KB of prose is read within 150 ms of CPU (some 120 ms before the search for what runs strings
    was led by its loosened form, two thirds of it that search; some 45 ms after; 80 to 90 ms with the
    readings added since, "exec" repeated the dearest), and a word that runs strings repeated with no
    word boundary (each a place where the loosened form starts and reads to the word's end) costs no more
    and grows linearly."""
    padding = (unit * (40 * 1024 // len(unit) + 1))[: 40 * 1024]
    arguments = json.dumps({"command": padding})
    assert least_cpu_seconds(lambda: commands.readings("bash", arguments), runs=2) < 0.15
    quarter = json.dumps({"command": padding[: 10 * 1024]})
    assert least_cpu_seconds(lambda: commands.readings("bash", arguments), runs=3) < 8 * max(
        least_cpu_seconds(lambda: commands.readings("bash", quarter), runs=3), 0.01
    )


def test_globs_a_sender_writes_are_kept_within_bounds() -> None:
    """A glob standing as a command's name still names the command it matches, however long, but fnmatch
    keeps none of them (it kept up to 32,768 of up to 16 KB each for the process's life), and of the
    globs kept here none is longer than 256 characters, nor more than 1,024 of them."""
    _rule("bash", {"command": "r* -rf /tmp/x"})  # the command tools' names, globs of the project's own
    kept_by_fnmatch = fnmatch._compile_pattern.cache_info().currsize  # type: ignore[attr-defined]
    long_glob = "[" + "qwertyuiop" * 400 + "]m"
    assert _rule("bash", {"command": f"/bin/{long_glob} -rf /"}) == "cmd-recursive-delete-broad"
    for number in range(1500):
        commands.readings("bash", json.dumps({"command": f"r{number}* -rf /tmp/x"}))
    assert tools._compiled_glob.cache_info().currsize <= 1024
    assert fnmatch._compile_pattern.cache_info().currsize == kept_by_fnmatch  # type: ignore[attr-defined]


# The search of what a store takes its output from as it was written first: from each place, a pipeline
# ending in a store. Right, and quadratic in a line's length.
_STORED_FROM_EACH_PLACE = regex.compile(
    r"(?m)(?P<pipeline>[^\n;&<>()`]*?)"
    r"(?:(?<![<>&=-])\d?>>?[ \t]*(?![&=])|\|[ \t]*(?:sudo[ \t]+)?tee(?:[ \t]+-\S+)*[ \t]+"
    r"|\bdd\b[^\n;&|]*?[ \t]of=)"
    r"""(?P<path>[^\s;&|<>()'"`]+)"""
)
_STORE_PIECES = st.sampled_from(
    ["echo x", " ", "|", "| tee ", "| sudo tee -a ", ">", ">>", "2>", "2>&1", "&", ";", "\n", "(", ")", "`",
     "<", "dd if=a", " of=", "out.sh", "/dev/null", "=", "-", "cat y", "'q'"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_STORE_PIECES, max_size=14).map("".join))
def test_what_a_store_takes_its_output_from_is_what_a_search_from_each_place_finds(text: str) -> None:
    expected = [
        (match.group("path"), match.group("pipeline").strip())
        for match in _STORED_FROM_EACH_PLACE.finditer(text)
        if not match.group("path").startswith("/dev/")
    ]
    assert commands.redirected_by_commands(text) == expected


@pytest.mark.parametrize("unit", ["abc def ", "dd ", "| ", "echo x | "])
def test_a_long_line_of_no_store_is_read_in_time_linear_in_it(unit: str) -> None:
    """A line of 400,000 characters with no store costs one pass, and ``dd`` at most 160 characters a word
    (a search from each place for a pipeline ending in a store took 10 s on 20,000)."""
    line = unit * (400_000 // len(unit))
    assert least_cpu_seconds(lambda: commands.redirected_by_commands(line), runs=1) < 1.0
