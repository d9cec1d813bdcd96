"""File-change notifications for the watcher: hints of which paths changed, never the truth.

:class:`Hints` runs watchfiles' Rust ``notify`` engine (``watchfiles._rust_notify.RustNotify``, the
engine behind ``watchfiles.watch``) on a thread per :class:`Spec` — a list of directories, watched
recursively or not — so that the step can change between waits: short while files change, long
when idle. The watcher decides what to watch (:func:`plan`) and restarts the notifier when it
fails (``failed``):

* a path that is not valid UTF-8 makes the engine fail for good ("Unable to decode path"): a file
  does so when an event names it, a directory as soon as the engine starts. So a directory tree
  holding such a directory is not given to a recursive engine: the claude dir is then watched
  non-recursively (new projects) and its other projects recursively, and the trees left out are
  polled by the watcher (``tests/adversarial/test_notify.py``);
* the kernel's inotify watch limit makes the engine skip directories silently; the watcher
  compares the directories it walked with those the kernel watches (:func:`inotify_watched`) and
  polls the rest.

Every notifier the watcher uses has the interface of :class:`Hints` (:class:`Notifier`); tests
give the watcher a scripted one instead (``hints_factory``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aggregator import defaults

log = logging.getLogger("agg.watch")


@dataclass(frozen=True)
class Spec:
    """Directories one notification engine watches."""

    paths: tuple[str, ...]
    recursive: bool = True


class Notifier(Protocol):
    """What the watcher needs from its file notifications (:class:`Hints`, or a test's fake)."""

    error: str | None
    """The last failure, as one line (``agg status`` shows it)."""
    failed: bool
    """An engine stopped for good: the watcher replaces this notifier."""

    def start(self) -> Notifier: ...
    def stop(self) -> None: ...
    def wake(self) -> None: ...
    def heat(self) -> None: ...
    def take(self, timeout: float) -> set[str]: ...


NotifierFactory = Callable[[list[Spec], bool], Notifier]
"""``(specs, poll) -> Notifier``: how the watcher makes its notifier (the test seam)."""


def plan(roots: Iterable[Path], bad_dirs: Iterable[str]) -> tuple[list[Spec], list[str]]:
    """What to watch under the claude dirs ``roots``, given the directories whose names are not
    valid UTF-8 (``bad_dirs``): ``(specs, left out)`` — the trees left out are to be polled.

    Without such a directory: each root, recursively (one engine). Otherwise each root
    non-recursively (it sees new projects appear), plus, recursively, every project dir that
    holds none of them; the others are left out.
    """
    tops = [str(r) for r in roots]
    bad = [d for d in bad_dirs if any(_under(d, r) for r in tops)]
    if not bad:
        return ([Spec(tuple(tops))] if tops else []), []
    trees: list[str] = []
    left_out: list[str] = []
    for r in tops:
        try:
            children = sorted(e.path for e in os.scandir(r) if e.is_dir())
        except OSError:
            continue
        for child in children:
            (left_out if any(_under(d, child) for d in bad) else trees).append(child)
    specs = [Spec(tuple(tops), recursive=False)]
    if trees:
        specs.append(Spec(tuple(trees)))
    return specs, left_out


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def decodable(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 (a str path carries other bytes as surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Hints:
    """Paths reported changed by watchfiles' ``notify`` engines, gathered by threads."""

    def __init__(self, specs: list[Spec], poll: bool, *, poll_delay_ms: int = defaults.WATCH_POLL_DELAY_MS) -> None:
        self.specs = [s for s in specs if s.paths]
        self.poll = poll
        self.poll_delay_ms = poll_delay_ms
        self.cond = threading.Condition()
        self.pending: set[str] = set()
        self.error: str | None = None
        self.failed = False
        self._stop = False
        self.hot_until = time.monotonic() + defaults.WATCH_HOT_WINDOW_S
        self.threads: list[threading.Thread] = []

    def start(self) -> Hints:
        """Start watching; returns once every engine is armed (or failed to start).

        The caller rescans after this: a change made before arming is found by the rescan, one
        made after raises an event (``tests/process/test_run.py::test_run_restarts_a_crashed_part``).
        """
        for spec in self.specs:
            ready = threading.Event()
            t = threading.Thread(target=self._run, args=(spec, ready), name="agg-hints", daemon=True)
            t.start()
            ready.wait(30)
            self.threads.append(t)
        return self

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def heat(self) -> None:
        """Something changed: use the short step for a while."""
        self.hot_until = time.monotonic() + defaults.WATCH_HOT_WINDOW_S

    def take(self, timeout: float) -> set[str]:
        """Paths reported since the last call, waiting up to ``timeout`` s for the first."""
        with self.cond:
            if not self.pending and not self._stop:
                self.cond.wait(timeout)
            out, self.pending = self.pending, set()
            return out

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("%s", message)
        with self.cond:
            self.failed = True
            self.cond.notify_all()

    def _run(self, spec: Spec, ready: threading.Event) -> None:
        from watchfiles._rust_notify import RustNotify

        try:
            notify = RustNotify(list(spec.paths), False, self.poll, self.poll_delay_ms, spec.recursive, True)
        except Exception as e:  # inotify unavailable (ENOSYS, no instances left): the stat timer covers
            self._fail(f"file notifications unavailable ({e}); relying on the stat timer and rescans")
            return
        finally:
            ready.set()
        try:
            while not self._stop:
                step = defaults.WATCH_HOT_STEP_MS if time.monotonic() < self.hot_until else defaults.WATCH_IDLE_STEP_MS
                try:
                    res = notify.watch(defaults.WATCH_DEBOUNCE_MS, step, defaults.WATCH_NOTIFY_TIMEOUT_MS, None)
                except Exception as e:  # e.g. a non-UTF-8 name: the engine is done; the watcher restarts it
                    self._fail(f"file notifications failed ({e}); restarting them")
                    return
                if isinstance(res, set) and res:
                    self.heat()
                    with self.cond:
                        self.pending.update(path for _, path in res)
                        self.cond.notify_all()
        finally:
            with contextlib.suppress(Exception):
                notify.close()


def inotify_watched() -> set[tuple[int, int]] | None:
    """``(st_dev, st_ino)`` of every directory this process's inotify instances watch, from
    ``/proc/self/fdinfo``; None where that cannot be read (not Linux).

    watchfiles (like inotify tools generally) stops adding watches without an error once
    ``fs.inotify.max_user_watches`` is reached; comparing this set with the directories walked
    is how the watcher finds the ones left unwatched.
    """
    fd_dir = "/proc/self/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    out: set[tuple[int, int]] = set()
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                lines = f.readlines()
        except OSError:
            continue
        for ln in lines:
            if not ln.startswith("inotify "):
                continue
            fields = dict(kv.split(":", 1) for kv in ln.split()[1:] if ":" in kv)
            with contextlib.suppress(KeyError, ValueError):
                kdev = int(fields["sdev"], 16)  # the kernel's dev_t: major << 20 | minor
                out.add((os.makedev(kdev >> 20, kdev & 0xFFFFF), int(fields["ino"], 16)))
    return out


def inotify_limit() -> int | None:
    """The inotify watch limit this process is under: the lower of ``fs.inotify.max_user_watches``
    and its user namespace's ``user.max_inotify_watches`` (None if neither can be read)."""
    values = []
    for path in ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches"):
        with contextlib.suppress(OSError, ValueError):
            values.append(int(Path(path).read_text()))
    return min(values) if values else None
