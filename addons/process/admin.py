"""The admin listener and policy reload: starts the admin API once the proxy runs, reloads the policy
on SIGHUP or ``POST /api/v1/reload``, and stops the listener at shutdown.

The routes live in ``proxy.admin.api``; this addon gives them what only the running proxy has: the
mitmproxy master to reconfigure the chain after a reload, the audit log, the listener itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import structlog
from mitmproxy import ctx, hooks

from proxy.admin import http
from proxy.admin.api import ROUTES, Control
from proxy.admin.dashboard import DASHBOARD_ROUTES
from proxy.admin.tokens import load_tokens
from proxy.commands.workers import WORKER_SOCKET
from proxy.config.policy import AdminSettings, reloaded_policy
from proxy.config.yamlschema import SchemaError
from proxy.model import Mode
from proxy.runtime import Runtime, build_detectors

log = structlog.get_logger("egressguard.admin")

POLICY_RELOADED = "egressguard_policy"
"""What the ``configure`` event that follows a reload names as updated (no mitmproxy option changed)."""
SPOOL_BACKLOG = 1000
"""More alerts than this waiting for delivery and the proxy is not ready: a destination is down."""


class Admin:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server: asyncio.Server | None = None
        self.control: Control | None = None
        self.reloading: asyncio.Task[tuple[bool, list[str]]] | None = None

    async def running(self) -> None:
        settings = self._settings()
        if settings is None:
            return
        policy = self.runtime.policy
        self.control = Control(
            self.runtime,
            self.runtime.metrics,
            load_tokens(settings, policy.data_dir),
            self,
            [*ROUTES, *DASHBOARD_ROUTES],
        )
        # One of several workers serves its API on the socket the supervisor's listener reaches it by.
        socket = ctx.options.egressguard_admin_listen.removeprefix(WORKER_SOCKET)
        try:
            if ctx.options.egressguard_admin_listen.startswith(WORKER_SOCKET):
                self.server = await http.start_unix(Path(socket), self.control.handle)
            else:
                tls = http.server_context(settings.tls) if settings.tls else None
                self.server = await http.start(settings.host, settings.port, self.control.handle, tls)
        except http.CertificateError as error:
            self._fail(str(error))
            return
        except OSError as error:
            address = socket or f"{settings.host}:{settings.port}"
            self._fail(f"the admin listener cannot listen on {address}: {error.strerror or error}")
            return
        log.info("admin.listening", address=f"{settings.host}:{settings.port}", tls=settings.tls is not None)

    def _fail(self, reason: str) -> None:
        self.runtime.startup_error = reason
        ctx.master.shutdown()

    def done(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def _settings(self) -> AdminSettings | None:
        override = ctx.options.egressguard_admin_listen
        configured = self.runtime.policy.admin
        if override == "off":
            return None
        if not override:
            return configured
        if override.startswith(WORKER_SOCKET):
            return configured or AdminSettings()
        host, _, port = override.rpartition(":")
        return dataclasses.replace(configured or AdminSettings(), host=host.strip("[]"), port=int(port))

    def hangup(self) -> None:
        """SIGHUP (after the audit log has signed a checkpoint, earlier in the chain): reload."""
        self.reloading = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))

    # -- what the routes need ---------------------------------------------------------------------------

    async def reload(self, by: str) -> tuple[bool, list[str]]:
        config = ctx.options.egressguard_config
        mode = ctx.options.egressguard_mode
        current = self.runtime.policy
        try:
            policy = await asyncio.to_thread(
                reloaded_policy, current, Path(config) if config else None, Mode(mode) if mode else None
            )
            detectors = await asyncio.to_thread(build_detectors, policy)
        except SchemaError as error:
            problems = [str(problem) for problem in error.problems]
            self.runtime.metrics.reloads.labels(result="refused").inc()
            log.error("policy.reload_refused", by=by, problems=problems)
            self.record(
                {"type": "policy.reload_refused", "by": by, "source": current.source, "errors": problems}
            )
            return False, problems
        self.runtime.install(policy, detectors)
        ctx.master.addons.trigger(hooks.ConfigureHook({POLICY_RELOADED}))
        self.runtime.metrics.reloads.labels(result="loaded").inc()
        self.runtime.metrics.policy_loaded.set_to_current_time()
        log.info("policy.reloaded", by=by, sha256=policy.sha256, source=policy.source)
        self.record(
            {
                "type": "policy.reloaded",
                "by": by,
                "source": policy.source,
                "sha256": policy.sha256,
                "previous_sha256": current.sha256,
            }
        )
        return True, []

    def record(self, event: dict[str, Any]) -> None:
        sink = self.runtime.audit_log
        if sink is None:
            log.error("admin.not_audited", type=event.get("type"))
            return
        try:
            sink.append(event)
        except Exception as error:
            log.error(
                "admin.audit_failed", type=event.get("type"), error=f"{type(error).__name__}: {error}"[:300]
            )

    def readiness(self) -> dict[str, str | None]:
        checks: dict[str, str | None] = {
            "policy": None if self.runtime.policy_or_none is not None else "not loaded"
        }
        sink = self.runtime.audit_log
        checks["audit"] = (
            "not open"
            if sink is None
            else None
            if sink.available
            else f"not writable ({sink.buffered} buffered)"
        )
        try:
            self.runtime.state.get("readiness.probe")
            checks["state"] = None
        except Exception as error:
            checks["state"] = f"{type(error).__name__}: {error}"[:200]
        router = self.runtime.alert_router
        pending = router.pending if router is not None else 0
        checks["alert_spool"] = None if pending <= SPOOL_BACKLOG else f"{pending} alerts waiting for delivery"
        return checks
