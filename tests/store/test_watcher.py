"""The watcher driven by a scripted notifier (its ``hints_factory`` seam, as watchfiles tests its
own loop with ``MockRustNotify``): which path makes a file be read — a hint, the stat timer, the
rescan after notifications restart — each shown on its own, against the real Redis, in process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aggregator.config import Settings, WatchTimings
from aggregator.lifecycle import StopFlag
from aggregator.live.notify import Spec
from aggregator.live.watcher import Watcher
from aggregator.store import Store
from devtools.agg import HOST, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import append, record
from tests.support.records import line


@dataclass
class ScriptedNotifier:
    """A notifier the test drives: :meth:`emit` hands the watcher paths, :meth:`fail` ends it."""

    specs: list[Spec]
    error: str | None = None
    failed: bool = False
    stopped: bool = False
    pending: set[str] = field(default_factory=set)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> ScriptedNotifier:
        return self

    def stop(self) -> None:
        self.stopped = True

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def heat(self) -> None:
        pass

    def take(self, timeout: float) -> set[str]:
        with self.cond:
            if not self.pending:
                self.cond.wait(timeout)
            out, self.pending = self.pending, set()
            return out

    def emit(self, *paths: Path) -> None:
        with self.cond:
            self.pending.update(map(str, paths))
            self.cond.notify_all()

    def fail(self, error: str) -> None:
        with self.cond:
            self.error, self.failed = error, True
            self.cond.notify_all()


@dataclass
class Rig:
    watcher: Watcher
    notifiers: list[ScriptedNotifier]
    project: Path

    @property
    def notifier(self) -> ScriptedNotifier:
        return self.notifiers[-1]


@pytest.fixture
def rig(redis_server: RedisProcess, store: Store, tmp_path: Path) -> Iterator[Rig]:
    project = tmp_path / "claude" / "projects" / "p"
    project.mkdir(parents=True)
    notifiers: list[ScriptedNotifier] = []

    def factory(specs: list[Spec], poll: bool) -> ScriptedNotifier:
        notifiers.append(ScriptedNotifier(specs))
        return notifiers[-1]

    settings = Settings(
        redis_url=redis_server.url, data_dir=tmp_path / "data", claude_dirs=[tmp_path / "claude"], host=HOST
    )
    stop = StopFlag()
    # No rescan and no stat of every file for an hour: what is read, a hint or a restart made read.
    watcher = Watcher(settings, stop, timings=WatchTimings(rescan_s=3600, stat_all_s=3600), hints_factory=factory)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    wait_until(lambda: watcher.state.data.get("state") == "watching", "the watcher")
    try:
        yield Rig(watcher, notifiers, project)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and watcher.state.data["state"] == "stopped"
    assert all(n.stopped for n in notifiers)


def _write(path: Path, session: str, n: int) -> None:
    append(path, line(record(session, n)))


def test_a_new_file_is_read_when_a_hint_names_it(rig: Rig, store: Store) -> None:
    a = rig.project / "a.jsonl"
    _write(a, "a", 0)
    assert rig.notifier.specs == [Spec((str(rig.project.parent),))]  # the projects dir, recursively
    rig.notifier.emit(a)
    wait_until(lambda: store.stats()["events"] == 1, "the hinted file")


def test_an_append_without_a_hint_is_found_by_the_stat_timer(rig: Rig, store: Store) -> None:
    a = rig.project / "a.jsonl"
    _write(a, "a", 0)
    rig.notifier.emit(a)
    wait_until(lambda: store.stats()["events"] == 1, "the hinted file")
    _write(a, "a", 1)  # no hint: a recently changed tracked file is stat'ed every second
    wait_until(lambda: store.stats()["events"] == 2, "the append, by the stat timer")


def test_failed_notifications_are_restarted_and_what_they_missed_is_rescanned(rig: Rig, store: Store) -> None:
    first = rig.notifier
    first.fail('Unable to decode path "/x/bad\\xFF.jsonl" to string')
    _write(rig.project / "missed.jsonl", "missed", 0)  # while notifications are down: no hint for it
    wait_until(lambda: len(rig.notifiers) == 2, "a new notifier")
    assert first.stopped
    wait_until(lambda: store.stats()["events"] == 1, "the file the failed notifier missed, by the rescan")
    assert rig.watcher.notify_restarts == 1 and rig.watcher.notify_error == first.error
    b = rig.project / "b.jsonl"
    _write(b, "b", 0)
    rig.notifier.emit(b)
    wait_until(lambda: store.stats()["events"] == 2, "a file hinted by the new notifier")
