"""The quick client (aggregator/quickredis.py) on a real server: the values redis-py returns, and a
hand-over (QuickFallback) for everything else; RQ's counts read from RQ's keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis._parsers.helpers import parse_info as redis_py_parse_info
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry

from aggregator import scripts
from aggregator.config import Settings
from aggregator.endpoint import plain
from aggregator.errors import QuickFallback
from aggregator.keys import Keys, RQKeys
from aggregator.quickredis import QuickRedis, open_quick, parse_info
from aggregator.store import Store
from devtools.redisproc import RedisProcess
from workers.status import rq_counts

K = Keys("agg")


@pytest.fixture
def quick(redis_server: RedisProcess, r: redis.Redis) -> Iterator[QuickRedis]:
    target = plain(redis_server.url)
    assert target is not None
    client = QuickRedis.connect(target, scripts.READ_ONLY)
    yield client
    client.close()


@pytest.fixture
def filled(r: redis.Redis) -> redis.Redis:
    r.set("s", b"v\x00\xff")
    r.hset("h", mapping={"a": "1", "b": b"\xfe"})
    r.sadd("set", "x", "y", b"\x00")
    r.zadd("z", {"m1": 1.5, "m2": -2, "m3": 1e12})
    r.rpush("l", "a", "b", "c")
    return r


def test_reads_return_what_redis_py_returns(filled: redis.Redis, quick: QuickRedis) -> None:
    r: Any = filled
    q: Any = quick
    for name, args in [
        ("get", ("s",)),
        ("get", ("missing",)),
        ("hget", ("h", "b")),
        ("hget", ("h", "zz")),
        ("hgetall", ("h",)),
        ("hgetall", ("missing",)),
        ("hmget", ("h", ["a", "zz", "b"])),
        ("exists", ("s", "h", "missing")),
        ("smembers", ("set",)),
        ("scard", ("set",)),
        ("zcard", ("z",)),
        ("zcount", ("z", 0, 100)),
        ("llen", ("l",)),
        ("zrange", ("z", 0, -1)),
    ]:
        assert getattr(q, name)(*args) == getattr(r, name)(*args), name
    assert [tuple(x) for x in q.zrange("z", 0, 1, withscores=True)] == [
        tuple(x) for x in r.zrange("z", 0, 1, withscores=True)
    ]
    assert q.ping() is True
    for section in ("server", "memory", "clients", "keyspace"):
        mine, theirs = q.info(section), r.info(section)
        for volatile in ("uptime_in_seconds", "uptime_in_days", "lru_clock", "server_time_usec"):
            mine.pop(volatile, None), theirs.pop(volatile, None)
        assert mine.keys() == theirs.keys(), section
        assert mine["redis_version" if section == "server" else next(iter(mine))] is not None


def test_info_parses_as_redis_py_parses(quick: QuickRedis) -> None:
    raw: bytes = quick._call("INFO", "everything")
    assert raw and parse_info(raw) == redis_py_parse_info(raw.decode())


def test_a_pipeline_answers_in_order(filled: redis.Redis, quick: QuickRedis) -> None:
    p = quick.pipeline(transaction=False)
    p.zcard("z").hgetall("h").zrange("z", 0, 0, withscores=True).hmget("h", "a", "b").llen("l").scard("set")
    assert p.execute() == [3, {b"a": b"1", b"b": b"\xfe"}, [(b"m2", -2.0)], [b"1", b"\xfe"], 3, 3]
    assert quick.pipeline(transaction=False).execute() == []


def test_read_only_scripts_run_and_reload_after_a_script_flush(r: redis.Redis, quick: QuickRedis) -> None:
    r.hset(K.file("a"), mapping={"host": "h", "off": "7"})
    store = Store(quick, K, "h")  # type: ignore[arg-type]
    assert store.hmget_many([K.file("a"), K.file("b")], ["host", "off"]) == [[b"h", b"7"], [None, None]]
    r.script_flush()
    assert store.hmget_many([K.file("a")], ["off"]) == [[b"7"]]  # NOSCRIPT: sent whole, as redis-py does


def test_anything_else_hands_over_to_redis_py(r: redis.Redis, quick: QuickRedis) -> None:
    q: Any = quick
    with pytest.raises(QuickFallback):
        q.set("k", "v")
    with pytest.raises(QuickFallback):
        q.xrange("agg:log")
    with pytest.raises(QuickFallback):
        q.pipeline()  # a transaction
    with pytest.raises(QuickFallback):
        q.pipeline(transaction=False).xrange("agg:log")  # the store reads the log in pipelines
    with pytest.raises(QuickFallback):
        q.register_script(scripts.INGEST)(keys=["x"], args=["y"])
    with pytest.raises(QuickFallback):
        q.register_script("return redis.call('SET', KEYS[1], 'x')")(keys=["k"])
    r.set("str", "not a hash")
    with pytest.raises(QuickFallback):
        q.hget("str", "a")  # WRONGTYPE: an error reply
    assert r.get("k") is None  # nothing was written


def test_connection_failures_hand_over(redis_server: RedisProcess, tmp_path: Any) -> None:
    target = plain(redis_server.url.replace("password=test-secret-pw", "password=wrong"))
    assert target is not None
    with pytest.raises(QuickFallback):
        QuickRedis.connect(target, {})
    nowhere = plain(f"unix://{tmp_path}/none.sock")
    assert nowhere is not None
    with pytest.raises(QuickFallback):
        QuickRedis.connect(nowhere, {})


def test_open_quick_hands_over_on_an_evicting_redis(redis_server: RedisProcess, r: redis.Redis) -> None:
    settings = Settings(redis_url=redis_server.url)
    open_quick(settings).close()
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(QuickFallback):
            open_quick(settings)
    finally:
        r.config_set("maxmemory-policy", "noeviction")


def rq_view(client: redis.Redis, queue: str) -> tuple[int, int, int, int]:
    q = Queue(queue, connection=client)
    return q.count, StartedJobRegistry(queue=q).count, FailedJobRegistry(queue=q).count, Worker.count(queue=q)


def test_rq_counts_are_rqs(r: redis.Redis, quick: QuickRedis) -> None:
    name = Keys("agg").turns_queue
    rk = RQKeys(name)
    later = time.time() + 3600
    r.rpush(rk.queue, "j1", "j2")
    r.zadd(rk.started, {"j3:e1": later})
    r.zadd(rk.failed, {"j4": later, "j5": later})
    r.sadd(rk.workers, "rq:worker:w1")
    assert rq_counts(quick, name) == rq_counts(r, name) == (2, 1, 2, 1)  # type: ignore[arg-type]
    assert rq_counts(r, name) == rq_view(r, name)
    r.zadd(rk.failed, {"j6": time.time() - 60})  # expired: RQ's count removes it first
    with pytest.raises(QuickFallback):
        rq_counts(quick, name)  # type: ignore[arg-type]
    assert rq_counts(r, name) == (2, 1, 2, 1) == rq_view(r, name)
    assert r.zcard(rk.failed) == 2  # RQ itself cleaned up
