"""Loads the policy named by the ``egressguard_config`` option and shares it with the other addons."""

from __future__ import annotations

from collections.abc import Sequence, Set
from pathlib import Path

import structlog
from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from proxy.commands.workers import WORKER_OPTION
from proxy.config.policy import load_policy
from proxy.config.yamlschema import SchemaError
from proxy.model import Mode
from proxy.runtime import Runtime

log = structlog.get_logger("egressguard")


class PolicyLoader:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loaded_from: str | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "egressguard_config",
            str,
            "",
            "Path of the egressguard policy YAML; empty for the embedded default policy.",
        )
        loader.add_option(
            "egressguard_mode",
            str,
            "",
            "Override the policy's mode for every threat: observe or enforce; empty keeps the policy's.",
        )
        loader.add_option(
            WORKER_OPTION,
            str,
            "",
            "This process's writer id when it is one of several workers (set by `run --workers`); empty "
            "for a single process.",
        )
        # Declared here with the other egressguard options: an option added by a later addon would
        # configure the chain before the policy is loaded.
        loader.add_option(
            "egressguard_admin_listen",
            str,
            "",
            "host:port of the admin listener, overriding the policy's admin.listen; 'off' for none.",
        )
        loader.add_option(
            "egressguard_admin_port",
            int,
            0,
            "The host's admin listener port, which egress refuses as a destination (a worker's own "
            "egressguard_admin_listen is a Unix socket); 0 for none.",
        )

    def running(self) -> None:
        """A worker says it listens (its listener is up before this hook runs)."""
        if self.runtime.writer:
            log.info("worker.ready", writer=self.runtime.writer)

    def configure(self, updated: Set[str]) -> None:
        if "mode" in updated:
            refuse_unauthenticated_modes(ctx.options.mode)
        if WORKER_OPTION in updated:
            self.runtime.writer = getattr(ctx.options, WORKER_OPTION)
        if not {"egressguard_config", "egressguard_mode"} & updated and self.runtime.policy_or_none:
            return
        config = ctx.options.egressguard_config
        if not config and self.loaded_from:
            # mitmproxy rolls every option back to its previous value when another addon rejects a
            # change (a bad --set, an audit directory that cannot be opened); back to "" would swap the
            # operator's policy for the embedded one. The policy file in force stays until a restart.
            return
        try:
            policy = load_policy(Path(config) if config else None)
        except SchemaError as error:
            raise exceptions.OptionsError(f"invalid egressguard policy:\n{error}") from None
        mode = ctx.options.egressguard_mode
        if mode:
            if mode not in tuple(Mode):
                raise exceptions.OptionsError(f"egressguard_mode must be observe or enforce, not {mode!r}")
            policy = policy.with_mode(Mode(mode))
        self.runtime.policy_or_none = policy
        self.loaded_from = config


AUTHENTICATED_MODES = ("regular", "upstream:")
"""Proxy modes in which every client must present an agent's credentials. The others (socks5, reverse,
transparent, wireguard, local, dns, ...) have no HTTP proxy authentication to check, and some relay raw TCP
that no hook inspects: egressguard would be an open relay there."""


def refuse_unauthenticated_modes(modes: Sequence[str]) -> None:
    for spec in modes:
        if not spec.startswith(AUTHENTICATED_MODES):
            raise exceptions.OptionsError(
                f"egressguard runs as a regular (or upstream-chained) HTTP proxy only; mode {spec!r} "
                f"would let clients in without agent credentials"
            )
