"""Checks on what the real ``agg`` command printed."""

from __future__ import annotations

import json
import subprocess
import sys

from devtools.agg import REPO


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    """``proc`` exited ``code`` with exactly one ``agg: …`` line on stderr holding ``needle``."""
    assert proc.returncode == code, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agg: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


_IMPORTED = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
    "sys.argv = ['agg', *sys.argv[1:]]\n"
    "from cli.main import main\n"
    "main()\n"
)


def imported(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``agg ARGS`` in a fresh interpreter; its exit, and every module it had imported at exit."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES ")][-1]
    return proc, set(json.loads(line.removeprefix("MODULES ")))
