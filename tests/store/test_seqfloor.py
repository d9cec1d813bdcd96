"""The seq floor: a Redis that lost writes never hands out a seq again (script, hook, projector)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from aggregator import scripts
from aggregator.connection import client_from_url
from aggregator.ingest import ingest
from aggregator.keys import Keys
from aggregator.layout import iter_transcripts
from aggregator.projections import Projector
from aggregator.seqfloor import SeqFloor, raise_floor
from aggregator.store import Store
from devtools.agg import HOST
from devtools.redisproc import RedisProcess
from tests.support.live import append, line, record


def test_script_raises_only_when_behind(any_redis: Any) -> None:
    client = any_redis
    keys = Keys("agg")
    client.set(keys.seq, 10)
    assert raise_floor(client, keys, 7) == (False, 10)
    assert client.get(keys.seq) == b"10"
    assert raise_floor(client, keys, 25) == (True, 10)
    assert client.get(keys.seq) == b"25" and client.hget(keys.stats, "log_last") == b"25"
    assert client.hget(keys.stats, "seq_floor_raised") == b"1"
    assert client.eval(scripts.SEQ_FLOOR, 2, keys.seq, keys.stats, 25) == [0, 25]


def test_hook_raises_the_floor_before_the_first_command(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path
) -> None:
    """A fresh connection to a Redis that went back commits above what this process saw."""
    keys = Keys("agg")
    floor = SeqFloor(keys, tmp_path / "seq.json")
    floor.observe(500)
    floor.save()
    assert SeqFloor(keys, tmp_path / "seq.json").value == 500  # a restarted process remembers
    client = client_from_url(redis_server.url, **floor.client_options())
    store = Store(client, keys, HOST)
    src = tmp_path / "s.jsonl"
    append(src, line(record("s", 0)) + line(record("s", 1)))
    report = ingest(store, iter_transcripts([src]))
    # Raised once, before the first commit, by whichever of our connections (the ingest, or its
    # projecting child) reached Redis first.
    assert report.last_seq == 502 and store.stats()["seq_floor_raised"] == 1 and floor.connects >= 1
    assert [e.seq for e in store.entries_after(0)] == [501, 502]
    client.close()


def test_projector_crosses_a_large_gap(store: Store, tmp_path: Path) -> None:
    """Projections catch up across a raised floor far beyond one projection step."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append(a, line(record("a", 0)))
    ingest(store, iter_transcripts([a]))
    raise_floor(store.client, store.keys, 1_000_000)
    append(b, line(record("b", 0)) + line(record("b", 1, kind="assistant")))
    report = ingest(store, iter_transcripts([b]))
    assert report.last_seq == 1_000_002
    projector = Projector(store)
    assert projector.checkpoint() == 1_000_002
    live = projector.digest()
    assert projector.rebuild()["digest"] == live


class _Conn:
    """A redis-py connection as the connect hook sees it, to a server with ``run_id``."""

    host, port = "127.0.0.1", 1

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.asked = ""

    def on_connect(self) -> None:
        pass

    def send_command(self, *args: str) -> None:
        self.asked = args[1]

    def read_response(self) -> bytes:
        if self.asked == "memory":
            return b"maxmemory_policy:noeviction\r\n"
        return f"run_id:{self.run_id}\r\n".encode()


def test_a_server_met_again_after_another_counts_as_a_new_server_on_a_single_redis(tmp_path: Path) -> None:
    """A single Redis URL that reaches A, then B, then A again (a failover and back, A not
    restarted): A may lack what B took meanwhile, so each change counts, as before the cluster
    work (the watcher re-checks every file against its cursor on each)."""
    floor = SeqFloor(Keys("agg"), tmp_path / "floor")
    for run_id in ("a", "a", "b", "a"):
        floor.hook(_Conn(run_id))
    assert floor.connects == 4 and floor.servers == 3
