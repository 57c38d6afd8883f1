"""The ``egressguard`` command line (also ``python -m proxy``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from proxy import __version__, own_tokens
from proxy.admin.client import add_commands as add_admin_commands
from proxy.admin.drill_client import AGENT_TOKEN_FILE
from proxy.admin.drill_client import add_arguments as add_drill_arguments
from proxy.admin.drill_client import run as run_drill
from proxy.alerts.check import check_queries, is_rules_file, load_rules_file
from proxy.alerts.rules import AlertConfigError
from proxy.audit.query import add_query_arguments, run_query
from proxy.audit.verify import add_pubkey_arguments, add_verify_arguments, run_pubkey, run_verify
from proxy.commands.agentenv import (
    CA_CERT_NAME,
    DEFAULT_TOKEN_ENV,
    NODE_PROXY_SWITCH,
    no_proxy_bypasses,
    no_proxy_entries,
    no_proxy_lines,
    proxy_lines,
    system_ca_file,
    trust_lines,
)
from proxy.commands.demo import add_demo_arguments, run_demo
from proxy.commands.scan import add_scan_arguments, run_scan
from proxy.config.policy import AdminSettings, Policy, load_policy, parse_workers
from proxy.config.yamlschema import SchemaError
from proxy.model import Mode

ADVERTISE_ENV = "EGRESSGUARD_ADVERTISE"
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - recognised in order to print a dialable address


def _option_pairs(values: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name:
            print(f"egressguard: --set takes OPTION=VALUE, not {value!r}", file=sys.stderr)
            raise SystemExit(2)
        pairs[name] = setting
    return pairs


def _load_or_exit(config: str | None, environ: dict[str, str] | None = None) -> Policy:
    try:
        return load_policy(Path(config) if config else None, environ=environ)
    except SchemaError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def _ensure_private_dir(path: Path) -> None:
    """The data dir holds keys, the state store and the audit log: the proxy's user alone may enter it,
    whoever created it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        path.chmod(0o700)


def _default_agent_token(data_dir: Path) -> Path:
    """The embedded policy's agent reads its token from the environment; without one, a random token is
    kept (0600) under the data dir so the same agent configuration keeps working across restarts."""
    path = data_dir / AGENT_TOKEN_FILE
    if not path.exists():
        _ensure_private_dir(data_dir)
    os.environ[DEFAULT_TOKEN_ENV] = own_tokens.token_file(path, own_tokens.TokenKind.AGENT)
    return path


def _confdir(policy: Policy, passthrough: dict[str, str]) -> Path:
    return Path(passthrough.get("confdir") or policy.data_dir / "ca").expanduser()


def cmd_run(args: argparse.Namespace) -> int:
    from addons.process.server import StartupError, serve, unavailable
    from proxy.admin.tokens import TokenFileError

    passthrough = _option_pairs(args.set)
    if args.admin_listen not in (None, "off"):
        host, _, port = args.admin_listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            print(
                f"egressguard: --admin-listen takes HOST:PORT or off, not {args.admin_listen!r}",
                file=sys.stderr,
            )
            return 2
    token_file = _fill_default_token(args.config)
    policy = _load_or_exit(args.config)
    for warning in policy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _warn_no_proxy_bypasses(policy, args.no_proxy)
    _ensure_private_dir(policy.data_dir)
    confdir = _confdir(policy, passthrough)
    passthrough.setdefault("confdir", str(confdir))
    try:
        _keep_secret_files_private(policy, confdir)
    except PermissionError as error:
        print(f"egressguard: {error}", file=sys.stderr)
        return 2
    settings = {
        "listen_host": args.listen_host,
        "listen_port": args.listen_port,
        "egressguard_config": args.config or "",
        "egressguard_mode": args.mode or "",
        "egressguard_admin_listen": args.admin_listen or "",
        # Nothing is connected upstream before the first request has been decided: a refused tunnel is
        # answered by egressguard itself, the client's TLS completed against its CA.
        "connection_strategy": "lazy",
        # Bodies over the inspection cap are relayed as they arrive instead of held in memory whole.
        "stream_large_bodies": str(policy.max_body_bytes),
    }
    workers = args.workers or policy.workers
    addresses = [(args.listen_host, args.listen_port, "")]
    admin = _admin_address(policy, args.admin_listen)
    admin_listen: AdminSettings | None = None
    if admin is not None:
        host, _, port = admin.rpartition(":")
        configured = policy.admin or AdminSettings()
        admin_listen = dataclasses.replace(configured, host=host.strip("[]"), port=int(port))
        addresses.append((admin_listen.host, admin_listen.port, "the admin listener "))
        settings["egressguard_admin_port"] = admin_listen.port
        if admin_listen.tls is not None:
            from proxy.admin.http import CertificateError, server_context

            try:
                server_context(admin_listen.tls)
            except CertificateError as error:
                print(f"egressguard: {error}", file=sys.stderr)
                return 2
            key_mode = admin_listen.tls.key_file.stat().st_mode & 0o777
            if key_mode & 0o077:
                print(
                    f"warning: the admin listener's key {admin_listen.tls.key_file} is readable by other "
                    f"users (mode {key_mode:o}): chmod 600 it",
                    file=sys.stderr,
                )
    from proxy.commands.workers import (
        AlreadyServed,
        bind_listeners,
        bound_port,
        sole_server,
        start_worker_template,
        supervise,
    )

    with contextlib.ExitStack() as holding:
        try:
            # Before the addresses are tried: the workers of a supervisor killed outright may hold them.
            serving = holding.enter_context(sole_server(policy.data_dir, workers))
        except AlreadyServed as error:
            print(f"egressguard: {error}", file=sys.stderr)
            return 2
        for host, port, what in addresses:
            problem = unavailable(host, port)
            if problem is not None:
                print(f"egressguard: {what}{problem}", file=sys.stderr)
                return 2
        options = [f"{name}={value}" for name, value in passthrough.items()]
        if workers > 1:
            start_worker_template()
            from addons.process.server import check_options, serve_worker

            try:
                _create_shared_files(policy, confdir, admin=admin_listen is not None)
                listeners = check_options(settings, options)
            except (StartupError, TokenFileError) as error:
                print(f"egressguard: {error}", file=sys.stderr)
                return 2
            try:
                listening = bind_listeners(listeners, workers)
            except OSError as error:
                print(f"egressguard: cannot listen: {error.strerror or error}", file=sys.stderr)
                return 2
            for listener in listeners:
                if listener.default_port and listener.port == 0:
                    # The port the kernel chose for every worker, which each worker takes for its own.
                    args.listen_port = bound_port(listening[0], listener.spec)
                    options.append(f"listen_port={args.listen_port}")
            _print_banner(policy, args, confdir, token_file, workers)
            return supervise(
                listening, serve_worker, settings, options, policy.data_dir, serving, admin_listen
            )
        try:
            serve(
                settings, options, announce=lambda: _print_banner(policy, args, confdir, token_file, workers)
            )
        except StartupError as error:
            print(f"egressguard: {error}", file=sys.stderr)
            return 2
        return 0


def _create_shared_files(policy: Policy, confdir: Path, *, admin: bool) -> None:
    """The CA and the keys (and admin tokens) every worker reads, made once before the workers start (each
    would otherwise make its own at the same moment)."""
    from mitmproxy.certs import CertStore

    from proxy.admin.tokens import load_tokens
    from proxy.audit.keys import PRIVATE_KEY_NAME, load_or_create_signing_key
    from proxy.runtime import fingerprint_key, vault_key

    _ensure_private_dir(confdir)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    fingerprint_key(policy.data_dir)
    vault_key(policy.data_dir)
    load_or_create_signing_key(policy.audit.path / PRIVATE_KEY_NAME)
    if admin:
        load_tokens(policy.admin or AdminSettings(), policy.data_dir)


def _keep_secret_files_private(policy: Policy, confdir: Path) -> None:
    """Each key and token file found readable by other users (copied in with a loose mode, restored from a
    backup, written by a provisioning tool) is made the proxy user's alone before anything reads it, with a
    warning to replace it; one this user does not own cannot be made private: PermissionError. Those
    created here are 0600 from the start."""
    from proxy.admin.tokens import FULL_TOKEN_FILE, READ_TOKEN_FILE
    from proxy.audit.keys import PRIVATE_KEY_NAME
    from proxy.runtime import FINGERPRINT_KEY_FILE, VAULT_KEY_FILE

    data = policy.data_dir
    for path in (
        data / AGENT_TOKEN_FILE,
        data / FULL_TOKEN_FILE,
        data / READ_TOKEN_FILE,
        data / FINGERPRINT_KEY_FILE,
        data / VAULT_KEY_FILE,
        policy.audit.path / PRIVATE_KEY_NAME,
        confdir / "mitmproxy-ca.pem",
        confdir / "mitmproxy-ca.p12",
    ):
        try:
            found = path.stat()
        except FileNotFoundError:
            continue
        mode = found.st_mode & 0o777
        if not mode & 0o077:
            continue
        if found.st_uid != os.getuid():
            raise PermissionError(
                f"{path} is readable by other users (mode {mode:o}) and owned by another user: "
                f"chmod 600 it as its owner, then replace it (who could read it may hold it)"
            )
        path.chmod(0o600)
        print(
            f"warning: {path} was readable by other users (mode {mode:o}), now 600: replace it, "
            f"as whoever could read it may hold it",
            file=sys.stderr,
        )


def _fill_default_token(config: str | None) -> Path | None:
    """A policy whose agent reads EGRESSGUARD_AGENT_TOKEN (the embedded one, or a copy of it) runs as it
    is: when the variable is unset, the token kept under that policy's data dir fills it in."""
    if os.environ.get(DEFAULT_TOKEN_ENV):
        return None
    try:
        policy = load_policy(Path(config) if config else None, environ=_environ_with_default_token())
    except SchemaError:
        return None  # the load that follows reports the problems
    if not any(agent.token_env == DEFAULT_TOKEN_ENV for agent in policy.agents.values()):
        return None
    return _default_agent_token(policy.data_dir)


def load_policy_data_dir(config: str | None = None) -> Path:
    """A policy's data dir. Agents' tokens play no part in it, so a missing token variable is no error
    here (`ca export` runs where the tokens are not, such as a one-shot container)."""
    return _load_or_exit(config, environ=_AnyTokenEnviron(os.environ)).data_dir


class _AnyTokenEnviron(dict[str, str]):
    """This environment, where a variable that is unset or empty reads as a stand-in token."""

    def get(self, key: str, default: str | None = None) -> str:  # type: ignore[override]
        return super().get(key) or "-"


def _environ_with_default_token() -> dict[str, str]:
    """This environment, with a stand-in for EGRESSGUARD_AGENT_TOKEN where `run` would fill it in."""
    return {**os.environ, DEFAULT_TOKEN_ENV: os.environ.get(DEFAULT_TOKEN_ENV) or "-"}


def _warn_no_proxy_bypasses(policy: Policy, extra: Sequence[str]) -> None:
    for bypass in no_proxy_bypasses(no_proxy_entries(os.environ, extra), policy):
        print(f"warning: {bypass}", file=sys.stderr)


def advertised_address(listen_host: str, listen_port: int, advertise: str | None) -> str:
    """The address agents put in their proxy URL: ``--advertise`` (or EGRESSGUARD_ADVERTISE) when the
    listener's own address is not one an agent can dial, such as 0.0.0.0 in a container."""
    host = advertise or (socket.gethostname() if listen_host in WILDCARD_HOSTS else listen_host)
    has_port = "]:" in host if host.startswith("[") else host.count(":") == 1
    if has_port:
        return host
    return f"[{host}]:{listen_port}" if ":" in host else f"{host}:{listen_port}"


def _print_banner(
    policy: Policy, args: argparse.Namespace, confdir: Path, token_file: Path | None, workers: int
) -> None:
    listening = advertised_address(args.listen_host, args.listen_port, args.listen_host or WILDCARD_HOSTS[0])
    address = advertised_address(args.listen_host, args.listen_port, args.advertise)
    mode = args.mode or policy.mode
    ca = (confdir / CA_CERT_NAME).resolve()
    processes = f", {workers} workers" if workers > 1 else ""
    print(f"egressguard {__version__} on {listening} (mode: {mode}, policy: {policy.source}{processes})")
    print("Set in each agent's environment:")
    for agent in policy.agents.values():
        if token_file is not None and agent.token_env == DEFAULT_TOKEN_ENV:
            token = f"$(cat {token_file.resolve()})"
        else:
            token = "$" + (agent.token_env or f"{agent.name.upper().replace('-', '_')}_TOKEN")
        for line in proxy_lines(agent.name, token, address, agent.role):
            print(f"  {line}")
    for line in [*no_proxy_lines(), *trust_lines(ca)]:
        print(f"  {line}")
    print(f"  {NODE_PROXY_SWITCH}   # Node 22.21+/24.5+; older Node, Java, Go: README, 'Pointing an agent'")
    admin = _admin_address(policy, args.admin_listen)
    if admin is not None:
        scheme = "https" if policy.admin and policy.admin.tls else "http"
        admin_token = (policy.data_dir / "admin.token").resolve()
        print(f"Admin API: {scheme}://{admin} (bearer token in {admin_token})")
    sys.stdout.flush()


def _admin_address(policy: Policy, override: str | None) -> str | None:
    if override == "off" or (override is None and policy.admin is None):
        return None
    if override is not None:
        return override
    assert policy.admin is not None
    host = policy.admin.host
    return f"[{host}]:{policy.admin.port}" if ":" in host else f"{host}:{policy.admin.port}"


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if _is_rules_file(path):
        return _check_rules_file(path)
    try:
        policy = load_policy(path, environ=_environ_with_default_token())
    except SchemaError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    failing, warnings = check_queries(policy.alerts) if policy.alerts is not None else ([], [])
    for failure in failing:
        print(failure, file=sys.stderr)
    if failing:
        return 2
    for warning in [*policy.warnings, *warnings]:
        print(f"warning: {warning}", file=sys.stderr)
    _warn_no_proxy_bypasses(policy, args.no_proxy)
    print(f"{args.file}: ok ({len(policy.agents)} agents, {len(policy.roles)} roles, mode {policy.mode})")
    return 0


def _is_rules_file(path: Path) -> bool:
    try:
        return is_rules_file(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the policy loader reports it


def _check_rules_file(path: Path) -> int:
    """An alert rules file on its own (as the playbook ships one): every rule checked, its SQL run over an
    empty log; the destinations it names are for the policy using it to define."""
    try:
        config, destinations = load_rules_file(path)
    except AlertConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    problems, warnings = check_queries(config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    names = ", ".join(destinations)
    print(f"{path}: ok ({len(config.rules)} alert rules; the policy using it defines destinations {names})")
    return 0


def cmd_ca_export(args: argparse.Namespace) -> int:
    from mitmproxy.certs import CertStore

    passthrough = _option_pairs(args.set)
    data_dir = load_policy_data_dir(args.config)
    confdir = Path(passthrough.get("confdir") or data_dir / "ca").expanduser()
    _ensure_private_dir(confdir)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    certificate = (confdir / CA_CERT_NAME).read_bytes()
    if args.bundle:
        system = system_ca_file()
        if system is None:
            print("egressguard: no system CA bundle found to add egressguard's CA to", file=sys.stderr)
            return 2
        certificate = system.read_bytes().rstrip(b"\n") + b"\n" + certificate
    if args.out in (None, "-"):
        sys.stdout.write(certificate.decode())
    else:
        Path(args.out).write_bytes(certificate)
        Path(args.out).chmod(0o644)  # public: agents running as any user must read it
        what = "the system's CAs and egressguard's CA" if args.bundle else "the CA certificate"
        print(f"wrote {what} to {args.out}", file=sys.stderr)
    return 0


def _add_no_proxy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-proxy",
        action="append",
        default=[],
        metavar="LIST",
        help="the NO_PROXY agents will have (besides this environment's): warn where it bypasses the proxy",
    )


def _workers_argument(text: str) -> int:
    try:
        return parse_workers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egressguard", description="Inline security proxy for AI agents.")
    parser.add_argument("--version", action="version", version=f"egressguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the proxy")
    run.add_argument("--config", help="policy YAML (default: the embedded default policy)")
    run.add_argument("--listen-host", default="127.0.0.1")
    run.add_argument("--listen-port", type=int, default=8080)
    run.add_argument("--mode", choices=[str(mode) for mode in Mode], help="override the policy's mode")
    run.add_argument(
        "--workers",
        type=_workers_argument,
        metavar="N|auto",
        help="proxy processes sharing the port, or auto for one per core (default: the policy's workers, "
        "else one per core)",
    )
    run.add_argument(
        "--advertise",
        default=os.environ.get(ADVERTISE_ENV),
        metavar="HOST[:PORT]",
        help=f"the address agents use to reach the proxy, printed in the banner (env {ADVERTISE_ENV})",
    )
    _add_no_proxy_argument(run)
    run.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="admin listener address over the policy's admin.listen; 'off'",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="set a mitmproxy option (repeatable), e.g. ssl_verify_upstream_trusted_ca=FILE",
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="validate a policy file, or an alert rules file")
    check.add_argument("file")
    _add_no_proxy_argument(check)
    check.set_defaults(handler=cmd_check)

    ca = commands.add_parser("ca", help="the proxy's certificate authority")
    ca_commands = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    export = ca_commands.add_parser("export", help="write the CA certificate (never the key)")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.add_argument(
        "--bundle",
        action="store_true",
        help="write the system's trusted CAs followed by egressguard's CA, for SSL_CERT_FILE",
    )
    export.add_argument("--config", help="policy whose data_dir holds the CA")
    export.add_argument("--set", action="append", default=[], metavar="confdir=DIR")
    export.set_defaults(handler=cmd_ca_export)

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify", help="check the hash chain and checkpoint signatures (exit 1 at the first break)"
    )
    add_verify_arguments(verify)
    verify.set_defaults(handler=run_verify)
    pubkey = audit_commands.add_parser("pubkey", help="print the public key that signs checkpoints")
    add_pubkey_arguments(pubkey)
    pubkey.set_defaults(handler=run_pubkey)

    query = commands.add_parser("query", help="triage queries over the audit log")
    add_query_arguments(query)
    query.set_defaults(handler=run_query)

    scan = commands.add_parser(
        "scan", help="run the rule packs over a file or stdin (exit 1 when something is found)"
    )
    add_scan_arguments(scan)
    scan.set_defaults(handler=run_scan)

    demo = commands.add_parser(
        "demo", help="see egressguard catch a leaked key, an injection, a destructive call and a bad host"
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=run_demo)

    add_admin_commands(commands)
    drill = commands.add_parser(
        "drill",
        help="send synthetic attacks through a running proxy and check every alarm (exit 1 on a miss)",
    )
    add_drill_arguments(drill)
    drill.set_defaults(handler=run_drill)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from proxy.commands.logs import configure_logging

    configure_logging()
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
