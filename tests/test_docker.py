"""The container image and the sidecar compose file, checked without a Docker engine: every referenced
path exists, the agent's only network is internal, and no key reaches the agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.commands.agentenv import CA_VARIABLES, proxy_variables
from proxy.config.policy import load_policy

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def volume_parts(entry: str) -> tuple[str, str, str]:
    source, target, *mode = entry.split(":")
    return source, target, mode[0] if mode else "rw"


def test_build_contexts_and_dockerfile_exist(compose: dict[str, Any]) -> None:
    """Every service built here names a context and a Dockerfile that exist."""
    for service in compose["services"].values():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT
            assert (context / service["build"]["dockerfile"]).is_file()


def test_dockerfile_copies_only_paths_that_exist() -> None:
    """Each COPY source is in the repository, and the installed package's sources are all copied."""
    copied: set[str] = set()
    for instruction, argument in dockerfile_instructions():
        if instruction == "COPY":
            *sources, _ = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                copied.add(source)
    assert {"pyproject.toml", "README.md", "proxy", "addons", "rules"} <= copied


def test_image_has_a_healthcheck_and_advertises_the_service_name() -> None:
    """The image checks its own liveness and its banner names the address agents dial, not 0.0.0.0."""
    instructions = dict(dockerfile_instructions())
    assert "http://127.0.0.1:9090/healthz" in instructions["HEALTHCHECK"]
    assert "EGRESSGUARD_ADVERTISE=egressguard:8080" in instructions["ENV"]
    assert instructions["USER"] == "egressguard"


def test_bind_mounts_and_named_volumes_exist(compose: dict[str, Any]) -> None:
    """Bind-mounted files exist next to the compose file; named volumes are declared."""
    for service in compose["services"].values():
        for entry in service.get("volumes", []):
            source, _, _ = volume_parts(entry)
            if source.startswith("."):
                assert (DOCKER / source).exists(), source
            else:
                assert source in compose["volumes"], source


def test_agent_has_no_route_but_the_proxy(compose: dict[str, Any]) -> None:
    """The agent is only on internal networks, publishes nothing, and egressguard is on that network
    and one with a way out."""
    services, networks = compose["services"], compose["networks"]
    agent = services["agent"]
    assert agent["networks"] and all(networks[name].get("internal") is True for name in agent["networks"])
    assert "ports" not in agent and "network_mode" not in agent
    guard_networks = set(services["egressguard"]["networks"])
    assert set(agent["networks"]) <= guard_networks
    assert any(not networks[name].get("internal") for name in guard_networks)
    for name, service in services.items():
        if name not in ("agent", "egressguard"):
            assert service.get("network_mode") == "none" or not service.get("networks"), name


def test_agent_proxy_variables_name_the_sidecar(compose: dict[str, Any]) -> None:
    """The agent sets what the banner prints: the proxy variables in both spellings go to the egressguard
    service, NO_PROXY is empty, the CA variables point at the mounted certificate."""
    environment = compose["services"]["agent"]["environment"]
    for name, value in proxy_variables("http://support-bot:${SUPPORT_BOT_TOKEN}@egressguard:8080").items():
        assert environment[name] == value, name
    _, target, _ = volume_parts(compose["services"]["agent"]["volumes"][0])
    for name in CA_VARIABLES:
        assert environment[name].startswith(target + "/")


def test_no_key_is_mounted_into_the_agent(compose: dict[str, Any]) -> None:
    """The agent mounts the exported certificate's volume alone, read-only; the data volume holding the CA
    key, the audit signing key and the fingerprint key is mounted only where egressguard runs."""
    services = compose["services"]
    data_volume = next(
        volume_parts(entry)[0]
        for entry in services["egressguard"]["volumes"]
        if volume_parts(entry)[1] == "/var/lib/egressguard"
    )
    agent_volumes = [volume_parts(entry) for entry in services["agent"]["volumes"]]
    assert [source for source, _, _ in agent_volumes] == ["egressguard-ca"]
    assert all(mode == "ro" for _, _, mode in agent_volumes)
    export = services["ca-export"]
    exporter_volumes = {volume_parts(entry)[0]: volume_parts(entry)[1] for entry in export["volumes"]}
    assert data_volume in exporter_volumes and "egressguard-ca" in exporter_volumes
    out = export["entrypoint"][export["entrypoint"].index("--out") + 1]
    assert out.startswith(exporter_volumes["egressguard-ca"] + "/")
    assert "--bundle" not in export["entrypoint"]


def test_compose_policy_checks_and_keeps_data_on_the_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy the compose file mounts is valid and keeps its data (keys, audit) on the data volume."""
    monkeypatch.setenv("SUPPORT_BOT_TOKEN", "t")
    policy = load_policy(DOCKER / "policy.yaml")
    assert policy.data_dir == Path("/var/lib/egressguard")
    assert policy.admin is not None and (policy.admin.host, policy.admin.port) == ("127.0.0.1", 9090)
    assert policy.audit_path.is_relative_to(policy.data_dir)


def test_dockerignore_keeps_keys_and_history_out() -> None:
    """The build context never carries a data dir (keys, audit) or the git history."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", "egressguard-data/", "**/egressguard-data/"} <= ignored


def test_replicas_policy_answers_the_health_check_and_shares_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replica's policy serves the admin listener the image's health check asks (the balancer starts
    only once both replicas are healthy) and keeps its state in the compose file's Redis, with the password
    the compose file passes."""
    monkeypatch.setenv("SUPPORT_BOT_TOKEN", "t")
    monkeypatch.setenv("REDIS_PASSWORD", "p")
    policy = load_policy(DOCKER / "policy-replicas.yaml")
    assert policy.admin is not None and (policy.admin.host, policy.admin.port) == ("127.0.0.1", 9090)
    assert policy.state.redis is not None and policy.state.redis.password == "p"
    replicas = yaml.safe_load((DOCKER / "replicas.yaml").read_text())
    for name in ("egressguard-1", "egressguard-2"):
        service = replicas["services"][name]
        assert "./policy-replicas.yaml:/etc/egressguard/policy.yaml:ro" in service["volumes"]
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert replicas["services"]["balancer"]["depends_on"][name] == {"condition": "service_healthy"}


COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose (the client) is not installed")
@pytest.mark.parametrize("name", ["compose.yaml", "replicas.yaml"])
def test_compose_files_validate(name: str) -> None:
    """`docker-compose config` (the client alone, no engine) accepts each compose file."""
    result = subprocess.run(
        [str(COMPOSE), "-f", str(DOCKER / name), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        env={"SUPPORT_BOT_TOKEN": "t", "REDIS_PASSWORD": "p", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
