"""``agg run``: the whole service on one machine, supervised.

The supervisor

1. starts the embedded redis-server (unless ``--redis-url`` names one) and remembers whether it
   did;
2. starts each part — ``agg watch``, ``agg writer``, ``agg worker`` (LLM turns) and ``agg serve``
   (the web pages, unless ``--no-web``; ``agg run`` prints their URL first) — as a child
   process in its own session, with the Redis URL in its
   environment (readable only by this user) and ``AGG_PARENT_PID`` so a part stops by itself if
   the supervisor is killed;
3. restarts a part that exits, with a backoff that grows up to
   :data:`~aggregator.defaults.SUPERVISOR_RESTART_MAX_S` (reset once it has run
   :data:`~aggregator.defaults.SUPERVISOR_HEALTHY_S`), and restarts the embedded Redis if it dies;
4. on Ctrl-C / SIGTERM sends SIGTERM to every part (each commits what it has read and writes its
   last snapshot), waits up to :data:`~aggregator.defaults.SUPERVISOR_STOP_TIMEOUT_S`, kills what
   is left (the whole process group, so no grandchild survives), and finally stops the embedded
   Redis if it started it — after the parts, which need it to commit
   (``tests/process/test_run.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from aggregator import defaults
from aggregator.config import Settings
from aggregator.connection import mask_url
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import AlreadyRunning
from aggregator.lifecycle import PARENT_ENV, ProcessLock, StopFlag, agg_argv
from aggregator.paths import DataPaths

log = logging.getLogger("agg.run")

EXIT_ALREADY_RUNNING = AlreadyRunning.exit_code


@dataclass(frozen=True)
class Part:
    """One supervised process: an ``agg`` sub-command and its options."""

    name: str
    args: tuple[str, ...]


def default_parts(watch_args: Sequence[str] = (), writer_args: Sequence[str] = (), *, web: bool = True) -> list[Part]:
    """The parts ``agg run`` supervises (the Procfile runs the same ones); ``web``: ``agg serve`` too."""
    return [
        Part("watch", ("watch", *watch_args)),
        Part("writer", ("writer", *writer_args)),
        Part("worker", ("worker",)),
        *([Part("serve", ("serve", "--no-url"))] if web else []),
    ]


@dataclass
class _Child:
    part: Part
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Runs the parts until stopped; see the module docstring."""

    def __init__(self, settings: Settings, parts: Sequence[Part], stop: StopFlag) -> None:
        self.settings = settings
        self.parts = list(parts)
        self.stop = stop
        self.embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
        self.started_redis = False
        self.children = [_Child(p) for p in self.parts]

    # --- environment -----------------------------------------------------------------------------
    def _redis_url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        assert self.embedded is not None
        return self.embedded.url

    def child_env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "AGG_REDIS_URL": self._redis_url(),
                "AGG_NAMESPACE": s.namespace,
                "AGG_DATA_DIR": str(s.data_dir),
                "AGG_CLAUDE_DIR": ":".join(str(p) for p in s.claude_dirs),
                "AGG_HOST": s.host,
                PARENT_ENV: str(os.getpid()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # --- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code for ``agg run``."""
        if ProcessLock.held(DataPaths(self.settings.data_dir, self.settings.namespace).lock("watch")):
            raise AlreadyRunning(
                f"an agg watcher already serves {self.settings.data_dir} (namespace {self.settings.namespace}); "
                "stop it first (agg status shows its pid)"
            )
        if self.embedded is not None:
            self.started_redis = self.embedded.ensure_running()
            log.info(
                "%s embedded Redis at %s", "started" if self.started_redis else "using", mask_url(self.embedded.url)
            )
        else:
            log.info("using Redis at %s", mask_url(self._redis_url()))
        code = 0
        try:
            for child in self.children:
                self._start(child)
            code = self._loop()
        finally:
            self._stop_children()
            if self.embedded is not None and self.started_redis:
                log.info("stopping the embedded Redis")
                self.embedded.stop()
        log.info("stopped (%s)", self.stop.reason or "done")
        return code

    def _loop(self) -> int:
        while not self.stop.wait(defaults.SUPERVISOR_TICK_S):
            now = time.monotonic()
            self._check_redis()
            for child in self.children:
                proc = child.proc
                if proc is not None and proc.poll() is not None:
                    rc = proc.returncode
                    child.exits.append(rc)
                    child.proc = None
                    if rc == EXIT_ALREADY_RUNNING:
                        log.error("%s: another instance is already running; stopping", child.part.name)
                        self.stop.set("a part was already running")
                        return 1
                    ran = now - child.started_at
                    child.failures = 0 if ran >= defaults.SUPERVISOR_HEALTHY_S else child.failures + 1
                    delay = min(defaults.SUPERVISOR_RESTART_MAX_S, 0.5 * (2 ** max(0, child.failures - 1)))
                    child.restart_at = now + (0.0 if child.failures == 0 else delay)
                    wait = child.restart_at - now
                    log.warning("%s exited with code %d; restarting in %.1f s", child.part.name, rc, wait)
                if child.proc is None and now >= child.restart_at:
                    self._start(child)
        return 0

    def _check_redis(self) -> None:
        if self.embedded is None:
            return
        pid = self.embedded.pid()
        alive = pid is not None and psutil.pid_exists(pid)
        if not alive:
            log.warning("the embedded Redis is not running; restarting it")
            with contextlib.suppress(Exception):
                self.started_redis = self.embedded.ensure_running() or self.started_redis

    def _start(self, child: _Child) -> None:
        argv = agg_argv(*child.part.args)
        child.proc = subprocess.Popen(argv, env=self.child_env(), start_new_session=True)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.part.name, child.proc.pid)

    def _stop_children(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in running:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + defaults.SUPERVISOR_STOP_TIMEOUT_S
        for c in running:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", c.part.name)
        for c in self.children:
            if c.proc is None:
                continue
            # The part led its own session: kill its whole process group (forked helpers too).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=5)
