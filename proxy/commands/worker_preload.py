"""What the workers are forked from has, before it forks any (``proxy.commands.workers``): what a worker
runs imported, and the detectors of an observing and an enforcing policy built once. A worker forked from
it finds the rule packs' compiled patterns and analyses in the caches it inherits
(``proxy.scanning.rulepack``, ``proxy.scanning.relaxed``) and builds its own policy's detectors from them,
where each worker, a fresh interpreter, imported and built everything again. Importing this module is the
warm-up: the fork server only imports the modules it is given."""

from __future__ import annotations

import contextlib
import gc
import tempfile
from pathlib import Path

import addons.process.server  # noqa: F401 - imported for the workers forked from here
from proxy.config.policy import load_policy
from proxy.inspection import Detectors


def warm_up() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for mode in ("observe", "enforce"):
            policy = Path(directory) / f"{mode}.yaml"
            policy.write_text(
                f"version: 1\nmode: {mode}\ndata_dir: {directory}/data\n"
                "agents: {bot: {token: warm-up-token, role: r}}\nroles: {r: {egress: {allow: [localhost]}}}\n"
            )
            Detectors(load_policy(policy), bytes(32))
    # What is built here is only read from now on: kept out of the collector's passes (the proxy's own
    # start leaves it so, ``addons.process.heap``), its pages stay shared with the workers rather than
    # each worker's collections writing to its copy of them.
    gc.collect()
    gc.freeze()


# A warm-up that fails leaves each worker to build its detectors itself, which reports what failed as a
# worker started without it does (an exception here would end the fork server, and every start with it).
with contextlib.suppress(Exception):
    warm_up()
