"""The admin listener over HTTPS (``admin.tls``): served on one worker and on several, by the CLI that
trusts the listener's own certificate, and a certificate that cannot be used stops the start."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.commands.localca import UpstreamPKI, make_pki
from proxy.config.policy import parse_policy
from proxy.config.yamlschema import SchemaError
from tests.harness import Proxy, free_port
from tests.test_admin import Admin, _wait_for_port, admin_policy


def tls_policy(port: int, pki: UpstreamPKI) -> str:
    return textwrap.dedent(f"""\
        admin:
          listen: "127.0.0.1:{port}"
          tls: {{cert_file: "{pki.server_cert}", key_file: "{pki.server_key}"}}
        """)


def trusting(pki: UpstreamPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca_cert)


@pytest.fixture
def admin_pki(tmp_path: Path) -> UpstreamPKI:
    """A certificate for 127.0.0.1, signed by a CA of its own that nothing trusts by default."""
    return make_pki(tmp_path / "admin-pki")


def start_tls_admin(start_proxy: Callable[..., Proxy], pki: UpstreamPKI, *args: str) -> Admin:
    port = free_port()
    proxy = start_proxy(extra=tls_policy(port, pki), args=args)
    _wait_for_port(port, tls=trusting(pki))
    admin = Admin(proxy, port)
    admin.url = f"https://127.0.0.1:{port}"
    return admin


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_admin_api_is_served_over_https_only(
    start_proxy: Callable[..., Proxy], admin_pki: UpstreamPKI, workers: str
) -> None:
    """With the listener's CA trusted the API answers over HTTPS, tokens as ever; a client that does not
    trust it cannot connect, and a plain-HTTP request gets no answer in clear text."""
    admin = start_tls_admin(start_proxy, admin_pki, "--workers", workers)
    client = httpx.Client(verify=trusting(admin_pki), trust_env=False, timeout=30)
    assert client.get(f"{admin.url}/healthz").json()["status"] == "alive"
    status = client.get(f"{admin.url}/api/v1/status", headers={"Authorization": f"Bearer {admin.read}"})
    assert status.status_code == 200 and status.json()["version"]
    assert client.get(f"{admin.url}/api/v1/status").status_code == 401
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{admin.url}/healthz", trust_env=False, timeout=30)
    with pytest.raises(httpx.HTTPError):
        httpx.get(admin.url.replace("https://", "http://") + "/healthz", trust_env=False, timeout=30)


def test_the_cli_reaches_an_https_admin_api_with_the_policy_alone(
    start_proxy: Callable[..., Proxy], admin_pki: UpstreamPKI
) -> None:
    """On the proxy's host the CLI needs only the policy: it trusts the certificate ``admin.tls`` names.
    Elsewhere ``--admin-ca`` (or ``EGRESSGUARD_ADMIN_CA``) names what to trust."""
    admin = start_tls_admin(start_proxy, admin_pki)
    assert admin.cli("freezes", "list").returncode == 0
    elsewhere = admin.proxy.workdir / "elsewhere.yaml"
    elsewhere.write_text(f"data_dir: {admin.proxy.workdir / 'other-data'}\n")

    def list_freezes(*flags: str, **env: str) -> subprocess.CompletedProcess[str]:
        # The token as an argument of its own: no token starts with "-", which argparse would take for a flag.
        command = ["freezes", "list", "--config", str(elsewhere), "--admin", admin.url, "--token", admin.read]
        return subprocess.run(
            [sys.executable, "-m", "proxy", *command, *flags],
            capture_output=True, text=True, timeout=60, check=False, env={**os.environ, **env},
        )  # fmt: skip

    untrusted = list_freezes()
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert list_freezes("--admin-ca", str(admin_pki.ca_cert)).returncode == 0
    assert list_freezes(EGRESSGUARD_ADMIN_CA=str(admin_pki.ca_cert)).returncode == 0


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("broken", ["missing", "mismatched", "encrypted"])
def test_a_certificate_that_cannot_be_used_stops_the_start_with_exit_2(
    tmp_path: Path, admin_pki: UpstreamPKI, broken: str, workers: str
) -> None:
    """Named with both its files and why, before anything listens; an encrypted key is refused, never
    asked for on a terminal."""
    key = {
        "missing": tmp_path / "absent.pem",
        "mismatched": make_pki(tmp_path / "other").server_key,
        "encrypted": _encrypted_copy(admin_pki.server_key, tmp_path / "encrypted.pem"),
    }[broken]
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"admin: {{listen: '127.0.0.1:{free_port()}', tls: {{cert_file: '{admin_pki.server_cert}', "
        f"key_file: '{key}'}}}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(policy), "--listen-port", str(free_port()),
         "--workers", workers],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"certificate {admin_pki.server_cert} and key {key} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr


def _encrypted_copy(key: Path, to: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    to.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return to


@pytest.mark.parametrize(
    "tls, problem",
    [
        ("{cert_file: a.pem}", "key_file"),
        ("{key_file: a.pem}", "cert_file"),
        ("{cert_file: a.pem, key_file: b.pem, ca: c.pem}", "ca"),
    ],
)
def test_an_incomplete_tls_section_is_a_policy_error_at_its_line(tls: str, problem: str) -> None:
    source = f"agents: {{}}\nadmin:\n  listen: 127.0.0.1:9090\n  tls: {tls}\n"
    with pytest.raises(SchemaError) as raised:
        parse_policy(source, "p.yaml", environ={})
    (found,) = raised.value.problems
    assert found.line == 4 and problem in found.message


def test_a_tls_section_gives_an_https_address() -> None:
    source = "agents: {}\nadmin: {listen: '[::1]:9443', tls: {cert_file: c.pem, key_file: k.pem}}\n"
    admin = parse_policy(source, "p.yaml", environ={}).admin
    assert admin is not None and admin.tls is not None
    assert (admin.url, admin.tls.cert_file, admin.tls.key_file) == (
        "https://[::1]:9443",
        Path("c.pem"),
        Path("k.pem"),
    )


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_a_key_others_may_read_is_warned_of(
    start_proxy: Callable[..., Proxy], admin_pki: UpstreamPKI, mode: int
) -> None:
    admin_pki.server_key.chmod(mode)
    admin = start_tls_admin(start_proxy, admin_pki)
    warned = f"key {admin_pki.server_key} is readable by other users (mode {mode:o})" in admin.proxy.output()
    assert warned is (mode == 0o644)


def test_a_reload_puts_the_listener_behind_tls_on_its_port(
    start_proxy: Callable[..., Proxy], admin_pki: UpstreamPKI
) -> None:
    """``admin.tls`` added on reload, the address kept: the API is served over HTTPS there from then on and
    no longer in clear text; a certificate that cannot be used is refused with the files named, and the
    listener stays as it was."""
    port = free_port()
    proxy = start_proxy(extra=admin_policy(port))
    _wait_for_port(port)
    admin = Admin(proxy, port)
    broken = proxy.workdir / "broken.pem"
    broken.write_text("not a certificate\n")
    proxy.policy_path.write_text(
        proxy.policy_path.read_text().replace(
            admin_policy(port), tls_policy(port, admin_pki).replace(str(admin_pki.server_cert), str(broken))
        )
    )
    refused = admin.post("/api/v1/reload", {}, admin.full)
    assert refused.status_code == 422 and str(broken) in " ".join(refused.json()["errors"])
    assert admin.get("/api/v1/status", admin.read).status_code == 200
    proxy.policy_path.write_text(
        proxy.policy_path.read_text().replace(str(broken), str(admin_pki.server_cert))
    )
    assert admin.post("/api/v1/reload", {}, admin.full).json()["reloaded"] is True
    with pytest.raises(httpx.HTTPError):
        admin.get("/healthz")
    client = httpx.Client(verify=trusting(admin_pki), trust_env=False, timeout=30)
    answer = client.get(
        f"https://127.0.0.1:{port}/api/v1/status", headers={"Authorization": f"Bearer {admin.read}"}
    )
    assert answer.status_code == 200
