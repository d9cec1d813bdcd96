"""Running the real ``agg`` command against a test Redis, and waiting for what it does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator.config import Settings
from devtools.redisproc import RedisProcess

REPO = Path(__file__).resolve().parent.parent
"""The repository's root."""

HOST = "testhost"
"""``AGG_HOST`` of every test process: cursors are per host."""


def free_port() -> int:
    """A 127.0.0.1 TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agg_env(redis_server: RedisProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for running the real `agg` command against the test Redis.

    ``AGG_WEB_PORT`` is a free port, never the default 8765: `agg run` serves the pages there, and an
    `agg run` of the machine's user holding 8765 made every test of `agg run` stop with "port in use".
    """
    claude = [tmp_path / "claude"]
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path / "data", claude_dirs=claude, host=HOST)
    return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", "AGG_WEB_PORT": str(free_port()), **extra}


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of an ``agg`` command on its embedded Redis (no AGG_* inherited from the caller;
    ``AGG_WEB_PORT`` free, as in :func:`agg_env`)."""
    settings = Settings(data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host=HOST)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    return {**env, **settings.to_env(), "PYTHONUNBUFFERED": "1", "AGG_WEB_PORT": str(free_port()), **extra}


def run_agg(
    args: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `agg` console command in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"agg {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def wait_until(pred: Callable[[], Any], what: str = "condition", timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
