"""``agg --help`` starts without the heavy libraries, and the lazy command table says what the
commands say.

The commands load lazily (``cli/main.py``'s ``COMMANDS``): ``agg --help`` lists them from the
table, so these tests check that the table points at each command and carries its help, and that
the help a user sees is what the loaded commands would print. No timing here: the figures come from
``scripts/bench/cli.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli.main import COMMANDS, cli
from devtools.agg import REPO
from tests.support.cli import imported

HEAVY = (
    "redis",
    "rq",
    "asyncio",
    "starlette",
    "uvicorn",
    "sse_starlette",
    "watchfiles",
    "mcp",
    "sqlite3",
    "psutil",
    "markdown_it",
    "platformdirs",
    "orjson",
    "aggregator.store",
    "aggregator.connection",
    "aggregator.live",
    "workers",
)
"""Modules (and their submodules) ``agg --help`` must not import."""


def heavy_in(modules: set[str]) -> list[str]:
    """The modules of :data:`HEAVY` among ``modules``."""
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_none_of_the_heavy_modules() -> None:
    proc, modules = imported(["--help"])
    assert proc.returncode == 0 and "Commands:" in proc.stdout
    assert "click" in modules  # the check sees what was imported
    assert heavy_in(modules) == []
    assert not any(m.startswith("cli.") and m not in ("cli.main", "cli.app") for m in modules), sorted(modules)


def test_the_check_sees_a_heavy_import() -> None:
    """The same probe on a command whose module does import some (the check can fail)."""
    proc, modules = imported(["serve", "--help"])
    assert proc.returncode == 0 and "cli.web" in modules
    assert "aggregator.live" in heavy_in(modules)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_points_at_each_command_and_carries_its_help(name: str) -> None:
    target, text = COMMANDS[name]
    module, _, attr = target.partition(":")
    cmd = getattr(__import__(module, fromlist=[attr]), attr)
    assert isinstance(cmd, click.Command) and cmd.name == name
    assert not cmd.hidden and not cmd.deprecated and not cmd.short_help  # the listing would differ
    assert " ".join((cmd.help or "").partition("\n\n")[0].split()) == text


def _help(columns: int, load_all: bool) -> str:
    code = (
        "import sys\n"
        "from cli.main import cli\n"
        "import click\n"
        f"if {load_all}:\n"
        "    ctx = click.Context(cli)\n"
        "    for n in cli.list_commands(ctx): cli.get_command(ctx, n)\n"
        "cli.main(['--help'], prog_name='agg')\n"
    )
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("columns", [50, 80, 200])
def test_help_lists_the_commands_as_the_loaded_commands_would(columns: int) -> None:
    lazy, loaded = _help(columns, load_all=False), _help(columns, load_all=True)
    assert lazy == loaded
    assert all(f"  {name} " in lazy for name in COMMANDS)


def test_every_command_is_in_the_table() -> None:
    """A command added to the group by hand would be listed, but not lazily: keep the table whole."""
    assert set(cli.commands) <= set(COMMANDS)
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1].split()
    assert set(COMMANDS) <= set(listed)
