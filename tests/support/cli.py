"""Checks on what the real ``agg`` command printed."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

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


def on_a_terminal(
    args: list[str], env: dict[str, str], *, rows: int = 40, cols: int = 100, answer: bytes = b""
) -> tuple[int, str]:
    """Run `agg ARGS` with its stdin, stdout and stderr on a pseudo-terminal of ``rows`` x ``cols``,
    typing ``answer``; its exit code and everything it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args], env=env, cwd=REPO, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    if answer:
        os.write(master, answer)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace").replace("\r\n", "\n")
