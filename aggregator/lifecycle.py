"""What every long-running agg process shares: stopping cleanly, its state file, its lock.

* :class:`StopFlag` turns SIGTERM / SIGINT (Ctrl-C) into a flag the main loop checks, so a
  process finishes the batch it is committing instead of dying in the middle of it; it also
  stops the process when the parent named by ``AGG_PARENT_PID`` goes away (``agg run`` sets it
  for its parts, so a ``kill -9`` of the supervisor does not leave them running).
* :class:`StateFile` is a small 0600 JSON file under ``<data dir>/state/`` that a process
  rewrites when its state changes and on a heartbeat. ``agg status`` reads it, which is how it can
  say "waiting for Redis" while Redis is down.
* :class:`ProcessLock` (``flock``) keeps two watchers from serving one data dir and namespace;
  the kernel drops it when its holder dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from aggregator.errors import AlreadyRunning
from aggregator.files import write_private
from aggregator.text import now_iso

PARENT_ENV = "AGG_PARENT_PID"
"""Environment variable naming the process whose exit stops this one (set by ``agg run``)."""

_PARENT_CHECK_S = 1.0


def agg_argv(*args: str) -> list[str]:
    """Command line running ``agg ARGS`` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "cli", *args]


class StopFlag:
    """Set by SIGTERM/SIGINT or by the parent's exit; long-running loops check it and wait on it.

    Its lock is reentrant: a signal handler runs on the main thread, possibly while that thread
    is inside :meth:`wait` holding the lock; with ``threading.Event`` (a plain lock) setting the
    flag from the handler then deadlocked the process for good
    (``tests/adversarial/test_run.py::test_a_stop_signal_inside_a_wait_does_not_deadlock``).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._set = False
        self._callbacks: list[Callable[[], None]] = []
        self.reason = ""

    def install(self) -> StopFlag:
        """Handle SIGTERM and SIGINT (main thread only), and watch ``AGG_PARENT_PID`` if set."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        parent = os.environ.get(PARENT_ENV, "")
        if parent.isdigit():
            threading.Thread(target=self._watch_parent, args=(int(parent),), name="agg-parent", daemon=True).start()
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.set(signal.Signals(signum).name)

    def _watch_parent(self, parent: int) -> None:
        while not self.wait(_PARENT_CHECK_S):
            if os.getppid() != parent:
                self.set("parent exited")
                return

    def set(self, reason: str = "stopped") -> None:
        with self._cond:
            if self._set:
                return
            self.reason = reason
            self._set = True
            self._cond.notify_all()
        for cb in list(self._callbacks):
            cb()

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the setting thread or signal handler) when the flag is set —
        at once if it is set already: a SIGTERM landing between :meth:`install` and this call
        was otherwise lost, and ``agg serve`` served on
        (tests/process/test_serve.py::test_a_stop_right_after_the_url_stops_the_server)."""
        with self._cond:
            self._callbacks.append(callback)
            already = self._set
        if already:
            callback()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if the flag is set; returns the flag."""
        with self._cond:
            if not self._set:
                self._cond.wait(timeout)
            return self._set

    def __bool__(self) -> bool:
        return self._set


class StateFile:
    """A process's state, as a 0600 JSON file that ``agg status`` reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso()}
        self.written_at = 0.0

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` and rewrite the file (not fsynced: it only has to survive this process)."""
        if "state" in fields and fields["state"] != self.data.get("state"):
            fields.setdefault("since", now_iso())
        self.data.update(fields)
        self.data["updated_at"] = now_iso()
        with contextlib.suppress(OSError):  # a full disk must not stop the service
            write_private(self.path, orjson.dumps(self.data, option=orjson.OPT_INDENT_2), durable=False)
        self.written_at = time.monotonic()

    def due(self, interval_s: float) -> bool:
        return time.monotonic() - self.written_at >= interval_s

    @staticmethod
    def read(path: Path) -> dict[str, Any] | None:
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None


class ProcessLock:
    """An exclusive ``flock`` on a file; raises :class:`AlreadyRunning` if another process holds it."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> ProcessLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"{self.what} is already running (pid {holder}; lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def held(path: Path) -> bool:
        """Whether some live process holds the lock at ``path``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
