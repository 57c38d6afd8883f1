"""Runs mitmproxy in-process with the egressguard chain: the one place that starts a proxy."""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

import mitmproxy.addons
from mitmproxy import addonmanager, exceptions, hooks, master, options, optmanager
from mitmproxy.addons import (
    block,
    core,
    disable_h2c,
    errorcheck,
    keepserving,
    next_layer,
    proxyserver,
    readfile,
    tlsconfig,
    upstream_auth,
)
from mitmproxy.proxy import mode_servers, mode_specs

from addons import default_addons
from addons.process.config import PolicyLoader
from addons.process.speedups import install_speedups
from proxy.commands.workers import LISTEN_BACKLOG, HeldLock, Listener, Sockets
from proxy.runtime import Runtime


class StartupError(Exception):
    """The proxy could not start: a bad option or a port already in use."""


@dataclass
class HangupHook(hooks.Hook):
    """SIGHUP arrived: every addon with a ``hangup()`` method acts on it (the audit log signs a
    checkpoint) and the proxy keeps serving."""


Handler = tuple[object, Callable[..., Any] | None, bool]
"""An addon, its own handler of the hook, and whether it has sub-addons. No handler and no sub-addons:
its attribute of the hook's name cannot be called, which mitmproxy's walk reports."""


class HookIndex(addonmanager.AddonManager):
    """mitmproxy's addon manager, except that each hook's handlers are looked up once, not on every
    event: mitmproxy walks its whole chain (about fifty addons here) for each of a request's eight or so
    events, the ``update`` event no addon handles included, and that walk costs more CPU per request
    than most of the addons it calls. Handlers run in chain order, each guarded as mitmproxy guards it
    (``safecall``: an error is logged and the next handler runs; ``AddonHalt`` ends the event). An addon
    with sub-addons (a loaded script) is walked on each event as mitmproxy walks it, since a script
    reload swaps them; the index is rebuilt whenever an addon is added or removed."""

    _index: dict[str, list[Handler]]

    @classmethod
    def install(cls, manager: addonmanager.AddonManager) -> None:
        manager.__class__ = cls
        assert isinstance(manager, HookIndex)
        manager._index = {}

    def register(self, addon: Any) -> Any:
        self._index = {}
        return super().register(addon)

    def remove(self, addon: Any) -> None:
        self._index = {}
        super().remove(addon)

    def clear(self) -> None:
        self._index = {}
        super().clear()

    def _handlers(self, name: str) -> list[Handler]:
        handlers = self._index.get(name)
        if handlers is None:
            handlers = []
            for addon in self.chain:
                handler = getattr(addon, name, None)
                if callable(handler):
                    handlers.append((addon, handler, hasattr(addon, "addons")))
                elif handler is not None and not inspect.ismodule(handler):
                    handlers.append((addon, None, False))
                elif hasattr(addon, "addons"):
                    handlers.append((addon, None, True))
            self._index[name] = handlers
        return handlers

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self._handlers(event.name)
        # Read only for a handler that runs: the ``update`` after each flow event, for one, runs none.
        arguments: list[Any] | None = None
        for addon, handler, parent in handlers:
            # mitmproxy's ``safecall`` is entered only for a handler that failed, to log it as mitmproxy
            # does: entering it around every call (fifty or so a request) cost more than most handlers.
            try:
                # Sub-addons are read at each event (a script reload swaps them) and walked as mitmproxy
                # walks them; a parent that has none (the script loader without scripts) runs its own
                # handler alone, or nothing, without a walk.
                if (parent and getattr(addon, "addons", None)) or (handler is None and not parent):
                    await self.invoke_addon(addon, event)
                    continue
                if handler is None:
                    continue
                if arguments is None:
                    arguments = event.args()
                result = handler(*arguments)
                if result is not None and inspect.isawaitable(result):
                    await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as error:
                with addonmanager.safecall():
                    raise error


def serve(
    settings: dict[str, Any],
    passthrough: Sequence[str] = (),
    announce: Callable[[], None] = lambda: None,
    served: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGINT or SIGTERM. ``passthrough`` holds raw ``option=value`` mitmproxy settings;
    ``announce`` runs once every option has been accepted, before serving, so a configuration error is
    reported before the banner; ``served`` once the proxy serves."""
    asyncio.run(_serve(settings, passthrough, announce, served))


class Served:
    """Calls ``served`` at mitmproxy's ``running`` (the listeners are up), after every other addon's,
    unless one of them could not start."""

    def __init__(self, runtime: Runtime, served: Callable[[], None]) -> None:
        self.runtime = runtime
        self.served = served

    def running(self) -> None:
        if self.runtime.startup_error is None:
            self.served()


def unavailable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not an address of this host), or None."""
    if port == 0:
        return None
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
        for family, kind, protocol, _, address in found:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as error:
        return f"cannot listen on {host}:{port}: {error.strerror or error}"
    return None


MITMPROXY_ADDONS = (
    core.Core,
    block.Block,
    disable_h2c.DisableH2C,
    proxyserver.Proxyserver,
    next_layer.NextLayer,
    tlsconfig.TlsConfig,
    upstream_auth.UpstreamAuth,
)
"""The mitmproxy addons egressguard runs, in mitmproxy's order: its options, commands and option checks
(``Core``), its refusal of clients from public addresses (``Block``: ``block_global``), the proxy servers,
layers and TLS (``Proxyserver``, ``NextLayer``, ``TlsConfig``, ``DisableH2C``), and the credentials of an
upstream proxy in ``upstream:`` mode (``UpstreamAuth``); a serving proxy adds ``ErrorCheck``, which stops
one that logged an error while starting. The others are left out: those that rewrite a request after it
was inspected or answer it from elsewhere (map_local, map_remote, modify_body, modify_headers, sticky
cookies and auth, anticache, anticomp, the replays, the script loader) would be a way around inspection,
those that record traffic (save_stream_file, hardump, rfile) would keep what the audit redacts, proxy
authentication is the agents' (``AgentIdentity``), and the rest serve modes or consoles egressguard
refuses (DNS, onboarding, the browser, the console's commands). Several ran on every request."""


def left_out_options() -> dict[str, str]:
    """Each option of a mitmproxy addon that egressguard does not run, with that addon's name: a ``--set``
    of one is refused as the addon's, rather than as an option mitmproxy has no name for."""
    owners: dict[str, str] = {}
    everything = [*mitmproxy.addons.default_addons(), keepserving.KeepServing(), readfile.ReadFileStdin()]
    for addon in everything:
        if isinstance(addon, MITMPROXY_ADDONS) or not hasattr(addon, "load"):
            continue
        declared = optmanager.OptManager()
        addon.load(addonmanager.Loader(_OptionsOnly(declared)))
        owners.update(dict.fromkeys(declared.keys(), type(addon).__name__))
    return owners


@dataclass
class _OptionsOnly:
    """What an addon's ``load`` reaches of a master to declare its options."""

    options: optmanager.OptManager


def _proxy(opts: options.Options, serving: bool) -> master.Master:
    proxy = master.Master(opts, with_termlog=serving)
    proxy.addons.add(*(kind() for kind in MITMPROXY_ADDONS))
    if serving:
        # Only where it runs: its log handler, installed when it is made, is removed once serving starts.
        proxy.addons.add(errorcheck.ErrorCheck())
    return proxy


async def _serve(
    settings: dict[str, Any],
    passthrough: Sequence[str],
    announce: Callable[[], None],
    served: Callable[[], None],
) -> None:
    opts = options.Options()
    proxy = _proxy(opts, serving=True)
    HookIndex.install(proxy.addons)
    install_speedups()
    runtime = Runtime()
    proxy.addons.add(*default_addons(runtime), Served(runtime, served))
    _apply(opts, settings, passthrough)
    announce()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_about_cancelled)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, proxy.shutdown)
    loop.add_signal_handler(signal.SIGHUP, proxy.addons.trigger, HangupHook())
    await proxy.run()
    if runtime.startup_error is not None:
        raise StartupError(runtime.startup_error)


def _quiet_about_cancelled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's report of an error in a callback, but for a task's cancellation: at a stop every open
    connection's task is cancelled, and the stream server's own callback on Python 3.12.1 asks each for
    its exception, which raises the cancellation (a traceback a connection, all of it noise)."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


def check_options(settings: dict[str, Any], passthrough: Sequence[str] = ()) -> list[Listener]:
    """Raise ``StartupError`` for a bad option before any worker starts: the options are tried on a
    proxy that is built and never run, so a supervisor reports them before its banner as ``serve``
    does, rather than once per worker after it. Return where the proxy's modes listen."""
    return asyncio.run(_check_options(settings, passthrough))


async def _check_options(settings: dict[str, Any], passthrough: Sequence[str]) -> list[Listener]:
    opts = options.Options()
    proxy = _proxy(opts, serving=False)
    proxy.addons.add(PolicyLoader(Runtime()))
    _apply(opts, settings, passthrough)
    listeners = []
    for spec in opts.mode:
        mode = mode_specs.ProxyMode.parse(spec)
        port = mode.listen_port(opts.listen_port)
        assert port is not None  # the modes allowed (regular, upstream) listen on a port
        listener = Listener(
            mode.full_spec, mode.listen_host(opts.listen_host), port, mode.custom_listen_port is None
        )
        listeners.append(listener)
    return listeners


def _apply(opts: options.Options, settings: dict[str, Any], passthrough: Sequence[str]) -> None:
    unknown = {spec.partition("=")[0] for spec in passthrough} - set(opts.keys())
    if unknown:
        owners = left_out_options()
        refused = sorted(unknown & owners.keys())
        if refused:
            raise StartupError(
                f"option {refused[0]} belongs to mitmproxy's {owners[refused[0]]} addon, which egressguard "
                f"does not run (see the README's mitmproxy addons)"
            )
    try:
        opts.update(**settings)
        if passthrough:
            opts.set(*passthrough)
    except exceptions.OptionsError as error:
        raise StartupError(str(error)) from None


def serve_worker(
    settings: dict[str, Any], passthrough: Sequence[str], sockets: Sockets, serving: HeldLock, ready: Event
) -> None:
    """One of several workers sharing the listen port (``proxy.commands.workers``): it serves each proxy
    mode on the listening sockets the supervisor made for it (``sockets``), and sets ``ready`` once it
    does. ``serving`` is the data dir's lock, open in this process for its life: a supervisor started
    after this one's died waits for it."""
    _serve_on(sockets)
    _stop_with_supervisor()
    try:
        serve(settings, passthrough, served=ready.set)
    except StartupError as error:
        print(f"egressguard: {error}", file=sys.stderr)
        sys.exit(2)


def _serve_on(sockets: Sockets) -> None:
    """mitmproxy's servers bind their own sockets (``AsyncioServerInstance.listen``) and have no way to be
    given one. A worker process runs nothing but this proxy, so each of its modes serves instead on the
    sockets the supervisor bound and made listen for it before starting any worker (the kernel spreads
    connections only over sockets that listen). A mode started again (or a new one) has none left: it
    fails to listen, as a mode on a port in use does, rather than take a socket outside the workers'."""

    async def listen_on_given_sockets(
        instance: mode_servers.AsyncioServerInstance[Any], host: str, port: int
    ) -> list[Any]:
        given = sockets.pop(instance.mode.full_spec, None)
        if given is None:
            raise OSError(f"the supervisor made no listening socket for {instance.mode.full_spec}")
        return [
            await asyncio.start_server(instance.handle_stream, sock=listening, backlog=LISTEN_BACKLOG)
            for listening in given
        ]

    mode_servers.AsyncioServerInstance.listen = listen_on_given_sockets  # type: ignore[method-assign, assignment]


def _stop_with_supervisor() -> None:
    """A supervisor killed outright (SIGKILL, OOM) cannot stop its workers: each notices it is gone and
    stops itself, rather than keep serving the port unsupervised. The supervisor is the process that
    started this one (``multiprocessing.parent_process``), not whatever parent this one has by now: one
    killed while this worker started has left it another parent already, which would never go."""
    supervisor = multiprocessing.parent_process()
    assert supervisor is not None  # a worker is always started by its supervisor

    def watch() -> None:
        supervisor.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="egressguard-supervisor-watch", daemon=True).start()
