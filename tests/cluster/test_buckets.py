"""The bucket layout: every key of a bucket in one slot, projects spread over buckets."""

from __future__ import annotations

from redis.cluster import RedisCluster

from aggregator import defaults
from aggregator.buckets import Buckets, bucket_of
from aggregator.keys import Keys


def test_every_key_of_a_bucket_is_in_one_slot_and_buckets_differ(cclient: RedisCluster) -> None:
    slots = set()
    for n in range(defaults.CLUSTER_BUCKETS):
        k = Keys("agg").bucket(n)
        names = [k.seq, k.log, k.stats, k.file("f1"), k.convs, k.usage_total, k.proj_seq,
                 k.cur("conv-1"), k.body("conv-2"), k.chunks("x"), k.turn("conv-3"), k.log_patch(7)]  # fmt: skip
        bucket_slots = {int(cclient.keyslot(name)) for name in names}
        assert len(bucket_slots) == 1, (n, bucket_slots)
        slots |= bucket_slots
    assert len(slots) == defaults.CLUSTER_BUCKETS


def test_a_project_always_lands_in_the_same_bucket_and_projects_spread() -> None:
    assert bucket_of("-home-u-proj") == bucket_of("-home-u-proj")
    used = {bucket_of(f"-home-u-project-{i}") for i in range(200)}
    assert len(used) == defaults.CLUSTER_BUCKETS
    assert bucket_of("caf\udce9") in range(defaults.CLUSTER_BUCKETS)  # a name that is not UTF-8


def test_a_single_redis_has_one_bucket_under_the_namespace_itself(r: object) -> None:
    b = Buckets(r, Keys("agg"))
    assert len(b) == 1 and b.stores[0].keys == Keys("agg")
    assert b.for_project("anything") is b.stores[0]


def test_a_cluster_store_has_every_bucket(buckets: Buckets, namespace: str) -> None:
    assert len(buckets) == defaults.CLUSTER_BUCKETS
    assert [s.keys.ns for s in buckets] == [f"{namespace}:{{b{i}}}" for i in range(defaults.CLUSTER_BUCKETS)]
    assert buckets.for_project("p") is buckets.stores[bucket_of("p")]
