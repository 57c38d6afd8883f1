"""Key and token files found readable by other users when egressguard starts (copied in with a loose mode,
restored from a backup) are made the proxy user's alone, with a warning to replace them; one owned by
another user, which it cannot make private, stops the start."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy, free_port
from tests.upstream import FakeUpstream

SECRET_FILES = (
    "admin.token",
    "admin-read.token",
    "fingerprint.key",
    "audit/audit-signing.key",
    "ca/mitmproxy-ca.pem",
    "ca/mitmproxy-ca.p12",
)


def wait_for(path: Path, timeout: float = 15.0) -> None:
    """The admin tokens are written once the admin listener starts, a little after the proxy's banner."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_readable_by_others_are_made_private_before_use(
    tmp_path: Path, upstream_pki: UpstreamPKI, upstream: FakeUpstream
) -> None:
    proxy = Proxy(tmp_path, upstream_pki.ca_cert, extra=f'admin: {{listen: "127.0.0.1:{free_port()}"}}\n')
    try:
        wait_for(proxy.data_dir / "admin-read.token")
        for name in SECRET_FILES:
            (proxy.data_dir / name).chmod(0o644)
        (proxy.data_dir / "audit/audit-signing.key").chmod(0o640)
        proxy.restart()
        modes = {name: mode(proxy.data_dir / name) for name in SECRET_FILES}
        assert modes == dict.fromkeys(SECRET_FILES, 0o600)
        output = proxy.output()
        for name in SECRET_FILES:
            assert f"warning: {proxy.data_dir / name} was readable by other users" in output
        with proxy.openai_client(upstream.url) as client:
            answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    finally:
        proxy.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_readable_secret_file_of_another_user_stops_the_start(
    tmp_path: Path, upstream_pki: UpstreamPKI
) -> None:
    proxy = Proxy(tmp_path, upstream_pki.ca_cert)
    key = proxy.data_dir / "audit/audit-signing.key"
    os.chown(key, 65534, 65534)
    key.chmod(0o644)
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            proxy.restart()
        refusal = f"egressguard: {key} is readable by other users (mode 644) and owned by another user"
        assert refusal in proxy.output()
        assert mode(key) == 0o644
    finally:
        proxy.stop()
