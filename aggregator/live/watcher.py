"""``agg watch``: keep the store up to date with the claude dirs, all day, through Redis outages.

What makes a file be read (:meth:`Tailer.sync`, which always resumes from the cursor stored in
Redis, never from anything this process remembers):

* **file events** (watchfiles' Rust ``notify`` backend, :class:`Hints`) — only a hint, handed over
  within milliseconds: the notification thread looks every
  :data:`~aggregator.defaults.WATCH_HOT_STEP_MS` while files change and every
  :data:`~aggregator.defaults.WATCH_IDLE_STEP_MS` when all is quiet (watchfiles' defaults would add
  up to 1.6 s). ``--poll`` uses watchfiles' polling backend instead (network mounts, WSL, Docker);
* **a stat timer**: recently modified tracked files every
  :data:`~aggregator.defaults.WATCH_STAT_HOT_S`, all of them every
  :data:`~aggregator.defaults.WATCH_STAT_ALL_S` — events get dropped and coalesced;
* **rescans** of the claude dirs at start, after every reconnection to Redis, when a directory
  appears, and every :data:`~aggregator.defaults.WATCH_RESCAN_S`.

When Redis goes away (restart, network, failover) the watcher keeps running: it says "waiting
for Redis" in its state file (``agg status``), retries with exponential backoff (tenacity), and
once Redis answers again re-syncs every file from the cursors Redis holds — so lines committed
before a crash are not read twice and lines Redis lost are read again. A Redis that came back
with older data gets its ``seq`` raised first (:mod:`aggregator.seqfloor`).

Deleted files keep their events; replaced, truncated or rewritten files are reconciled by the
tailer; an unterminated last line waits for its newline.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator import defaults
from aggregator.config import Settings
from aggregator.connection import check
from aggregator.errors import AggError, StoreError, first_line
from aggregator.layout import SUFFIX, SourceFile, classify, display_path, iter_transcripts, watch_path
from aggregator.lifecycle import ProcessLock, StateFile, StopFlag
from aggregator.live.liveredis import REDIS_ERRORS, LiveRedis
from aggregator.paths import DataPaths
from aggregator.seqfloor import SeqFloor
from aggregator.sidecars import META_SUFFIX
from aggregator.store import Store
from aggregator.tailer import Tailer
from aggregator.text import now_iso

log = logging.getLogger("agg.watch")

STATE_WATCHING = "watching"
STATE_WAITING = "waiting for Redis"
STATE_STARTING = "starting"
STATE_STOPPED = "stopped"


@dataclass
class Tracked:
    """What the watcher last saw of a file (a hint for *when* to sync, never *where* from)."""

    sf: SourceFile
    root: str
    ino: int = -1
    size: int = -1
    mtime_ns: int = -1
    committed: int = 0
    """The cursor's offset after the last sync (for ``lag_bytes`` only)."""

    def changed(self, st: os.stat_result) -> bool:
        return (st.st_ino, st.st_size, st.st_mtime_ns) != (self.ino, self.size, self.mtime_ns)

    def remember(self, st: os.stat_result) -> None:
        self.ino, self.size, self.mtime_ns = st.st_ino, st.st_size, st.st_mtime_ns

    def hot(self, now_ns: int) -> bool:
        return now_ns - self.mtime_ns < defaults.WATCH_HOT_FILE_S * 1e9


class Hints:
    """File-change notifications from watchfiles' Rust ``notify`` backend, gathered by a thread.

    Uses ``watchfiles._rust_notify.RustNotify`` (the engine behind ``watchfiles.watch``) directly,
    so that the step can change between waits: short while files change, long when idle.
    """

    def __init__(self, paths: list[Path], *, poll: bool, poll_delay_ms: int = defaults.WATCH_POLL_DELAY_MS) -> None:
        self.paths = paths
        self.poll = poll
        self.poll_delay_ms = poll_delay_ms
        self.cond = threading.Condition()
        self.pending: set[str] = set()
        self.error: str | None = None
        self._stop = False
        self.hot_until = time.monotonic() + defaults.WATCH_HOT_WINDOW_S
        self.thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> Hints:
        """Start watching; returns once notifications are armed.

        The caller rescans after this: a change made before arming is found by the rescan, one
        made after raises an event (``tests/process/test_run.py::test_run_restarts_a_crashed_part``).
        """
        if self.paths:
            self.thread = threading.Thread(target=self._run, name="agg-hints", daemon=True)
            self.thread.start()
            self._ready.wait(30)
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

    def _run(self) -> None:
        from watchfiles._rust_notify import RustNotify

        try:
            notify = RustNotify([str(p) for p in self.paths], False, self.poll, self.poll_delay_ms, True, True)
        except Exception as e:  # inotify limits, ENOSYS…: fall back to the stat timer
            self.error = f"file notifications unavailable ({e}); relying on the stat timer and rescans"
            log.warning("%s", self.error)
            return
        finally:
            self._ready.set()
        try:
            while not self._stop:
                step = defaults.WATCH_HOT_STEP_MS if time.monotonic() < self.hot_until else defaults.WATCH_IDLE_STEP_MS
                try:
                    res = notify.watch(defaults.WATCH_DEBOUNCE_MS, step, defaults.WATCH_NOTIFY_TIMEOUT_MS, None)
                except Exception as e:  # a watcher error must not stop ingest
                    self.error = f"file notifications failed ({e}); relying on the stat timer and rescans"
                    log.warning("%s", self.error)
                    return
                if isinstance(res, set) and res:
                    self.heat()
                    with self.cond:
                        self.pending.update(path for _, path in res)
                        self.cond.notify_all()
        finally:
            notify.close()


class Watcher:
    """The ``agg watch`` service for one host, data dir and namespace."""

    def __init__(self, settings: Settings, stop: StopFlag, *, poll: bool = False) -> None:
        self.settings = settings
        self.stop = stop
        self.poll = poll
        self.roots = [Path(r) for r in settings.claude_dirs]
        self.keys = settings.keys
        paths = DataPaths(settings.data_dir, settings.namespace)
        self.state = StateFile(paths.state("watch"))
        self.lock = ProcessLock(paths.lock("watch"), "agg watch for this data dir")
        self.floor = SeqFloor(self.keys, paths.floor)
        self.tracked: dict[str, Tracked] = {}
        self.hints: Hints | None = None
        self.watched: list[Path] = []
        self.redis = LiveRedis(settings, stop, self.floor, on_wait=self._waiting)
        self.store: Store | None = None
        self.tailer: Tailer | None = None
        self.last_ingest_at: str | None = None
        self.syncs = 0
        self.resyncs = 0
        self.errors = 0
        now = time.monotonic()
        self._due = {"hot": now, "all": now + defaults.WATCH_STAT_ALL_S, "rescan": now + defaults.WATCH_RESCAN_S}
        self._roots_checked = now
        self._hot_until_ns = 0
        self._servers_seen = -1
        stop.on_set(self._wake)

    # --- lifecycle -------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until the stop flag is set; commit what was read, then return."""
        with self.lock:
            self.state.update(
                state=STATE_STARTING, redis=self.redis.masked, polling=self.poll, roots=self._roots_info()
            )
            self._start_hints()
            try:
                while not self.stop:
                    try:
                        if not self.redis.connect():
                            break
                        self._serve()
                    except REDIS_ERRORS as e:
                        self.redis.lost(e)
                    except StoreError as e:  # e.g. a cursor that keeps moving: log it, keep serving
                        self.errors += 1
                        log.error("%s", e)
                        self.stop.wait(defaults.RETRY_MAX_S)
                self._final_sync()
            finally:
                if self.hints:
                    self.hints.stop()
                self.floor.save()
                self.state.update(state=STATE_STOPPED, stopped_reason=self.stop.reason, **self._figures())
                self.redis.close()

    def _wake(self) -> None:
        if self.hints:
            self.hints.wake()

    def _waiting(self, reason: str) -> None:
        self.state.update(state=STATE_WAITING, error=reason, **self._figures())

    # --- serving -------------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self.redis.client is not None
        self.store = Store(self.redis.client, self.keys, self.settings.host)
        self.tailer = Tailer(self.store)
        self._full_sync("start" if self._servers_seen < 0 else "reconnected")
        self.state.update(state=STATE_WATCHING, error=None, **self._figures())
        log.info("watching %s", ", ".join(display_path(str(p)) for p in self.watched) or "(no claude dir yet)")
        while not self.stop:
            if self.floor.servers != self._servers_seen:
                # A new connection reached another Redis process: one that restarted and lost its
                # last writes, or was restored from an older copy. Re-check every file against its
                # cursor (tests/process/test_live_faults.py).
                self._full_sync("reconnected")
            now = time.monotonic()
            timeout = max(0.0, min(self._next_due(), now + defaults.STATE_HEARTBEAT_S) - now)
            paths = self.hints.take(timeout) if self.hints else set()
            if not self.hints:
                self.stop.wait(timeout)
            if self.stop:
                break
            self._on_hints(paths)
            self._on_timers()
            if self.state.due(defaults.STATE_HEARTBEAT_S):
                self.state.update(**self._figures())

    def _next_due(self) -> float:
        due = min(self._due["all"], self._due["rescan"], self._roots_checked + defaults.WATCH_MISSING_ROOT_S)
        if time.time_ns() < self._hot_until_ns:  # some tracked file changed recently
            due = min(due, self._due["hot"])
        return due

    def _remember(self, t: Tracked, st: os.stat_result) -> None:
        t.remember(st)
        self._hot_until_ns = max(self._hot_until_ns, st.st_mtime_ns + int(defaults.WATCH_HOT_FILE_S * 1e9))

    def _on_hints(self, paths: Iterable[str]) -> None:
        for path in sorted(paths):
            t = self.tracked.get(path)
            if t is not None:
                self._sync_if_changed(t)
                continue
            if path.endswith(META_SUFFIX):  # a subagent's .meta.json: its transcript is read again
                t = self.tracked.get(path[: -len(META_SUFFIX)] + SUFFIX)
                if t is not None:
                    self._sync(t, None)
                continue
            if path.endswith(SUFFIX):
                root = self._root_of(path)
                sf = classify(path) if root is not None else None
                if sf is not None and root is not None:
                    self._track(sf, root, force=True)
            elif os.path.isdir(path) and self._root_of(path) is not None:
                self._scan([Path(path)])  # a new project or subagents dir: files may predate its watch

    def _on_timers(self) -> None:
        now = time.monotonic()
        now_ns = time.time_ns()
        if now >= self._due["all"]:
            self._due["all"] = now + defaults.WATCH_STAT_ALL_S
            self._due["hot"] = now + defaults.WATCH_STAT_HOT_S
            self._stat(list(self.tracked.values()))
        elif now >= self._due["hot"]:
            self._due["hot"] = now + defaults.WATCH_STAT_HOT_S
            self._stat([t for t in self.tracked.values() if t.hot(now_ns)])
        if now >= self._due["rescan"]:
            self._due["rescan"] = now + defaults.WATCH_RESCAN_S
            self._scan(self.watched)
        if now >= self._roots_checked + defaults.WATCH_MISSING_ROOT_S:
            self._roots_checked = now
            if self._watch_paths() != self.watched:
                log.info("claude dirs changed: %s", ", ".join(map(str, self._watch_paths())))
                self._start_hints()
                self._scan(self.watched)

    def _stat(self, files: list[Tracked]) -> None:
        for t in files:
            self._sync_if_changed(t)

    def _sync_if_changed(self, t: Tracked) -> None:
        try:
            st = os.stat(t.sf.path)
        except FileNotFoundError:
            # Deleted (or renamed away): its events stay in the store; its cursor stays in Redis
            # in case it comes back. Stop stat'ing it.
            self.tracked.pop(t.sf.path, None)
            return
        except OSError:
            return
        if t.changed(st):
            self._sync(t, st)

    def _track(self, sf: SourceFile, root: str, *, force: bool = False) -> None:
        t = self.tracked.get(sf.path)
        if t is None:
            t = self.tracked[sf.path] = Tracked(sf, root)
        self._sync_if_changed(t) if not force else self._sync(t, None)

    def _sync(self, t: Tracked, st: os.stat_result | None) -> None:
        assert self.tailer is not None and self.store is not None
        if st is None:
            try:
                st = os.stat(t.sf.path)
            except OSError:
                self.tracked.pop(t.sf.path, None)
                return
        if self.hints:
            self.hints.heat()
        try:
            res = self.tailer.sync(t.sf)
        except OSError as e:  # an unreadable file (EIO, permissions changed): skip it, keep going
            self.errors += 1
            log.warning("cannot read %s: %s", t.sf.display, e)
            self._remember(t, st)
            return
        self.syncs += 1
        self._remember(t, st)
        if res.skipped == "vanished":
            self.tracked.pop(t.sf.path, None)
            return
        t.committed = res.offset
        if res.last_seq:
            self.floor.observe(res.last_seq)
        if res.events_added or res.revisions:
            self.last_ingest_at = now_iso()
        if res.reset:
            log.info("%s was %s: re-read from the start", t.sf.display, res.reset)
        if res.rejected:
            log.info("%s: %d line(s) rejected (see agg status)", t.sf.display, res.rejected)

    def _full_sync(self, why: str) -> None:
        """Walk the claude dirs and sync every file whose stat differs from its stored cursor."""
        assert self.store is not None
        self._servers_seen = self.floor.servers
        if why != "start":
            self.resyncs += 1
            log.info("re-checking every file against the cursors in Redis (%s)", why)
        started = time.monotonic()
        sources: list[tuple[SourceFile, str]] = []
        for watched in self.watched:
            sources += [(sf, str(watched)) for sf in iter_transcripts([watched])]
        cursors = self.store.cursors([self.store.file_id(sf.path) for sf, _ in sources])
        seen: set[str] = set()
        for (sf, root), cur in zip(sources, cursors, strict=True):
            seen.add(sf.path)
            t = self.tracked.get(sf.path) or Tracked(sf, root)
            self.tracked[sf.path] = t
            try:
                st = os.stat(sf.path)
            except OSError:
                self.tracked.pop(sf.path, None)
                continue
            if cur is not None and (cur.ino, cur.size, cur.mtime, cur.off) == (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_size,
            ):
                self._remember(t, st)  # fully committed and untouched since: nothing to read
                t.committed = cur.off
                continue
            self._sync(t, st)
            if self.stop:
                return
        for path in [p for p in self.tracked if p not in seen]:
            self.tracked.pop(path, None)
        log.info("%d files checked in %.2f s", len(sources), time.monotonic() - started)

    def _scan(self, dirs: list[Path]) -> None:
        """Track (and sync) transcripts under ``dirs`` that are new or changed."""
        for d in dirs:
            if not d.exists():
                continue
            root = self._root_of(str(d))
            if root is None:
                continue
            for sf in iter_transcripts([d]):
                if sf.path in self.tracked:
                    self._sync_if_changed(self.tracked[sf.path])
                else:
                    self._track(sf, root)
                if self.stop:
                    return

    def _final_sync(self) -> None:
        """On the way out: commit every complete line already on disk in recently changed files."""
        if self.store is None or self.redis.client is None or self.redis.down:
            return
        now_ns = time.time_ns()
        try:
            check(self.redis.client, self.redis.masked)
            if self.hints:
                self._on_hints(self.hints.take(0))
            for t in [t for t in self.tracked.values() if t.hot(now_ns)]:
                self._sync_if_changed(t)
        except (*REDIS_ERRORS, AggError) as e:  # type: ignore[misc]
            log.warning("could not commit the last lines (%s); they will be read on the next start", first_line(e))

    # --- roots -----------------------------------------------------------------------------------
    def _watch_paths(self) -> list[Path]:
        return [w for w in (watch_path(r) for r in self.roots) if w is not None]

    def _start_hints(self) -> None:
        if self.hints:
            self.hints.stop()
        self.watched = self._watch_paths()
        self.hints = Hints(self.watched, poll=self.poll).start()

    def _root_of(self, path: str) -> str | None:
        for root in self.watched:
            r = str(root)
            if path == r or path.startswith(r.rstrip(os.sep) + os.sep):
                return r
        return None

    def _roots_info(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        lag: dict[str, int] = {}
        for t in self.tracked.values():
            counts[t.root] = counts.get(t.root, 0) + 1
            lag[t.root] = lag.get(t.root, 0) + max(0, t.size - t.committed)
        out = []
        for r in self.roots:
            key = str(watch_path(r) or r)
            out.append(
                {"path": str(r), "exists": r.is_dir(), "files": counts.get(key, 0), "lag_bytes": lag.get(key, 0)}
            )
        return out

    def _figures(self) -> dict[str, Any]:
        roots = self._roots_info()
        return {
            "roots": roots,
            "files": len(self.tracked),
            "lag_bytes": sum(r["lag_bytes"] for r in roots),
            "last_ingest_at": self.last_ingest_at,
            "seq_high": self.floor.value,
            "syncs": self.syncs,
            "resyncs": self.resyncs,
            "seq_floor_raised": self.floor.raised,
            "notify_error": self.hints.error if self.hints else None,
        }
