"""Redis turning hostile under the live parts, for real: a store flushed under a running watcher,
`maxmemory` reached (OOM), the AOF's disk full (MISCONF), Redis going away while nothing changes.

Each test runs its own redis-server and real `agg watch` / `agg writer` processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.faults import fill, tmpfs
from tests.support.live import Agg, Poller, append, file_lines, record, replayed, state
from tests.support.records import line


@dataclass
class Live:
    tmp: Path
    redis: RedisProcess
    env: dict[str, str]
    store: Store
    watch: Agg
    writer: Agg
    poller: Poller

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    def session(self, name: str, count: int, *, first: int = 0, size: int = 0) -> Path:
        """Append ``count`` records to session ``name`` (each padded to about ``size`` bytes)."""
        path = self.tmp / "claude" / "projects" / "p" / f"{name}.jsonl"
        for i in range(first, first + count):
            append(path, line(record(name, i, text="x" * size if size else None)))
        return path

    def all_lines(self) -> int:
        return sum(len(file_lines(p)) for p in (self.tmp / "claude" / "projects").rglob("*.jsonl"))

    def stored_exactly(self) -> None:
        """Every line on disk stored once, in file order."""
        stored = replayed(self.store)
        for path in (self.tmp / "claude" / "projects").rglob("*.jsonl"):
            assert stored[path.stem] == file_lines(path), path.stem
        assert self.store.stats()["events"] == self.all_lines()


def _live(tmp_path: Path, server: RedisProcess, output: Path | None = None) -> Iterator[Live]:
    env = agg_env(server, tmp_path)
    (tmp_path / "claude" / "projects" / "p").mkdir(parents=True)
    out = output or tmp_path / "data" / "current.json"
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    writer = Agg(["writer", "--interval", "0.1", "--output", str(out)], env, tmp_path, name="writer").start()
    poller = Poller(out)
    poller.start()
    live = Live(tmp_path, server, env, Store(server.client(), Keys("agg"), HOST), watch, writer, poller)
    wait_until(lambda: state(live.data, "watch").get("state") == "watching", "the watcher")
    try:
        yield live
        for p in (watch, writer):
            assert p.alive(), f"agg {p.name} died:\n{p.log()[-3000:]}"
            assert p.stop() == 0
            assert "Traceback" not in p.log(), p.log()[-3000:]
        assert live.poller.bad == [] and live.poller.seqs == sorted(live.poller.seqs)
    finally:
        poller.stop.set()
        for p in (watch, writer):
            p.__exit__()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = RedisProcess(tmp_path / "redis", password="live-pw").start()
    try:
        yield from _live(tmp_path, server)
    finally:
        server.kill()


def _flush_and_check(live: Live, *, append_after: bool) -> None:
    for name in ("a", "b", "c"):
        live.session(name, 5)
    wait_until(lambda: live.store.stats()["events"] == 15, "the first lines")
    high = live.store.last_seq()
    r = live.redis.client()
    r.flushall()  # the store loses every key; no connection is dropped
    if append_after:
        live.session("a", 2, first=5)  # a commit to the flushed store: refused, then everything read again
    wait_until(lambda: live.store.stats()["events"] == live.all_lines(), "every file to be read again", timeout=60)
    entries = list(live.store.entries_after(0))
    assert entries and min(e.seq for e in entries) > high  # no seq handed out twice
    live.stored_exactly()
    wait_until(lambda: state(live.data, "watch").get("store_resets", 0) >= 1, "the watcher to report it")
    assert "the store lost its keys" in live.watch.log()


def test_a_flushed_store_is_noticed_and_resynced(live: Live) -> None:
    """FLUSHALL under a running watcher, then an append: the commit is refused (the store's
    identity is gone), the seq floor raised, and every file read again — not only the one that
    changed, and never under a seq already handed out."""
    _flush_and_check(live, append_after=True)


def test_a_flushed_store_is_noticed_while_nothing_changes(live: Live) -> None:
    """FLUSHALL with no file changing afterwards: the periodic identity check notices it."""
    _flush_and_check(live, append_after=False)


def test_watch_and_writer_wait_out_oom_and_resume(live: Live) -> None:
    """`maxmemory` reached (noeviction): both parts wait (state says why), nothing is lost once
    memory comes back."""
    live.session("a", 3)
    wait_until(lambda: live.store.stats()["events"] == 3, "the first lines")
    r = live.redis.client()
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(used + 200_000))
    live.session("a", 20, first=3, size=50_000)  # ~1 MB: more than the room left
    wait_until(lambda: "OOM" in (state(live.data, "watch").get("error") or ""), "the watcher to wait for memory")
    assert state(live.data, "watch")["state"] == "waiting for Redis"
    status = run_agg(["status"], live.env, check=False).stdout
    assert "waiting for Redis" in status and "OOM" in status
    time.sleep(2)  # a few backoff rounds
    assert live.watch.alive() and live.writer.alive()
    r.config_set("maxmemory", "0")
    wait_until(lambda: live.store.stats()["events"] == 23, "the lines held back", timeout=60)
    wait_until(lambda: state(live.data, "watch").get("state") == "watching", "the watcher to say it is back")
    live.stored_exactly()
    assert "is back" in live.watch.log()
    wait_until(lambda: live.poller.seqs and live.poller.seqs[-1] >= live.store.last_seq(), "a snapshot of it all")


def test_watch_and_writer_wait_out_a_full_aof_disk(tmp_path: Path) -> None:
    """The AOF's disk fills up (MISCONF): both parts wait; when space comes back Redis writes
    again by itself and every line is stored once."""
    with tmpfs(tmp_path / "disk", "16m") as disk:
        # appendfsync everysec (a failed write with "always" makes Redis exit); no AOF rewrite.
        server = RedisProcess(disk / "redis", password="aof-pw", extra={"auto-aof-rewrite-percentage": "0"}).start()
        gen = _live(tmp_path, server)
        try:
            live = next(gen)
            live.session("a", 3)
            wait_until(lambda: live.store.stats()["events"] == 3, "the first lines")
            filler = fill(disk, leave=64 << 10)
            live.session("a", 20, first=3, size=20_000)
            wait_until(lambda: "MISCONF" in (state(live.data, "watch").get("error") or ""), "the watcher to wait")
            time.sleep(2)
            assert live.watch.alive() and live.writer.alive()
            filler.unlink()
            wait_until(lambda: live.store.stats()["events"] == 23, "the lines held back", timeout=90)
            live.stored_exactly()
            with pytest.raises(StopIteration):
                next(gen)  # stops the parts and checks they ended cleanly
        finally:
            gen.close()
            server.kill()


def test_status_never_shows_a_watcher_as_watching_that_cannot_reach_redis(live: Live) -> None:
    """Redis goes away while no file changes: within a check interval the watcher's own state
    says it is waiting — `agg status` does not show it as watching."""
    live.session("a", 2)
    wait_until(lambda: live.store.stats()["events"] == 2, "the first lines")
    other = run_agg(["--redis-url", "redis://127.0.0.1:1", "status"], live.env, check=False)
    assert other.returncode == 3
    (watcher,) = [ln for ln in other.stdout.splitlines() if ln.startswith("watcher ")]
    assert "another Redis: unix://" in watcher  # its word is about its own Redis, not this one
    live.redis.kill()
    wait_until(lambda: state(live.data, "watch").get("state") == "waiting for Redis", "the watcher to notice")
    out = run_agg(["status", "--json"], live.env, check=False)
    assert out.returncode == 3
    assert json.loads(out.stdout)["watcher"]["state"] == "waiting for Redis"
    live.redis.start()
    wait_until(lambda: state(live.data, "watch").get("state") == "watching", "the watcher to come back")
