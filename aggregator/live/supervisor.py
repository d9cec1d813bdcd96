"""``agg run``: the whole service on one machine, supervised.

The supervisor

1. refuses to start (exit 5) while an ``agg watch`` serves the same data dir and namespace;
2. starts the embedded redis-server (unless ``--redis-url`` names one) and checks that the Redis
   answers and can be used — a bad URL, a wrong password, something that is not Redis stop
   ``agg run`` with one line, instead of parts restarting forever; a Redis that goes away *later*
   is waited out by the parts (``tests/adversarial/test_run.py``);
3. starts each part — ``agg watch``, ``agg writer``, ``agg worker`` (LLM turns) and ``agg serve``
   (the web pages, unless ``--no-web``) — as a child process
   (:class:`~aggregator.children.Children`: own session, settings from
   :meth:`~aggregator.config.Settings.to_env` in its environment, readable only by this user,
   ``AGG_PARENT_PID`` so a part stops by itself if the supervisor is killed);
4. says one ready line once the watcher has checked every file: what runs, the data dir,
   ``current.json``'s path and the Redis (masked) — then only what a user cares about (a part
   restarted, an outage and its end, a rejected line: the parts log those);
5. restarts a part that exits, with a backoff (:class:`~aggregator.children.RestartPolicy`), and
   restarts the embedded Redis if it dies — but stops everything, with one line and exit 2, when
   a part exits with a usage error (exit 2): restarting it would only fail again;
6. on Ctrl-C / SIGTERM sends SIGTERM to every part (each commits what it has read and writes its
   last snapshot), waits up to :data:`~aggregator.defaults.SUPERVISOR_STOP_TIMEOUT_S`, kills what
   is left (the whole process group), and finally stops the embedded Redis if it started it —
   after the parts, which need it to commit (``tests/process/test_run.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from aggregator import defaults
from aggregator.children import Children
from aggregator.config import Settings
from aggregator.connection import mask_url, open_queue, open_redis
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import AlreadyRunning, ConfigError
from aggregator.layout import display_path
from aggregator.lifecycle import ProcessLock, StateFile, StopFlag
from aggregator.paths import DataPaths

log = logging.getLogger("agg.run")

EXIT_ALREADY_RUNNING = AlreadyRunning.exit_code
EXIT_USAGE = ConfigError.exit_code


@dataclass(frozen=True)
class Part:
    """One supervised process: an ``agg`` sub-command and its options."""

    name: str
    args: tuple[str, ...]


def default_parts(
    watch_args: Sequence[str] = (),
    writer_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    *,
    web: bool = True,
) -> list[Part]:
    """The parts ``agg run`` supervises (the Procfile runs the same ones); ``web``: ``agg serve`` too."""
    return [
        Part("watch", ("watch", *watch_args)),
        Part("writer", ("writer", *writer_args)),
        Part("worker", ("worker", *worker_args)),
        *([Part("serve", ("serve", "--no-url"))] if web else []),
    ]


class Supervisor:
    """Runs the parts until stopped; see the module docstring.

    ``output``: where the writer writes ``current.json``, ``turns``: what the worker runs and
    ``web``: the pages' URL (for the ready line).
    """

    def __init__(
        self,
        settings: Settings,
        parts: Sequence[Part],
        stop: StopFlag,
        *,
        output: Path | None = None,
        turns: str = "",
        web: str | None = None,
    ) -> None:
        self.settings = settings
        self.parts = list(parts)
        self.stop = stop
        self.output = output
        self.turns = turns
        self.web = web
        self.paths = DataPaths(settings.data_dir, settings.namespace)
        self.embedded = None if settings.redis_url else EmbeddedRedis(settings.data_dir)
        self.started_redis = False
        self.children: Children | None = None
        self.ready = False

    def _redis_url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        assert self.embedded is not None
        return self.embedded.url

    # --- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code for ``agg run``."""
        if ProcessLock.held(self.paths.lock("watch")):
            raise AlreadyRunning(
                f"an agg watcher already serves {self.settings.data_dir} (namespace {self.settings.namespace}); "
                "stop it first (agg status shows its pid)"
            )
        code = 0
        try:
            if self.embedded is not None:
                self.started_redis = self.embedded.ensure_running()
            # A Redis it cannot use at all stops `agg run` here, with one line (the CLI prints it).
            conn = open_redis(self.settings, start=False)
            try:
                if conn.cluster and not self.settings.queue_url:
                    if any(p.name == "worker" for p in self.parts):
                        log.warning("LLM turns on a Redis Cluster need a standalone Redis for their queue "
                                    "(--queue-url / AGG_QUEUE_URL): agg run starts no worker")  # fmt: skip
                    self.parts = [p for p in self.parts if p.name != "worker"]
                    self.turns = ""
                elif self.settings.queue_url:
                    open_queue(self.settings, conn).close()  # a queue it cannot use stops it here too
            finally:
                conn.close()
            env = {**os.environ, **self.settings.to_env(redis_url=self._redis_url()), "PYTHONUNBUFFERED": "1"}
            self.children = Children(env, log=log)
            for part in self.parts:
                self.children.add(part.name, *part.args)
            self.children.start()
            code = self._loop()
            log.info("stopping (%s): the parts commit what they have read", self.stop.reason or "done")
        finally:
            if self.children is not None:
                self.children.stop()
            if self.embedded is not None and self.started_redis:
                log.info("stopping the embedded Redis")
                self.embedded.stop()
        log.info("stopped (%s)", self.stop.reason or "done")
        return code

    def _loop(self) -> int:
        assert self.children is not None
        while not self.stop.wait(defaults.SUPERVISOR_TICK_S):
            self._check_redis()
            for ex in self.children.reap():
                name = ex.child.name
                if ex.code == EXIT_ALREADY_RUNNING:
                    log.error("%s: another instance is already running; stopping", name)
                    self.stop.set("a part was already running")
                    return 1
                if ex.code == EXIT_USAGE:
                    log.error("%s exited with a usage error (see its message above); stopping", name)
                    self.stop.set(f"{name} exited with a usage error")
                    return EXIT_USAGE
                log.warning("%s exited with code %d; restarting in %.1f s", name, ex.code, ex.restart_in)
            for child in self.children.restart_due():
                assert child.proc is not None
                log.info("restarted %s (pid %d)", child.name, child.proc.pid)
            if not self.ready:
                self._announce()
        return 0

    def _announce(self) -> None:
        """Say the one ready line once the watcher has checked every file."""
        assert self.children is not None
        watch = next((c for c in self.children.children if c.name == "watch"), None)
        st = StateFile.read(self.paths.state("watch")) or {}
        if watch is not None and (
            watch.proc is None or st.get("pid") != watch.proc.pid or st.get("state") != "watching"
        ):
            return
        self.ready = True
        running = ", ".join(c.name for c in self.children.children)
        roots = ", ".join(display_path(str(r["path"])) for r in st.get("roots", [])) or "no claude dir yet"
        where = "embedded" if self.embedded is not None else "given"
        rows = [("watching", f"{roots} ({st.get('files', 0)} files)")]
        if self.web:
            rows.append(("pages", self.web))
        if self.output is not None:
            rows.append(("current.json", str(self.output)))
        if self.turns:
            rows.append(("LLM turns", self.turns))
        rows.append(("data dir", str(self.settings.data_dir)))
        rows.append(("Redis", f"{mask_url(self._redis_url())} ({where})"))
        rows.append(("try", "agg status · agg list · agg search WORDS · agg usage"))
        # One log record (one ready line, then its details indented), so a log reader sees it whole.
        log.info("ready: %s running%s", running, "".join(f"\n    {k:<13} {v}" for k, v in rows))

    def _check_redis(self) -> None:
        if self.embedded is None:
            return
        pid = self.embedded.pid()
        alive = pid is not None and psutil.pid_exists(pid)
        if not alive:
            log.warning("the embedded Redis is not running; restarting it")
            with contextlib.suppress(Exception):
                self.started_redis = self.embedded.ensure_running() or self.started_redis
