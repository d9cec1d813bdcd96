"""Running N turn workers as child processes (``agg worker --count N``, and the supervisor of
``agg run``): each is a real ``agg worker`` process, respawned if it dies, stopped warm.

Children run in their own session, so a Ctrl-C at the terminal reaches only the supervisor, which
then sends each worker exactly one SIGTERM (a warm shutdown: running turns finish and commit); a
worker still running after the timeout gets SIGKILL (its turn is redone after its lease expires).
Each child watches its parent (``AGG_PARENT_PID``) and shuts down warm if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from aggregator import defaults
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.lifecycle import PARENT_ENV, agg_argv

log = logging.getLogger("agg.turns")

RESPAWN_DELAY_S = 1.0
"""Least time between two starts of the same worker slot (a crashing worker does not spin)."""


def worker_env(settings: Settings, redis_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``agg worker`` children: ``base`` (default: this process's) plus the
    settings. The Redis URL (it may hold a password) travels in the environment, never argv."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AGG_REDIS_URL": redis_url,
            "AGG_NAMESPACE": settings.namespace,
            "AGG_DATA_DIR": str(settings.data_dir),
            "AGG_HOST": settings.host,
            PARENT_ENV: str(os.getpid()),
        }
    )
    return env


@dataclass
class _Slot:
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0


@dataclass
class WorkerPool:
    """``count`` ``agg worker`` processes (see the module docstring)."""

    count: int
    env: Mapping[str, str]
    args: Sequence[str] = ()
    stdout: IO[Any] | int | None = None
    stderr: IO[Any] | int | None = None
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False

    def _spawn(self, slot: _Slot) -> None:
        slot.proc = subprocess.Popen(
            agg_argv("worker", *self.args),
            env=dict(self.env),
            stdout=self.stdout,
            stderr=self.stderr,
            start_new_session=True,
        )
        slot.started = time.monotonic()

    def start(self) -> WorkerPool:
        """Start the workers."""
        self.slots = [_Slot() for _ in range(self.count)]
        for slot in self.slots:
            self._spawn(slot)
        return self

    def poll(self) -> int:
        """Respawn workers that died; returns how many were started again.

        A worker that exits with status 2 (bad configuration) is not respawned: it would only
        fail again; :class:`ConfigError` is raised instead.
        """
        respawned = 0
        for i, slot in enumerate(self.slots):
            proc = slot.proc
            if self.stopping or proc is None or proc.poll() is None:
                continue
            if proc.returncode == ConfigError.exit_code:
                raise ConfigError(f"turn worker {i} exited: bad configuration (see its error above)")
            if time.monotonic() - slot.started < RESPAWN_DELAY_S:
                continue
            log.warning("turn worker %d (pid %d) exited with %s: starting it again", i, proc.pid, proc.returncode)
            self._spawn(slot)
            respawned += 1
        return respawned

    def stop(self, timeout_s: float = defaults.SUPERVISOR_STOP_TIMEOUT_S) -> list[int | None]:
        """Warm shutdown: one SIGTERM each, wait up to ``timeout_s``, then SIGKILL; exit codes."""
        self.stopping = True
        procs = [s.proc for s in self.slots if s.proc is not None]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
        return [p.returncode for p in procs]


def run_workers(
    settings: Settings,
    count: int,
    stop: threading.Event,
    *,
    redis_url: str,
    args: Sequence[str] = (),
    poll_interval_s: float = 1.0,
    stop_timeout_s: float = defaults.SUPERVISOR_STOP_TIMEOUT_S,
) -> list[int | None]:
    """Run ``count`` turn workers until ``stop`` is set, respawning any that die, then stop them
    warm; returns their exit codes. ``agg worker --count N`` runs this; a supervisor of its own
    may call it too, in a thread if it likes. A worker exiting on bad configuration stops the
    others and raises :class:`ConfigError`."""
    pool = WorkerPool(count, worker_env(settings, redis_url), args).start()
    try:
        while not stop.wait(poll_interval_s):
            pool.poll()
    finally:
        codes = pool.stop(stop_timeout_s)
    return codes


def watch_parent(stop: threading.Event) -> None:
    """In a worker started by a pool: shut down warm (SIGTERM to itself) if the supervisor dies."""
    raw = os.environ.get(PARENT_ENV)
    if not raw or not raw.isdigit():
        return
    parent = int(raw)

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="agg-parent-watch", daemon=True).start()
