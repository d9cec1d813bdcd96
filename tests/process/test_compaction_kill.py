"""kill -9 of a sealing process at random points: every body stays readable, byte for byte."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from aggregator.compaction import Compactor
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.store import Store
from devtools.agg import HOST, REPO
from devtools.redisproc import RedisProcess
from tests.support.live import replayed

KILLS = 20
CHUNK_BYTES = 16 * 1024
"""Small chunks: a run is hundreds of seal steps, so that kills land between them."""

SEALER = """
import sys
import redis
from aggregator.compaction import Compactor
from aggregator.keys import Keys
from aggregator.store import Store
r = redis.Redis(unix_socket_path=sys.argv[1], password=sys.argv[2] or None)
print("go", flush=True)
Compactor(Store(r, Keys("agg"), "h"), chunk_bytes=int(sys.argv[3])).run(0)
"""


def _raw_left(store: Store) -> int:
    return sum(store.r.hlen(store.keys.body(c)) for c in store.conversations())


def _sealer(server: RedisProcess) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SEALER, str(server.socket_path), server.password or "", str(CHUNK_BYTES)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "go\n"  # past interpreter start-up
    return proc


@pytest.mark.slow
def test_kill_9_while_sealing_loses_and_changes_nothing(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path
) -> None:
    store = Store(r, Keys("agg"), HOST)
    ingest(store, iter_transcripts([corpus]))
    projector = Projector(store)
    projector.catch_up()
    want, digest, raw = replayed(store), projector.digest(), _raw_left(store)
    # One whole run, timed from its start-up's end, to aim the kills across a run on this machine
    # however loaded; then the store is brought back to unsealed by ingesting into a fresh database.
    proc = _sealer(redis_server)
    started = time.monotonic()
    assert proc.wait(timeout=120) == 0 and _raw_left(store) == 0
    full_run = time.monotonic() - started
    assert replayed(store) == want

    def unsealed() -> None:
        r.flushall()
        ingest(store, iter_transcripts([corpus]))
        projector.catch_up()

    unsealed()
    rng = random.Random(20261207)
    midway = attempts = 0
    while midway < KILLS and attempts < 4 * KILLS:
        attempts += 1
        proc = _sealer(redis_server)
        time.sleep(rng.uniform(0.0, 2 / KILLS) * full_run)  # each kill seals ~1/KILLS of the store
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _raw_left(store)
        midway += 0 < left < raw
        assert replayed(store) == want, "a body changed or went missing after a kill"
        assert projector.digest() == digest
        if left == 0:
            unsealed()  # all sealed before enough kills landed: again, from raw
    assert midway >= KILLS, f"only {midway} of {attempts} kills landed mid-way"
    Compactor(store).run(0)  # what the kills left is sealed by the next run
    assert _raw_left(store) == 0 and replayed(store) == want and projector.digest() == digest
