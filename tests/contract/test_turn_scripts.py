"""Contract tests of the turn scripts (workers/scripts.py), on fakeredis and on a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from aggregator.keys import Keys
from workers.config import TurnConfig
from workers.dispatch import Scheduler
from workers.lease import Fence, Lease
from workers.turns import turn_event

K = Keys("agg")


@pytest.fixture
def rc(any_redis: Any) -> Any:
    return any_redis


def mark(r: Any, *convs: str, at_ms: int | None = None) -> None:
    """What ingest does for a batch touching ``convs``."""
    now = at_ms if at_ms is not None else int(time.time() * 1000)
    for c in convs:
        r.zadd(K.dirty, {c: now}, nx=True)


def sched(r: Any, claimed: list[tuple[str, int]], **cfg: Any) -> Scheduler:
    config = TurnConfig(**{"debounce_ms": 0, "cooldown_ms": 0, **cfg})
    return Scheduler(r, K, config, None, submit=lambda c, g: claimed.append((c, g)))


def commit(lease: Lease, upto: int = 1) -> tuple[str, int]:
    turn = {"kind": "summary", "title": "t", "summary": "s", "upto_seq": upto, "provider": "offline", "model": "m"}
    return lease.commit(turn_event(lease.conv, "p", turn), project="p", upto_seq=upto, result=turn, cooldown_ms=0)


def test_debounce_then_claim(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed, debounce_ms=60_000)
    mark(rc, "a")
    assert s.tick() == 0
    assert rc.zcard(K.dirty) == 0 and rc.zscore(K.turns_due, "a") is not None
    assert s.tick(burst=True) == 1 and claimed == [("a", 1)]
    assert rc.hget(K.turn("a"), "state") == b"queued" and rc.zscore(K.turns_queued, "a") is not None


def test_cap_counts_queued_and_running(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed, concurrency=2)
    mark(rc, "a", "b", "c")
    s.tick()
    assert [c for c, _ in claimed] == ["a", "b"]
    assert Fence(rc, K).acquire("a", 1, 10_000, "test") is not None
    s.tick()
    assert len(claimed) == 2  # a running + b queued = the cap


def test_one_follow_up_for_a_burst_during_a_turn(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed)
    mark(rc, "a")
    s.tick()
    lease = Fence(rc, K).acquire("a", 1, 10_000, "test")
    assert lease is not None
    for _ in range(5):  # a burst while the turn runs
        rc.zadd(K.dirty, {"a": int(time.time() * 1000)}, nx=True)
        s.tick()
    assert claimed == [("a", 1)] and rc.hget(K.turn("a"), "follow") == b"1"
    assert commit(lease)[0] == "ok"
    s.tick()
    assert claimed == [("a", 1), ("a", 2)]  # exactly one follow-up
    s.tick()
    assert len(claimed) == 2


def test_marks_before_the_lease_are_absorbed_by_the_turn(rc: redis.Redis) -> None:
    """Changes ingested after the claim but before the lease are read by the turn itself."""
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed, debounce_ms=60_000)
    mark(rc, "a")
    s.tick(burst=True)
    mark(rc, "a")
    s.tick()
    lease = Fence(rc, K).acquire("a", 1, 10_000, "test")
    assert lease is not None and rc.zcard(K.turns_due) == 0 and rc.zcard(K.dirty) == 0
    commit(lease)
    s.tick(burst=True)
    assert len(claimed) == 1


def test_fencing(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed)
    fence = Fence(rc, K)
    mark(rc, "a")
    s.tick()
    assert fence.acquire("a", 2, 10_000, "t") is None  # not the current generation
    old = fence.acquire("a", 1, 10_000, "t")
    assert old is not None and old.epoch == 1
    assert fence.acquire("a", 1, 10_000, "t") is None  # already taken
    # the holder stalls past its lease; the reconciler redoes the turn under generation 2
    rc.delete(K.lease("a"))
    rc.zadd(K.turns_running, {"a": 0})
    assert s.reconcile() == 1 and claimed[-1] == ("a", 2)
    new = fence.acquire("a", 2, 10_000, "t")
    assert new is not None and new.epoch == 2
    assert commit(old) == ("stale", 0)
    assert old.release("fail", error="x", park_base_ms=1, park_max_ms=1) == ["stale"]
    status, seq = commit(new)
    assert status == "ok" and seq == 1
    assert commit(new) == ("already", 0)  # a retried commit of the same epoch writes nothing
    assert rc.hget(K.stats, "events") == b"1" and rc.xlen(K.log) == 1
    assert int(rc.hget(K.turns_stats, "stale") or 0) == 2


def test_failures_park_with_doubling_delay_and_success_clears(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed)
    fence = Fence(rc, K)
    mark(rc, "a")
    delays = []
    for gen in (1, 2, 3):
        s.tick(burst=True)
        lease = fence.acquire("a", gen, 10_000, "t")
        assert lease is not None
        status, fails, at = lease.release("fail", error=f"boom {gen}", park_base_ms=1000, park_max_ms=3000)
        assert (status, fails) == ("parked", gen)
        delays.append(int(at) - int(float(rc.hget(K.turn("a"), "error_at"))))
        assert rc.zscore(K.turns_parked, "a") == rc.zscore(K.turns_due, "a") == int(at)
        assert s.tick(burst=True) == 0  # parked: not even burst runs it before its time
        rc.hset(K.turn("a"), "park_until", 0)  # pretend the time has come
    assert delays == [1000, 2000, 3000]
    s.tick(burst=True)
    lease = fence.acquire("a", 4, 10_000, "t")
    assert lease is not None and commit(lease)[0] == "ok"
    assert rc.zcard(K.turns_parked) == 0 and rc.hget(K.turn("a"), "error") is None
    assert rc.hget(K.turn("a"), "fails") == b"0"


def test_abort_hands_the_turn_back(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed)
    mark(rc, "a")
    s.tick()
    lease = Fence(rc, K).acquire("a", 1, 10_000, "t")
    assert lease is not None
    assert lease.release("abort") == ["ok"]
    assert rc.exists(K.lease("a")) == 0 and rc.zcard(K.turns_running) == 0
    s.tick()
    assert claimed == [("a", 1), ("a", 2)]


def test_job_ids_are_rq_safe_and_per_namespace() -> None:
    a = Keys("agg").turn_job_id("conv/with:odd chars", 7)
    assert a.endswith("-7") and all(ch.isalnum() or ch in "-_" for ch in a)
    assert Keys("other").turn_job_id("conv/with:odd chars", 7) != a
    assert (Keys("agg").turns_queue, Keys("other").turns_queue) == ("agg-turns", "other-turns")


def test_cooldown_delays_the_next_turn_of_a_conversation(rc: redis.Redis) -> None:
    claimed: list[tuple[str, int]] = []
    s = sched(rc, claimed)
    mark(rc, "a", "b")
    s.tick()
    lease = Fence(rc, K).acquire("a", 1, 10_000, "t")
    assert lease is not None
    turn = {"kind": "summary", "title": "t", "summary": "s", "upto_seq": 1, "provider": "offline", "model": "m"}
    lease.commit(turn_event("a", "p", turn), project="p", upto_seq=1, result=turn, cooldown_ms=60_000)
    cool = int(float(rc.hget(K.turn("a"), "cool_until")))
    mark(rc, "a")
    s.tick()
    assert claimed == [("a", 1), ("b", 1)]  # a waits for its cooldown; b was never held up
    assert rc.zscore(K.turns_due, "a") == cool
    s.tick(burst=True)  # `agg worker --burst` runs it now
    assert claimed[-1] == ("a", 2)
