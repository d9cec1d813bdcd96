"""One-shot backfill: sync every transcript under some paths, then bring projections up to date.

:func:`discover` finds the transcripts and what was skipped (an unreadable directory, a transcript
symlink out of the dirs given); :func:`ingest` reads them and reports, in :class:`IngestReport`,
every file it could not read too (``tests/adversarial/test_files.py``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.buckets import Buckets
from aggregator.connection import as_agg_error, is_away
from aggregator.errors import AggError, EvictingRedis, RedisUnavailable
from aggregator.layout import SourceFile, Walk, display_path, iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.tailer import FileResult, Tailer

COUNTED = ("lines", "events_added", "duplicates", "revisions", "rejected", "forgotten", "bytes")


@dataclass
class IngestReport:
    """Totals of one ingest run (the object ``agg ingest --json`` prints)."""

    files: int = 0
    lines: int = 0
    events_added: int = 0
    duplicates: int = 0
    revisions: int = 0
    rejected: int = 0
    forgotten: int = 0
    """Lines of forgotten conversations (``agg forget``) dropped by their tombstone."""
    bytes: int = 0
    files_reset: int = 0
    files_skipped: int = 0
    seconds: float = 0.0
    sync_seconds: float = 0.0
    """Of ``seconds``: until every file was committed (the rest: the projections' last catch-up)."""
    last_seq: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add(self, r: FileResult) -> None:
        self.files += 1
        for name in COUNTED:
            setattr(self, name, getattr(self, name) + getattr(r, name))
        self.files_reset += r.reset is not None
        if r.skipped:
            self.skip(r.file, r.skipped)
        self.last_seq = max(self.last_seq, r.last_seq)

    def skip(self, path: str, reason: str) -> None:
        """Count something discovery could not or would not read."""
        self.files_skipped += 1
        self.skipped.append({"file": display_path(path), "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["seconds"] = round(self.seconds, 3)
        d["sync_seconds"] = round(self.sync_seconds, 3)
        return d

    def summary(self) -> str:
        """The one line ``agg ingest`` prints (skipped paths follow on stderr, one per line)."""
        mb = self.bytes / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        skipped = f"; {self.files_skipped} skipped (below)" if self.files_skipped else ""
        forgotten = f", {self.forgotten} forgotten" if self.forgotten else ""
        return (
            f"{self.files} files, {self.lines} lines: {self.events_added} new events, "
            f"{self.revisions} revisions, {self.duplicates} duplicates, "
            f"{self.rejected} rejected{forgotten} ({mb:.1f} MB in {self.seconds:.2f} s, {rate:.1f} MB/s){skipped}"
        )


def discover(paths: list[Path]) -> tuple[list[SourceFile], Walk]:
    """The transcripts under ``paths`` and what the walk skipped (pass it on to :func:`ingest`)."""
    walk = Walk()
    return list(iter_transcripts(paths, walk)), walk


def pending_bytes(store: Store, sources: list[SourceFile]) -> int:
    """Bytes of ``sources`` beyond their committed offsets (for a progress bar)."""
    _, cursors = store.cursors_for([s.path for s in sources])
    total = 0
    for s, c in zip(sources, cursors, strict=True):
        try:
            size = os.stat(s.path).st_size
        except OSError:
            continue
        total += max(0, size - (c.off if c else 0))
    return total


def ingest(
    store: Store,
    sources: Iterable[SourceFile],
    *,
    tailer: Tailer | None = None,
    progress: Callable[[int], None] | None = None,
    project: bool = True,
    report: IngestReport | None = None,
    walk: Walk | None = None,
) -> IngestReport:
    """Sync every file of ``sources`` into ``store`` and (if ``project``) catch projections up.

    ``report`` (a new one if None) is filled in as files finish, so a caller interrupted midway
    can still tell what was done.

    Projections are caught up by a forked child while the files are synced (on a platform with
    ``fork``): parsing holds one core and Redis part of the other, and projecting the log as it
    grows uses what is left. Projectors may race (their steps move the checkpoint by
    compare-and-set), so the final catch-up here only applies what the child had not. ``walk``:
    what discovery skipped, reported with the files that could not be read.
    """
    started = time.perf_counter()
    tailer = tailer or Tailer(store)
    report = report if report is not None else IngestReport()
    for path, reason in walk.skipped if walk else []:
        report.skip(path, reason)
    helper = _ProjectorProcess(store) if project else None
    try:
        # One stream for all files: Redis stores the end of one file while the next is read.
        for result in tailer.sync_all(sources, progress):
            report.add(result)
        report.sync_seconds = time.perf_counter() - started
    finally:
        if helper:
            helper.stop()
    if project:
        Projector(store).catch_up()
    report.seconds = time.perf_counter() - started
    return report


def ingest_buckets(
    buckets: Buckets,
    sources: Iterable[SourceFile],
    *,
    progress: Callable[[int], None] | None = None,
    report: IngestReport | None = None,
    walk: Walk | None = None,
    failover_wait_s: float = defaults.CLUSTER_FAILOVER_WAIT_S,
) -> IngestReport:
    """:func:`ingest` into each bucket the files of its projects (one bucket on a single Redis),
    bucket after bucket, into one report.

    On a Redis Cluster a master may die mid-ingest and a replica lacking its last writes take
    over (``tests/cluster/test_failover.py``): see :class:`_ClusterIngest`.
    """
    if not buckets.cluster:
        return ingest(buckets.stores[0], sources, progress=progress, report=report, walk=walk)
    report = report if report is not None else IngestReport()
    started = time.perf_counter()
    groups: dict[int, list[SourceFile]] = {}
    for sf in sources:
        groups.setdefault(buckets.index_of(sf.project), []).append(sf)
    groups = groups or {0: []}  # no files: still report what the walk skipped, catch projections up
    try:
        _ClusterIngest(buckets, groups, progress, walk, failover_wait_s).run(report)
    finally:
        buckets.save_floors()
    report.seconds = time.perf_counter() - started
    return report


class _ClusterIngest:
    """:func:`ingest` of each bucket of a cluster store, through failovers.

    A bucket whose master goes away mid-ingest (``kill -9``: connection refused, then MOVED,
    CLUSTERDOWN, TRYAGAIN while a replica takes over) is ingested again, from the cursors its new
    master holds, once the cluster says where its slot is now — for up to ``wait_s``, then the
    error is raised (one line; the next run continues from the cursors). A bucket ingested
    earlier on a master that has died since is ingested again too: its new master may lack the
    last writes. What a replica lacked is read again from the files; the buckets' seq floors
    (:meth:`Buckets.keep_floors`) keep them from handing a seq out twice.

    The report's files and skipped paths are those of each bucket's last attempt (over all its
    files); its line counts add every attempt up: lines committed before a failover and again
    after it count twice, and those of a file cut by a failover before it was done not at all.
    """

    def __init__(
        self,
        buckets: Buckets,
        groups: dict[int, list[SourceFile]],
        progress: Callable[[int], None] | None,
        walk: Walk | None,
        wait_s: float,
    ) -> None:
        self.buckets = buckets
        self.groups = groups
        self.progress = progress
        self.walk = walk
        self.wait_s = wait_s
        self.last: dict[int, IngestReport] = {}  # each bucket's last, successful attempt
        self.deadline: float | None = None
        """Until when the cluster is waited for: set by a failure, cleared by the next success."""

    def run(self, report: IngestReport) -> None:
        """Ingest every bucket into ``report``, filled in as buckets finish (an interrupted run
        can tell what was done)."""
        first = min(self.groups)
        todo = sorted(self.groups)
        while todo:
            served: dict[int, str] = {}
            for n in todo:
                served[n] = self.bucket(n, self.walk if n == first else None, report)
            todo = self.moved(served)

    def bucket(self, n: int, walk: Walk | None, report: IngestReport) -> str:
        """Ingest bucket ``n``, again while its master goes away; returns the master it was
        ingested into, as known before the last attempt: what happens during one (the client
        learning of a failover from a read it retried on its own) must not hide a master that
        took writes and died since."""
        backoff = Backoff(cap=defaults.CLUSTER_RETRY_MAX_S)
        while True:
            attempt = IngestReport()
            node = self.buckets.node_of(n)
            try:
                ingest(self.buckets.stores[n], self.groups[n], progress=self.progress, report=attempt, walk=walk)
            except (AggError, redis.RedisError, OSError) as e:
                _add_counts(report, attempt)
                if not is_away(e) or isinstance(e, EvictingRedis):  # a setting, not a failover: said at once
                    raise
                self.wait(
                    RedisUnavailable(
                        f"{as_agg_error(e)}; the Redis Cluster did not recover in {self.wait_s:.0f} s (no replica "
                        "took the master's place?): what was committed is kept, and the next agg ingest continues"
                    )
                )
                time.sleep(backoff.fail())
                self.refresh()
                continue
            self.deadline = None
            _add_counts(report, attempt)
            before = self.last.get(n)
            if before is not None:  # done again after a failover: its files count once
                report.files -= before.files
                report.files_reset -= before.files_reset
                report.files_skipped -= before.files_skipped
                report.skipped = [s for s in report.skipped if s not in before.skipped]
                report.sync_seconds -= before.sync_seconds
            report.files += attempt.files
            report.files_reset += attempt.files_reset
            report.files_skipped += attempt.files_skipped
            report.skipped += attempt.skipped
            report.last_seq = max(report.last_seq, attempt.last_seq)
            report.sync_seconds += attempt.sync_seconds
            self.last[n] = attempt
            return node

    def wait(self, error: AggError) -> None:
        """Raise ``error`` (one line) if the cluster has been waited for long enough."""
        now = time.monotonic()
        self.deadline = self.deadline if self.deadline is not None else now + self.wait_s
        if now >= self.deadline:
            raise error from None

    def moved(self, served: dict[int, str]) -> list[int]:
        """The buckets (of ``served``: bucket → the master that took its writes) whose master has
        changed since: a replica took over, maybe without the last writes. Waits while a master
        that took some does not answer (its replica may be about to take over) — ``agg ingest``
        does not end with its writes on a dead node alone."""
        backoff = Backoff(cap=defaults.CLUSTER_RETRY_MAX_S)
        while True:
            self.refresh()
            now = {n: self.buckets.node_of(n) for n in served}
            dead = {node for node in set(served.values()) if not self.buckets.node_answers(node)}
            waiting = sorted({node for n, node in served.items() if node in dead and now[n] == node})
            if not waiting:
                self.deadline = None
                return [n for n in served if now[n] != served[n]]
            self.wait(
                RedisUnavailable(
                    f"the Redis Cluster master {waiting[0]} does not answer and no replica took its place "
                    f"in {self.wait_s:.0f} s; what it took is kept if it comes back, and the next agg ingest "
                    "reads the rest again"
                )
            )
            time.sleep(backoff.fail())

    def refresh(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # none answers yet: the next attempt says
            self.buckets.refresh()


def _add_counts(report: IngestReport, attempt: IngestReport) -> None:
    for name in COUNTED:
        setattr(report, name, getattr(report, name) + getattr(attempt, name))


def pending_bytes_all(buckets: Buckets, sources: list[SourceFile]) -> int:
    """:func:`pending_bytes` over every bucket."""
    return sum(pending_bytes(b, [s for s in sources if buckets.for_project(s.project) is b]) for b in buckets)


class _ProjectorProcess:
    """A forked child applying the log to the projections until told to stop."""

    def __init__(self, store: Store) -> None:
        self.proc: multiprocessing.process.BaseProcess | None = None
        if "fork" not in multiprocessing.get_all_start_methods():
            return
        ctx = multiprocessing.get_context("fork")
        # A pipe, not a multiprocessing.Event, says "stop": the child sees EOF when the parent
        # closes its end or dies, however it dies. An Event shares a lock, and a parent killed
        # with -9 while holding it (inside Event.set) left the child blocked on it for good
        # (tests/process/test_kill.py::test_kill_9_at_random_points_loses_and_doubles_nothing).
        self.stop_reader, self.stop_writer = ctx.Pipe(duplex=False)
        # redis-py pools notice the new pid and open their own connections in the child.
        self.proc = ctx.Process(target=_project_until, args=(store, self.stop_reader, self.stop_writer), daemon=True)
        # Ctrl-C reaches the whole process group, this child too, which the parent stops itself:
        # the child ignores SIGINT, and the signal stays blocked from the fork until it does, since
        # one landing in between printed the child's own KeyboardInterrupt traceback under the
        # parent's one line
        # (tests/process/test_rejects_and_interrupts.py::test_ctrl_c_during_ingest_keeps_what_was_committed).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.stop_reader.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.stop_writer.close()
            self.proc.join()


def _project_until(store: Store, stop: Connection, parent_end: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent_end.close()  # else the child's own copy of the writing end would keep EOF away
    projector = Projector(store)
    try:
        # One step at a time, so that the child ends soon after a parent killed with -9 (whose
        # work it would otherwise go on with alone: harmless, but a process left behind).
        while not stop.poll(0):
            if projector.catch_up(max_steps=1) == 0:
                stop.poll(defaults.INGEST_PROJECT_POLL_S)
    except (AggError, redis.RedisError, OSError):
        # Redis refused or went away: the parent meets it too and says so in one line, or its
        # final catch-up redoes what is left here. A traceback from this child would only repeat
        # it (tests/adversarial/test_redis.py::test_a_redis_error_mid_ingest_is_one_line_without_the_childs_traceback).
        sys.exit(1)
