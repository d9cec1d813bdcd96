"""kill -9 of `agg search` while it builds the search index, at many points: the next catch-up gives an
index equal to one built in a single pass (same rows, same hits), and SQLite finds the file sound."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.search import search
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from devtools import gen_corpus
from devtools.agg import HOST, agg_env
from devtools.redisproc import RedisProcess

QUERIES = ["tailwind", '"session share"', "pomo*", "最新", "spotter bead", "Phoenix"]
MIDWAY = 3
"""Kills that must land inside a build (between its first and last step's commits)."""
ATTEMPTS = 40


def rows(index: SearchIndex) -> list[tuple[object, ...]]:
    return index.db.execute(
        "SELECT c.conv, d.id, d.part, d.seq, d.ts, d.agent FROM docs d JOIN convs c ON c.n = d.conv "
        "ORDER BY d.seq, d.part"
    ).fetchall()


def hits(store: Store, index: SearchIndex) -> list[list[tuple[str, str, str]]]:
    return [[(h["conv"], h["id"], h["role"]) for h in search(store, index, q, limit=10**9)["hits"]] for q in QUERIES]


@pytest.mark.slow
def test_kill_during_indexing_then_catch_up_gives_the_same_hits(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path
) -> None:
    root = tmp_path / "claude" / "projects"
    gen_corpus.generate(gen_corpus.default_source(), root, 40 * gen_corpus.MB, "copies", seed=3)
    store = Store(r, Keys("agg"), HOST)
    ingest(store, list(iter_transcripts([root])))
    last = store.last_seq()
    env = agg_env(redis_server, tmp_path)
    rng = random.Random(20261206)

    # A whole build and a run with nothing to build, to aim the kills inside the building part of
    # each run on this machine, however loaded.
    cmd = [sys.executable, "-m", "cli", "search", "x"]
    started = time.monotonic()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    full = time.monotonic() - started
    started = time.monotonic()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    idle = time.monotonic() - started
    path = SearchIndex.open(store, tmp_path / "data").path
    for p in path.parent.iterdir():
        p.unlink()

    # Kill builds until several kills have landed between two steps' commits; a build that
    # completes is thrown away so that the next run builds (and is killed) again.
    midway = attempts = cp = 0
    while midway < MIDWAY and attempts < ATTEMPTS:
        attempts += 1
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        time.sleep(idle + rng.uniform(0.1, 0.9) * max(0.0, full - idle) * (last - cp) / last)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cp = 0
        if path.exists():
            index = SearchIndex(path)
            cp = index.checkpoint()
            assert index.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            index.close()
        midway += proc.returncode == -signal.SIGKILL and 0 < cp < last
        if cp == last:
            for p in path.parent.iterdir():
                p.unlink()
            cp = 0
    assert midway >= MIDWAY, (midway, attempts)  # kills really landed inside builds

    resumed = SearchIndex.open(store, tmp_path / "data")
    resumed.catch_up(store)
    fresh = SearchIndex.open(store, tmp_path / "fresh")
    fresh.catch_up(store)
    assert resumed.checkpoint() == fresh.checkpoint() == last
    assert rows(resumed) == rows(fresh)
    assert resumed.size()["orphans"] == 0
    assert hits(store, resumed) == hits(store, fresh)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
