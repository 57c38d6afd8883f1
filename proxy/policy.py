"""The policy: one YAML file that says who may talk to what, what to watch and what to enforce.

Loading checks the whole file and reports every problem with its line (``egressguard check``); a
policy that loads is immutable and safe to share between addons.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from proxy.egress import DEFAULT_ROLE, EgressRules, HostPattern
from proxy.model import Mode, Threat
from proxy.yamlschema import (
    BOOLEAN,
    INTEGER,
    STRING,
    Custom,
    ListOf,
    MapOf,
    OneOf,
    Problem,
    Record,
    SchemaError,
    check_document,
)

DEFAULT_POLICY_NAME = "default-policy.yaml"
CONTEXT_FIELDS = ("user_id", "session_id", "purpose", "consent_id", "approval_id")
DEFAULT_CONTEXT_HEADERS = {
    "user_id": "X-User-Id",
    "session_id": "X-Session-Id",
    "purpose": "X-Purpose",
    "consent_id": "X-Consent-Id",
    "approval_id": "X-Approval-Id",
}
MODES = tuple(str(mode) for mode in Mode)


_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def _byte_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (like 8MiB, 512KiB or 1048576)")
    exponent = " kmg".index(match[2].lower() or " ")
    return int(match[1]) << (10 * exponent)


def _host_pattern(text: str) -> str:
    HostPattern.parse(text)
    return text


HOST_PATTERNS = ListOf(Custom(_host_pattern, "a host pattern"))
AGENT = Record({"token_env": STRING, "token": STRING, "role": STRING})
ROLE = Record(
    {
        "egress": Record({"allow": HOST_PATTERNS, "deny": HOST_PATTERNS}),
    }
)
SCHEMA = Record(
    {
        "version": INTEGER,
        "mode": OneOf(*MODES),
        "threats": Record({str(threat): OneOf(*MODES) for threat in Threat}),
        "data_dir": STRING,
        "agents": MapOf(AGENT),
        "roles": MapOf(ROLE),
        "identity": Record({"headers": Record({name: STRING for name in CONTEXT_FIELDS})}),
        "audit": Record({"path": STRING, "fsync": BOOLEAN}),
        "inspection": Record({"max_body_bytes": Custom(_byte_size, "a size")}),
    }
)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    role: str
    token: str = field(repr=False)
    token_env: str | None = None


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    egress: EgressRules = field(default_factory=lambda: EgressRules(allow=()))


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    mode: Mode
    threat_modes: dict[Threat, Mode]
    data_dir: Path
    agents: dict[str, Agent]
    roles: dict[str, Role]
    context_headers: dict[str, str]
    audit_path: Path
    audit_fsync: bool
    max_body_bytes: int
    warnings: tuple[Problem, ...] = ()

    def mode_for(self, threat: Threat) -> Mode:
        return self.threat_modes.get(threat, self.mode)

    def enforces(self, threat: Threat) -> bool:
        return self.mode_for(threat) is Mode.ENFORCE

    def with_mode(self, mode: Mode) -> Policy:
        """The same policy with every threat switched to ``mode`` (the CLI's ``--mode``)."""
        return Policy(
            source=self.source,
            mode=mode,
            threat_modes={},
            data_dir=self.data_dir,
            agents=self.agents,
            roles=self.roles,
            context_headers=self.context_headers,
            audit_path=self.audit_path,
            audit_fsync=self.audit_fsync,
            max_body_bytes=self.max_body_bytes,
            warnings=self.warnings,
        )


def default_policy_text() -> str:
    return resources.files("egressguard_rules").joinpath(DEFAULT_POLICY_NAME).read_text(encoding="utf-8")


def load_policy(path: Path | None, *, environ: dict[str, str] | None = None) -> Policy:
    """Load and check a policy file, or the embedded default when ``path`` is None.

    Raises SchemaError listing every problem with its line.
    """
    if path is None:
        return parse_policy(default_policy_text(), f"<embedded {DEFAULT_POLICY_NAME}>", environ=environ)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError([Problem(str(path), 0, f"cannot read: {error}")]) from None
    return parse_policy(text, str(path), environ=environ)


def parse_policy(text: str, source: str, *, environ: dict[str, str] | None = None) -> Policy:
    env = dict(os.environ) if environ is None else environ
    raw, problems = check_document(text, source, SCHEMA)
    warnings: list[Problem] = []

    roles = {name: _role(name, spec or {}) for name, spec in (raw.get("roles") or {}).items()}

    agents: dict[str, Agent] = {}
    for name, spec in (raw.get("agents") or {}).items():
        if spec is None:
            continue
        line = spec["__line__"]
        token = _agent_token(name, spec, env, source, line, problems, warnings)
        role = spec.get("role") or DEFAULT_ROLE
        if role not in roles:
            problems.append(
                Problem(source, line, f"agent {name!r} names role {role!r}, which is not defined under roles")
            )
        if ":" in name:
            problems.append(Problem(source, line, f"agent name {name!r} cannot contain ':'"))
        if token is not None:
            agents[name] = Agent(name=name, role=role, token=token, token_env=spec.get("token_env"))

    if problems:
        raise SchemaError(problems)

    data_dir = Path(raw.get("data_dir") or "./egressguard-data")
    audit = raw.get("audit") or {}
    headers = {**DEFAULT_CONTEXT_HEADERS, **_without_line((raw.get("identity") or {}).get("headers") or {})}
    return Policy(
        source=source,
        mode=Mode(raw.get("mode") or Mode.OBSERVE),
        threat_modes={
            Threat(name): Mode(mode) for name, mode in _without_line(raw.get("threats") or {}).items()
        },
        data_dir=data_dir,
        agents=agents,
        roles=roles,
        context_headers=headers,
        audit_path=Path(audit["path"]) if audit.get("path") else data_dir / "audit",
        audit_fsync=bool(audit.get("fsync", False)),
        max_body_bytes=(raw.get("inspection") or {}).get("max_body_bytes") or 8 * 1024 * 1024,
        warnings=tuple(warnings),
    )


def _role(name: str, spec: dict[str, Any]) -> Role:
    egress = spec.get("egress") or {}
    allow = [entry for entry in egress.get("allow") or () if entry is not None]
    deny = [entry for entry in egress.get("deny") or () if entry is not None]
    return Role(name=name, egress=EgressRules(allow=allow, deny=deny))


def _agent_token(
    name: str,
    spec: dict[str, Any],
    env: dict[str, str],
    source: str,
    line: int,
    problems: list[Problem],
    warnings: list[Problem],
) -> str | None:
    if spec.get("token_env") and spec.get("token"):
        problems.append(Problem(source, line, f"agent {name!r} has both token_env and token; keep one"))
        return None
    if spec.get("token"):
        warnings.append(
            Problem(
                source,
                line,
                f"agent {name!r} has a literal token in the policy; "
                f"prefer token_env so the file holds no secret",
            )
        )
        return str(spec["token"])
    variable = spec.get("token_env")
    if not variable:
        problems.append(Problem(source, line, f"agent {name!r} needs token_env (or token)"))
        return None
    token = env.get(variable)
    if not token:
        problems.append(
            Problem(source, line, f"agent {name!r}: environment variable {variable} is not set or empty")
        )
        return None
    return token


def _without_line(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key != "__line__" and value is not None}
