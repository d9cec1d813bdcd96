"""kill -9 of `agg ingest` at many random points, then one full run == one clean run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.store import Store
from devtools.agg import HOST, agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support import oracle

KILLS = 24


@pytest.mark.slow
def test_kill_9_at_random_points_loses_and_doubles_nothing(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    store = Store(r, Keys("agg"), HOST)
    # Entries of one conversation spread over several files are ordered by file read order.
    exp = oracle.read([Path(sf.path) for sf in iter_transcripts([corpus])])
    rng = random.Random(20261122)
    progress: list[int] = []
    # One clean run first, to aim the kills across a whole run on this machine, however loaded.
    started = time.monotonic()
    run_agg(["ingest", str(corpus), "--json"], env)
    full_run = time.monotonic() - started
    r.flushall()
    killed = attempts = 0
    while killed < KILLS and attempts < 3 * KILLS:
        attempts += 1
        before = store.stats()["lines"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest", str(corpus), "--json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.3, 1.0) * full_run)  # past interpreter start-up, before the end
        try:
            children = psutil.Process(proc.pid).children(recursive=True)  # the projecting child
        except psutil.NoSuchProcess:
            children = []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, "a child of the killed ingest was left behind"
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            progress.append(store.stats()["lines"] - before)  # lines this run committed before dying
        if store.stats()["lines"] == exp.lines:
            r.flushall()  # finished before the kill: start over so the next kill lands mid-ingest
    assert killed == KILLS
    # Many kills landed while lines were being committed (not only during interpreter start-up).
    assert sum(1 for n in progress if n > 0) >= KILLS // 3, progress

    run_agg(["ingest", str(corpus), "--json"], env)

    stats = store.stats()
    assert (stats["events"], stats["revisions"], stats["duplicates"], stats["rejected"], stats["lines"]) == (
        exp.events,
        exp.revisions,
        exp.duplicates,
        exp.rejected,
        exp.lines,
    )
    assert store.last_seq() == exp.events + exp.revisions  # no seq was spent twice
    assert sorted(store.conversations()) == sorted(exp.order)
    for conv, ids in exp.order.items():
        got = list(store.replay(conv))
        assert [eid for eid, _ in got] == ids
        assert [body for _, body in got] == [exp.versions[(conv, eid)][-1] for eid in ids]
    seqs = [e.seq for e in store.entries_after(0)]
    assert seqs == list(range(1, len(seqs) + 1))
