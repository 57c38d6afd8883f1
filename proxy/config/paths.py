"""Where egressguard keeps its files when the policy does not say."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DATA_DIR_ENV = "EGRESSGUARD_DATA_DIR"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """Where a policy without ``data_dir`` keeps its CA, keys, state and audit log: ``EGRESSGUARD_DATA_DIR``,
    else ``$XDG_STATE_HOME/egressguard``, else ``~/.local/state/egressguard``. Per user and absolute, so
    it is the same directory whichever directory a command is started from."""
    chosen = _variable(environ, DATA_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    state_home = _variable(environ, "XDG_STATE_HOME")
    if state_home and Path(state_home).is_absolute():
        return Path(state_home) / "egressguard"
    home = _variable(environ, "HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "egressguard"


def _variable(environ: Mapping[str, str], name: str) -> str:
    """A variable's value, or "" when unset. Commands that need no agent token read the policy with an
    environ whose ``.get`` answers a stand-in for any name, so only what it holds is taken."""
    return environ[name] if name in environ else ""  # noqa: SIM401 - .get answers for unset names there
