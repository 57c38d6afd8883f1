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
from proxy.admin.tokens import AdminTokens, TokenFileError, load_tokens
from proxy.commands.workers import WORKER_SOCKET
from proxy.config.policy import AdminSettings, AdminTLS, Policy, reloaded_policy
from proxy.config.yamlschema import SchemaError
from proxy.model import Mode
from proxy.runtime import Runtime, build_detectors

log = structlog.get_logger("egressguard.admin")

POLICY_RELOADED = "egressguard_policy"
"""What the ``configure`` event that follows a reload names as updated (no mitmproxy option changed)."""
SPOOL_BACKLOG = 1000
"""More alerts than this waiting for delivery and the proxy is not ready: a destination is down."""


class ListenerError(Exception):
    """The admin listener cannot serve as the policy says; the message says where and why."""


def _where(settings: AdminSettings | None) -> tuple[str, int, AdminTLS | None, tuple[str, ...]]:
    """What a listener is started with: another address, TLS or names is another listener."""
    assert settings is not None
    return settings.host, settings.port, settings.tls, settings.hosts


class Admin:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server: asyncio.Server | None = None
        self.listening: AdminSettings | None = None
        """The settings ``server`` was started with."""
        self.control: Control | None = None
        self.reloading: asyncio.Task[tuple[bool, list[str]]] | None = None

    async def running(self) -> None:
        try:
            tokens = self._tokens(self.runtime.policy)
            self.serve(self._settings(self.runtime.policy), tokens, await self._listener())
        except ListenerError as error:
            self._fail(str(error))

    def _tokens(self, policy: Policy) -> AdminTokens | None:
        """The tokens ``policy``'s listener takes, None where it has none; read before any listener is
        started or closed, so that a token file that cannot be read changes nothing. Raises
        ListenerError."""
        settings = self._settings(policy)
        if settings is None:
            return None
        try:
            return load_tokens(settings, policy.data_dir)
        except TokenFileError as error:
            raise ListenerError(str(error)) from None

    async def _listener(self, policy: Policy | None = None) -> asyncio.Server | None:
        """A listener started where ``policy``'s admin settings (the running one's by default) say, when
        none serves there yet: None when one does or none is asked for. One at another address is
        started beside the one serving, which ``serve`` then closes; one at the same address with
        another TLS or names takes its place now (the two cannot both listen there), the one serving
        put back if it cannot. Raises ListenerError."""
        settings = self._settings(policy or self.runtime.policy)
        if settings is None or (self.server is not None and _where(settings) == _where(self.listening)):
            return None
        worker_socket = ctx.options.egressguard_admin_listen.removeprefix(WORKER_SOCKET)
        if self.server is not None and ctx.options.egressguard_admin_listen.startswith(WORKER_SOCKET):
            raise ListenerError(
                "the admin listener's address, names and TLS are the supervisor's when workers serve: "
                "restart to apply them"
            )
        if self.server is not None and _where(settings)[:2] == _where(self.listening)[:2]:
            previous = self.listening
            self.done()
            try:
                return await self._start(settings, worker_socket)
            except ListenerError:
                self.server = await self._start(previous, worker_socket) if previous else None
                self.listening = previous
                raise
        return await self._start(settings, worker_socket)

    async def _start(self, settings: AdminSettings, worker_socket: str) -> asyncio.Server:
        handle = self._handle
        try:
            if worker_socket != ctx.options.egressguard_admin_listen:
                return await http.start_unix(Path(worker_socket), handle)
            tls = http.server_context(settings.tls) if settings.tls else None
            return await http.start(settings.host, settings.port, handle, tls, settings.hosts)
        except http.CertificateError as error:
            raise ListenerError(str(error)) from None
        except OSError as error:
            address = worker_socket or f"{settings.host}:{settings.port}"
            raise ListenerError(
                f"the admin listener cannot listen on {address}: {error.strerror or error}"
            ) from None

    async def _handle(self, request: http.Request) -> http.Response:
        assert self.control is not None
        return await self.control.handle(request)

    def serve(
        self, settings: AdminSettings | None, tokens: AdminTokens | None, started: asyncio.Server | None
    ) -> None:
        """The admin API as ``settings`` say, with ``tokens`` (``_tokens``), answering on ``started`` where
        it was started for them (``_listener``), the listener it replaces closed; closed where
        ``settings`` are None. A reload's tokens are the only ones taken from then on."""
        if settings is None or tokens is None:
            self.done()
            return
        if self.control is None:
            self.control = Control(
                self.runtime, self.runtime.metrics, tokens, self, [*ROUTES, *DASHBOARD_ROUTES]
            )
        self.control.tokens = tokens
        if started is None:
            return
        self.done()
        self.server, self.listening = started, settings
        log.info("admin.listening", address=f"{settings.host}:{settings.port}", tls=settings.tls is not None)

    def _fail(self, reason: str) -> None:
        self.runtime.startup_error = reason
        ctx.master.shutdown()

    def done(self) -> None:
        # Closed to new connections only: one being answered (the reload that moved it) is answered.
        if self.server is not None:
            self.server.close()
            self.server = None
            self.listening = None

    def _settings(self, policy: Policy) -> AdminSettings | None:
        override = ctx.options.egressguard_admin_listen
        configured = policy.admin
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
            tokens = self._tokens(policy)
            started = await self._listener(policy)
        except SchemaError as error:
            return self._refused(by, current, [str(problem) for problem in error.problems])
        except ListenerError as error:
            return self._refused(by, current, [str(error)])
        self.serve(self._settings(policy), tokens, started)
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

    def _refused(self, by: str, current: Policy, problems: list[str]) -> tuple[bool, list[str]]:
        self.runtime.metrics.reloads.labels(result="refused").inc()
        log.error("policy.reload_refused", by=by, problems=problems)
        self.record({"type": "policy.reload_refused", "by": by, "source": current.source, "errors": problems})
        return False, problems

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
