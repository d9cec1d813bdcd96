"""The projection script's ops, checkpoint compare-and-set and lock, on fakeredis and the real server."""

from __future__ import annotations

from typing import Any

from aggregator import scripts

CP, LOCK, H, S, Z, CHANGED = "proj:seq", "proj:lock", "proj:h", "proj:s", "proj:z", "proj:changed"


def step(r: Any, after: int, upto: int, ops: dict[str, list[tuple[Any, Any, Any]]], token: str = "") -> list[Any]:
    keys, args = [CP, LOCK], [after, upto, token]
    for key, key_ops in ops.items():
        keys.append(key)
        args.append(len(key_ops))
        for op in key_ops:
            args += op
    return list(r.eval(scripts.PROJECT, len(keys), *keys, *args))


def test_hash_ops(any_redis: Any) -> None:
    r = any_redis
    assert step(
        r,
        0,
        5,
        {
            H: [
                ("incr", "n", 2),
                ("incr", "n", 3),
                ("set", "s", "a"),
                ("setnx", "x", "1"),
                ("setnx", "x", "2"),
                ("min", "lo", 7),
                ("min", "lo", 9),
                ("min", "lo", 3),
                ("max", "hi", 7),
                ("max", "hi", 2),
            ]
        },
    ) == [b"ok", 5]
    assert r.hgetall(H) == {b"n": b"5", b"s": b"a", b"x": b"1", b"lo": b"3", b"hi": b"7"}
    # newest / oldest keep the value of the highest / lowest seq, whatever the order they arrive in
    step(
        r,
        5,
        6,
        {
            H: [
                ("newest", "t", "10 ten"),
                ("newest", "t", "4 four"),
                ("oldest", "p", "10 ten"),
                ("oldest", "p", "4 four"),
                ("oldest", "p", "12 twelve"),
            ]
        },
    )
    assert r.hmget(H, "t", "t@", "p", "p@") == [b"ten", b"10", b"four", b"4"]
    # pick: the first candidate set and not empty; none left → the field goes
    step(r, 6, 7, {H: [("set", "c1", ""), ("pick", "title", "c1,p,t")]})
    assert r.hget(H, "title") == b"four"
    step(r, 7, 8, {H: [("pick", "title", "c1,none")]})
    assert r.hget(H, "title") is None


def test_set_zset_keep_and_touch(any_redis: Any) -> None:
    r = any_redis
    step(
        r,
        0,
        1,
        {
            S: [("sadd", "", "a"), ("sadd", "", "a"), ("sadd", "", "b")],
            Z: [("zadd", 5, "m5"), ("zadd", 1, "m1"), ("zadd", 9, "m9"), ("zkeep", "", 2)],
            CHANGED: [("touch", "", "c1"), ("touch", "", "c2")],
        },
    )
    assert r.smembers(S) == {b"a", b"b"}
    assert r.zrange(Z, 0, -1) == [b"m5", b"m9"]
    assert r.zrange(CHANGED, 0, -1, withscores=True) == [(b"c1", 1.0), (b"c2", 1.0)]
    step(r, 1, 2, {CHANGED: [("touch", "", "c1")]})  # the next step's mark is one higher
    assert r.zscore(CHANGED, "c1") == 2.0


def test_checkpoint_compare_and_set_and_lock(any_redis: Any) -> None:
    r = any_redis
    assert step(r, 0, 3, {H: [("incr", "n", 1)]}) == [b"ok", 3]
    assert step(r, 0, 4, {H: [("incr", "n", 1)]}) == [b"conflict", 3]  # a stale step writes nothing
    r.set(LOCK, "rebuilder")
    assert step(r, 3, 4, {H: [("incr", "n", 1)]}) == [b"locked"]
    assert step(r, 3, 4, {H: [("incr", "n", 1)]}, token="rebuilder") == [b"ok", 4]
    assert r.hget(H, "n") == b"2" and r.get(CP) == b"4"
