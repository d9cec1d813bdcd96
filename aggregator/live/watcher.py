"""``agg watch``: keep the store up to date with the claude dirs, all day, through Redis outages.

What makes a file be read (:meth:`Tailer.sync`, which always resumes from the cursor stored in
Redis, never from anything this process remembers):

* **file events** (:mod:`aggregator.live.notify`) — only a hint, handed over within milliseconds:
  the notification thread looks every :data:`~aggregator.defaults.WATCH_HOT_STEP_MS` while files
  change and every :data:`~aggregator.defaults.WATCH_IDLE_STEP_MS` when all is quiet.
  ``--poll`` uses watchfiles' polling backend instead (network mounts, WSL, Docker). Notifications
  that fail (a name that is not UTF-8) are started again, with backoff, followed by a rescan;
  directories they do not cover (the inotify watch limit reached, a tree holding a name that is
  not UTF-8) are polled every :data:`~aggregator.defaults.WATCH_POLL_DIRS_S`, and said so in the
  log and in ``agg status``;
* **a stat timer**: recently modified tracked files every
  :data:`~aggregator.defaults.WATCH_STAT_HOT_S`, all of them every ``AGG_WATCH_STAT_ALL_S``
  (default :data:`~aggregator.defaults.WATCH_STAT_ALL_S`) — events get dropped and coalesced;
* **rescans** of the claude dirs at start, after every reconnection to Redis, when a directory
  appears, after file notifications restart, and every ``AGG_WATCH_RESCAN_S`` (default
  :data:`~aggregator.defaults.WATCH_RESCAN_S`).

A file that cannot be read (permissions, EIO) is skipped, logged once, named in ``agg status``,
and tried again on every stat and rescan until it is read; so is an unreadable directory. A
transcript symlink whose target lies outside the claude dirs is not followed (reported the
same way).

Around this, :class:`~aggregator.live.service.Service` waits out Redis outages (including ``OOM``
and ``MISCONF``) and notices a store that lost its keys; after either, every file is re-checked
against the cursor Redis holds — so lines committed before a crash are not read twice and lines
Redis lost are read again. Deleted files keep their events; replaced, truncated or rewritten
files are reconciled by the tailer; an unterminated last line waits for its newline.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.config import Settings, WatchTimings, watch_timings
from aggregator.connection import check, is_away
from aggregator.errors import AggError, first_line
from aggregator.layout import (
    SUFFIX,
    SourceFile,
    Walk,
    classify,
    display_path,
    iter_transcripts,
    outside_link,
    resolved,
    watch_path,
)
from aggregator.lifecycle import StopFlag
from aggregator.live.notify import Hints, Notifier, NotifierFactory, decodable, inotify_limit, inotify_watched, plan
from aggregator.live.service import Service
from aggregator.sidecars import META_SUFFIX
from aggregator.tailer import FileResult, Tailer
from aggregator.text import now_iso

STATE_WATCHING = "watching"


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

    def forget(self) -> None:
        """Not read: look at it again on the next stat, whatever its stat says."""
        self.ino = self.size = self.mtime_ns = -1

    def hot(self, now_ns: int) -> bool:
        return now_ns - self.mtime_ns < defaults.WATCH_HOT_FILE_S * 1e9


class Watcher(Service):
    """The ``agg watch`` service for one host, data dir and namespace.

    ``hints_factory`` makes its file notifications (:class:`~aggregator.live.notify.Hints`; a test
    passes a scripted one); ``timings``: its rescan and stat intervals (default: from the
    environment, :func:`aggregator.config.watch_timings`).
    """

    role = "watch"
    serving_state = STATE_WATCHING

    def __init__(
        self,
        settings: Settings,
        stop: StopFlag,
        *,
        poll: bool = False,
        timings: WatchTimings | None = None,
        hints_factory: NotifierFactory = Hints,
    ) -> None:
        super().__init__(settings, stop)
        self.poll = poll
        self.timings = timings or watch_timings()
        self.hints_factory = hints_factory
        self.roots = [Path(r) for r in settings.claude_dirs]
        self.tracked: dict[str, Tracked] = {}
        self.hints: Notifier | None = None
        self.watched: list[Path] = []
        self.tailers: list[Tailer] = []
        """One per bucket of the store (one on a single Redis)."""
        self.last_ingest_at: str | None = None
        self.syncs = 0
        self.resyncs = 0
        self.skipped: dict[str, str] = {}
        """Paths not read (unreadable, a symlink out of the claude dirs) → why; tried again until read."""
        self._said: dict[str, str] = {}  # what the log has said was skipped (said once)
        self.bad_dirs: set[str] = set()
        """Directories whose names are not UTF-8 (file notifications cannot watch their trees)."""
        self.left_out: list[str] = []
        self.unwatched: list[str] = []
        self.polled: dict[str, tuple[int, int]] = {}
        """Directories notifications do not cover → (inode, mtime) last seen; polled."""
        self.notify_restarts = 0
        self.notify_error: str | None = None
        """The last failure of file notifications (they were restarted since)."""
        self.notify_note: str | None = None
        """Why some directories are polled (the inotify limit), for ``agg status``."""
        self._notify_backoff = Backoff(defaults.WATCH_NOTIFY_RESTART_MIN_S, defaults.WATCH_NOTIFY_RESTART_MAX_S)
        self._notify_started = 0.0
        self._notify_failed_at: float | None = None
        self._notify_due = 0.0
        self._replan = False
        self.allowed: list[str] = []
        """The claude dirs, resolved: a transcript symlink is followed only into them."""
        now = time.monotonic()
        self._due = {
            "hot": now,
            "all": now + self.timings.stat_all_s,
            "rescan": now + self.timings.rescan_s,
            "roots": now + defaults.WATCH_MISSING_ROOT_S,
            "poll": now + defaults.WATCH_POLL_DIRS_S,
        }
        self._hot_until_ns = 0
        self._resets_seen = 0
        stop.on_set(self._wake)

    # --- lifecycle (see Service) -----------------------------------------------------------------
    def on_start(self) -> None:
        self.state.update(polling=self.poll, roots=self._roots_info())
        self._start_hints()

    def on_stop(self) -> None:
        if self.hints:
            self.hints.stop()

    def _wake(self) -> None:
        if self.hints:
            self.hints.wake()

    # --- serving -------------------------------------------------------------------------------
    def serve(self) -> None:
        assert self.buckets is not None
        self.tailers = [Tailer(store) for store in self.buckets]
        if self.serves == 1:
            why = "start"
        elif self.store_resets != self._resets_seen:
            why = "the store lost its keys"
        else:
            why = "reconnected"
        self._resets_seen = self.store_resets
        self._full_sync(why)
        self.serving()
        if why == "start":
            self.log.info(
                "watching %s: %d files",
                ", ".join(display_path(str(p)) for p in self.watched) or "(no claude dir yet)",
                len(self.tracked),
            )
        while not self.stop:
            if self.met_another_server():
                # A new connection reached another Redis process: one that restarted and lost its
                # last writes, or was restored from an older copy. Re-check every file against its
                # cursor (tests/process/test_live_faults.py).
                self._full_sync("reconnected")
            now = time.monotonic()
            timeout = max(0.0, min(self._next_due(), now + defaults.STATE_HEARTBEAT_S) - now)
            if self.hints:
                paths = self.hints.take(timeout)
            else:
                paths = set()
                self.stop.wait(timeout)
            if self.stop:
                break
            self._on_hints(paths)
            self._on_timers()
            self._mind_hints()
            self.check_due()
            if self.state.due(defaults.STATE_HEARTBEAT_S):
                self.state.update(**self.figures())

    def _next_due(self) -> float:
        due = min(self._due["all"], self._due["rescan"], self._due["roots"])
        if self.polled:
            due = min(due, self._due["poll"])
        if self._replan:
            due = 0.0
        elif self.hints is not None and self.hints.failed:
            due = min(due, self._notify_due if self._notify_failed_at is not None else 0.0)
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
                if self.left_out and os.path.dirname(path) in map(str, self.watched):
                    self._replan = True  # a new project: the notifications watch only the projects they were given
                self._scan([Path(path)])  # a new project or subagents dir: files may predate its watch

    def _on_timers(self) -> None:
        now = time.monotonic()
        now_ns = time.time_ns()
        due = self._due
        if now >= due["all"]:
            due["all"] = now + self.timings.stat_all_s
            due["hot"] = now + defaults.WATCH_STAT_HOT_S
            self._stat(list(self.tracked.values()))  # skipped files too: they are tried again
        elif now >= due["hot"]:
            due["hot"] = now + defaults.WATCH_STAT_HOT_S
            self._stat([t for t in self.tracked.values() if t.hot(now_ns)])
        if self.polled and now >= due["poll"]:
            due["poll"] = now + defaults.WATCH_POLL_DIRS_S
            self._poll_dirs()
        if now >= due["rescan"]:
            due["rescan"] = now + self.timings.rescan_s
            self._rescan()
        if now >= due["roots"]:
            due["roots"] = now + defaults.WATCH_MISSING_ROOT_S
            if self._watch_paths() != self.watched:
                self.log.info("claude dirs changed: %s", ", ".join(map(str, self._watch_paths())))
                self._start_hints()
                self._rescan()

    def _stat(self, files: list[Tracked]) -> None:
        for t in files:
            self._sync_if_changed(t)

    def _sync_if_changed(self, t: Tracked) -> None:
        try:
            st = os.stat(t.sf.path)
        except FileNotFoundError:
            # Deleted (or renamed away): its events stay in the store; its cursor stays in Redis
            # in case it comes back. Stop stat'ing it.
            self._untrack(t.sf.path)
            return
        except OSError as e:  # e.g. its directory is no longer searchable
            self._skip(t, f"unreadable: {e.strerror or e}")
            return
        if t.changed(st):
            self._sync(t, st)

    def _track(self, sf: SourceFile, root: str, *, force: bool = False) -> None:
        why = outside_link(sf.path, self.allowed)
        if why:
            self._skip_path(sf.path, why)
            return
        t = self.tracked.get(sf.path)
        if t is None:
            t = self.tracked[sf.path] = Tracked(sf, root)
        self._sync_if_changed(t) if not force else self._sync(t, None)

    def _untrack(self, path: str) -> None:
        self.tracked.pop(path, None)
        self.skipped.pop(path, None)
        self._said.pop(path, None)

    def _sync(self, t: Tracked, st: os.stat_result | None) -> None:
        assert self.buckets is not None
        if st is None:
            try:
                st = os.stat(t.sf.path)
            except FileNotFoundError:
                self._untrack(t.sf.path)
                return
            except OSError as e:
                self._skip(t, f"unreadable: {e.strerror or e}")
                return
        why = outside_link(t.sf.path, self.allowed)  # it may have been swapped for a link since
        if why:
            self._skip(t, why)
            return
        if self.hints:
            self.hints.heat()
        try:
            res = self.tailers[self.buckets.index_of(t.sf.project)].sync(t.sf)
        except OSError as e:  # an unreadable file (EIO, permissions changed): skip it, keep going
            self._skip(t, f"unreadable: {e.strerror or e}")
            return
        self.syncs += 1
        if res.skipped == "vanished":
            self._untrack(t.sf.path)
            return
        if res.skipped:
            self._skip(t, res.skipped)
            return
        self._remember(t, st)
        self._read(t, res)

    def _read(self, t: Tracked, res: FileResult) -> None:
        self.skipped.pop(t.sf.path, None)
        if self._said.pop(t.sf.path, None) is not None:
            self.log.info("%s is readable again: %d line(s) read", t.sf.display, res.lines)
        t.committed = res.offset
        if res.last_seq:
            self.floor.observe(res.last_seq)
        if res.events_added or res.revisions:
            self.last_ingest_at = now_iso()
        if res.reset:
            self.log.info("%s was %s: re-read from the start", t.sf.display, res.reset)
        if res.rejected:
            self.log.warning("%s: %d line(s) rejected (`agg rejects` lists them)", t.sf.display, res.rejected)

    def _skip(self, t: Tracked, reason: str) -> None:
        """``t`` could not (or must not) be read: say so once; it is tried again on every stat
        of all files and every rescan, until it is read
        (``tests/adversarial/test_files.py::test_a_file_unreadable_at_first_is_read_once_readable``)."""
        t.forget()
        self._skip_path(t.sf.path, reason)

    def _skip_path(self, path: str, reason: str) -> None:
        if self._said.get(path) != reason:
            self.log.warning("skipped %s: %s (tried again on every rescan)", display_path(path), reason)
            self._said[path] = reason
        self.skipped[path] = reason

    def _unskip_under(self, d: str) -> set[str]:
        """Forget the skipped directories and links under ``d`` before walking it again (the walk
        reports those still so; files are tried again on their own); returns them."""
        prefix = d.rstrip(os.sep) + os.sep
        out = {p for p in self.skipped if (p == d or p.startswith(prefix)) and p not in self.tracked}
        for path in out:
            self.skipped.pop(path)
        return out

    def _note(self, walk: Walk, cleared: set[str]) -> None:
        """Record what ``walk`` skipped; say which of ``cleared`` are readable now."""
        for path, reason in walk.skipped:
            self._skip_path(path, reason)
        for path in cleared - {p for p, _ in walk.skipped}:
            if self._said.pop(path, None) is not None and os.path.exists(path):
                self.log.info("%s is readable again", display_path(path))

    def _full_sync(self, why: str) -> None:
        """Walk the claude dirs and sync every file whose stat differs from its stored cursor."""
        assert self.store is not None
        self.met_another_server()  # what is met from here on is checked again
        # Said once: not again on each attempt while Redis refuses writes (OOM, MISCONF).
        level = logging.DEBUG if self.redis.down else logging.INFO
        if why != "start":
            self.resyncs += 1
            self.log.log(level, "re-checking every file against the cursors in Redis (%s)", why)
        started = time.monotonic()
        walk = Walk(dirs=[])
        cleared = set().union(*(self._unskip_under(str(w)) for w in self.watched))
        sources: list[tuple[SourceFile, str]] = []
        for watched in self.watched:
            sources += [(sf, str(watched)) for sf in iter_transcripts([watched], walk, allowed=self.roots)]
        assert self.buckets is not None
        cursors = self.buckets.cursors_for([sf for sf, _ in sources])
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
            fresh = cur is not None and (cur.ino, cur.size, cur.mtime, cur.off) == (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_size,
            )
            if fresh and sf.path not in self.skipped:
                assert cur is not None
                self._remember(t, st)  # fully committed and untouched since: nothing to read
                t.committed = cur.off
                continue
            self._sync(t, st)
            if self.stop:
                return
        for path in [p for p in self.tracked if p not in seen]:
            self._untrack(path)
        self._note(walk, cleared)
        self._review(walk)
        self.log.log(level, "%d files checked in %.2f s", len(sources), time.monotonic() - started)

    def _scan(self, dirs: list[Path], walk: Walk | None = None) -> None:
        """Track (and sync) transcripts under ``dirs`` that are new or changed."""
        walk = walk if walk is not None else Walk()
        cleared: set[str] = set()
        for d in dirs:
            if not d.exists():
                continue
            root = self._root_of(str(d))
            if root is None:
                continue
            cleared |= self._unskip_under(str(d))
            for sf in iter_transcripts([d], walk, allowed=self.roots):
                if sf.path in self.tracked:
                    self._sync_if_changed(self.tracked[sf.path])
                else:
                    self._track(sf, root)
                if self.stop:
                    break
        self._note(walk, cleared)

    def _rescan(self) -> None:
        """Walk every claude dir; then review what file notifications cover."""
        walk = Walk(dirs=[])
        self._scan(self.watched, walk)
        self._review(walk)

    def final(self) -> None:
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
        except Exception as e:
            if not (is_away(e) or isinstance(e, AggError)):
                raise
            self.log.warning("could not commit the last lines (%s); they will be read on the next start", first_line(e))

    # --- what file notifications cover ---------------------------------------------------------
    def _watch_paths(self) -> list[Path]:
        return [w for w in (watch_path(r) for r in self.roots) if w is not None]

    def _start_hints(self) -> None:
        if self.hints:
            self.hints.stop()
        self.watched = self._watch_paths()
        self.allowed = [resolved(str(r)) for r in self.roots]
        specs, self.left_out = plan(self.watched, self.bad_dirs)
        self.hints = self.hints_factory(specs, self.poll).start()
        self._notify_started = time.monotonic()
        self._replan = False
        if self.left_out:
            self.log.warning(
                "file notifications leave out %d directory tree(s) whose names are not UTF-8 (%s); polling them",
                len(self.left_out),
                ", ".join(display_path(d) for d in self.left_out[: defaults.WATCH_SKIPPED_SHOWN]),
            )

    def _mind_hints(self) -> None:
        """Restart file notifications that failed (with backoff) or must watch another set of dirs."""
        hints = self.hints
        if hints is None or not (hints.failed or self._replan):
            return
        now = time.monotonic()
        if not self._replan:
            if self._notify_failed_at is None:  # a new failure: restart after a backoff
                self._notify_failed_at = now
                if now - self._notify_started >= defaults.WATCH_NOTIFY_HEALTHY_S:
                    self._notify_backoff.reset()
                self._notify_due = now + self._notify_backoff.fail()
            if now < self._notify_due:
                return
            self.notify_restarts += 1
            self.notify_error = hints.error
        self._notify_failed_at = None
        self._start_hints()
        self._rescan()  # events were lost while they were down
        self.state.update(**self.figures())

    def _review(self, walk: Walk) -> None:
        """After a walk: restart notifications if a non-UTF-8 directory changed the plan; find the
        directories they do not cover."""
        dirs = walk.dirs or []
        bad = {d for d, _, _ in dirs if not decodable(d)}
        if bad != self.bad_dirs:
            self.bad_dirs = bad
            self._replan = True
        unwatched: list[str] = []
        watched = None if self.poll or self.hints is None or self.hints.failed else inotify_watched()
        if watched is not None and watched:
            unwatched = [d for d, dev, ino in dirs if (dev, ino) not in watched and not self._left_out(d)]
        if len(unwatched) != len(self.unwatched):
            limit = inotify_limit()
            if unwatched:
                self.notify_note = (
                    f"{len(unwatched)} of {len(dirs)} directories have no file notifications: the inotify "
                    f"watch limit ({limit}) is reached; they are polled every {defaults.WATCH_POLL_DIRS_S:g} s. "
                    f"Raise it: sudo sysctl fs.inotify.max_user_watches={max(524288, 2 * (limit or 0))}"
                )
                self.log.warning("%s", self.notify_note)
            else:
                self.notify_note = None
                self.log.info("every directory has file notifications again")
        self.unwatched = unwatched
        polled = [d for d, _, _ in dirs if self._left_out(d)] + unwatched
        self.polled = {d: self.polled.get(d) or _dir_sig(d) for d in polled}

    def _left_out(self, d: str) -> bool:
        return any(d == t or d.startswith(t.rstrip(os.sep) + os.sep) for t in self.left_out)

    def _poll_dirs(self) -> None:
        """Look at the directories notifications do not cover: new files there, and appends."""
        for d, seen in list(self.polled.items()):
            now = _dir_sig(d)
            if now != seen:
                self.polled[d] = now
                walk = Walk(dirs=[])
                self._scan([Path(d)], walk)
                for sub, _, _ in walk.dirs or []:
                    self.polled.setdefault(sub, _dir_sig(sub))
        for t in list(self.tracked.values()):
            if os.path.dirname(t.sf.path) in self.polled:
                self._sync_if_changed(t)

    # --- roots ---------------------------------------------------------------------------------
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

    def figures(self) -> dict[str, Any]:
        roots = self._roots_info()
        shown = sorted(self.skipped.items())[: defaults.WATCH_SKIPPED_SHOWN]
        return {
            "roots": roots,
            "files": len(self.tracked),
            "lag_bytes": sum(r["lag_bytes"] for r in roots),
            "last_ingest_at": self.last_ingest_at,
            "seq_high": self.floor.value,
            "syncs": self.syncs,
            "resyncs": self.resyncs,
            "store_resets": self.store_resets,
            "seq_floor_raised": self.floor.raised,
            "skipped": {
                "count": len(self.skipped),
                "first": [{"file": display_path(p), "reason": r} for p, r in shown],
            },
            "notify_error": (self.hints.error if self.hints else None) or self.notify_error,
            "notify_restarts": self.notify_restarts,
            "notify_polled_dirs": len(self.polled),
            "notify_unwatched": [display_path(d) for d in self.unwatched[: defaults.WATCH_SKIPPED_SHOWN]],
            "notify_note": self.notify_note,
        }


def _dir_sig(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_ino, st.st_mtime_ns)
