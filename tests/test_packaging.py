"""What a non-editable install ships."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_python_package_is_listed_for_installation() -> None:
    """Every package under proxy/ and addons/ is in pyproject's package list, so `pip install .` ships it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("proxy", "addons")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"not installed: {sorted(on_disk - listed)}"


def test_rule_packs_ship_as_package_data() -> None:
    """Every YAML and JSON file in rules/ matches the package-data globs of egressguard_rules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["egressguard_rules"]
    data = [path for path in (ROOT / "rules").iterdir() if path.suffix in (".yaml", ".json")]
    assert data and all(any(path.match(glob) for glob in globs) for path in data)


def test_the_dashboard_ships_as_package_data() -> None:
    """The dashboard's page, script and style match the package-data globs of proxy.admin."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    static = ROOT / "proxy" / "admin" / "static"
    assets = [path.relative_to(static.parent) for path in static.iterdir()]
    assert len(assets) == 3 and all(any(path.match(glob) for glob in globs["proxy.admin"]) for path in assets)
