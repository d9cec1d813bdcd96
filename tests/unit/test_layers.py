"""The layers stated in ``aggregator/__init__.py`` hold: no module imports one above it.

``aggregator/`` (the library) never imports ``aggregator.live``, ``workers`` or ``cli``;
``workers/`` never imports ``aggregator.live`` or ``cli``; ``aggregator.live`` never imports
``cli``; shipped code never imports ``devtools``, ``tests`` or ``scripts``. Imports inside functions
count too (they would only hide a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

from devtools.agg import REPO

RULES = {
    "aggregator": ("aggregator.live", "workers", "cli"),
    "aggregator.live": ("cli",),
    "workers": ("aggregator.live", "cli"),
    "cli": (),
}
DEV_ONLY = ("devtools", "tests", "scripts")


def _package(module: str) -> str:
    return "aggregator.live" if module.startswith("aggregator.live") else module.split(".")[0]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("aggregator", "workers", "cli"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def test_no_module_imports_a_layer_above_it() -> None:
    bad = []
    modules = _modules()
    assert len(modules) > 40  # the walk found the packages
    for name, path in modules:
        forbidden = RULES[_package(name)] + DEV_ONLY
        for imported in _imports(path):
            if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                bad.append(f"{name} imports {imported}")
    assert bad == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The walk would notice a library module importing the live layer."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from aggregator.live.watcher import Watcher\n")
    assert _imports(f) == ["aggregator.live.watcher"]
    assert any("aggregator.live.watcher".startswith(x) for x in RULES["aggregator"])
