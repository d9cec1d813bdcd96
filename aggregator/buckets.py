"""The store on a Redis Cluster: buckets, each a whole store in one hash slot.

A Lua script may only touch keys of one slot, and agg's scripts touch a conversation's keys
together with the store's sequence, log and counters. On a Redis Cluster the store is therefore
:data:`~aggregator.defaults.CLUSTER_BUCKETS` buckets, each a complete store — its own ``seq``,
log, counters, cursors and projections — under the namespace ``<ns>:{b<n>}``: the hash tag
``{b<n>}`` comes first in every key of the bucket (``agg:{b3}:{c:K}:body`` hashes on ``b3``), so
every script of the bucket runs on one master, unchanged. Buckets spread over the masters by
slot.

A project's conversations share a bucket (:func:`bucket_of` its name): Claude Code copies a
session's messages into the session that resumes it, in the same project, and usage is
deduplicated within a bucket (a copy in another *project* is counted in both; the reference
transcripts never have one). A store of few projects uses few masters.

On a single Redis there is one bucket, the namespace itself: the keys are exactly those of a store
that never saw a cluster.

Ordering on a cluster: ``seq`` is per bucket (strictly increasing, never reused, within the
bucket); an event's place is ``(bucket, seq)``; envelopes of a cluster store carry ``bucket``.
A position across buckets names a seq per bucket (``0`` = from the beginning of every bucket).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import defaults
from aggregator.errors import NotFound
from aggregator.keys import Keys
from aggregator.store import Store


def bucket_of(project: str, count: int = defaults.CLUSTER_BUCKETS) -> int:
    """The bucket of ``project``'s conversations (stable across machines and Python runs)."""
    digest = hashlib.sha1(project.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % count


@dataclass
class Buckets:
    """The stores of one namespace: one on a single Redis, :data:`~aggregator.defaults.CLUSTER_BUCKETS`
    on a cluster, in bucket order."""

    client: Any
    keys: Keys = field(default_factory=Keys)
    host: str = ""
    cluster: bool = False
    stores: list[Store] = field(init=False)

    def __post_init__(self) -> None:
        self.stores = [Store(self.client, k, self.host) for k in self.bucket_keys()]

    def bucket_keys(self) -> list[Keys]:
        if not self.cluster:
            return [self.keys]
        return [self.keys.bucket(i) for i in range(defaults.CLUSTER_BUCKETS)]

    def keep_floors(self, data_dir: Path) -> None:
        """On a cluster, give every bucket a seq floor kept in ``data_dir`` (:attr:`Store.floor
        <aggregator.store.Store.floor>`): a master that fails over to a replica lacking its last
        writes must not hand out a seq of the bucket twice. A single Redis is left as it is."""
        if not self.cluster:
            return
        from aggregator.paths import DataPaths
        from aggregator.seqfloor import SeqFloor

        for store in self.stores:
            store.floor = SeqFloor(store.keys, DataPaths(data_dir, store.keys.ns).floor)

    def save_floors(self) -> None:
        """Write every bucket's floor to its file (a later process starts from it)."""
        for store in self.stores:
            if store.floor is not None:
                store.floor.save()

    def node_of(self, n: int) -> str:
        """The node serving bucket ``n`` (``host:port``) as this client last heard; "" on a
        single Redis."""
        if not self.cluster:
            return ""
        return str(self.client.get_node_from_key(self.stores[n].keys.seq).name)

    def node_answers(self, name: str) -> bool:
        """Whether the cluster node ``name`` (``host:port``) answers a PING."""
        import redis

        node = self.client.get_node(node_name=name)
        if node is None:
            return False
        try:
            return bool(self.client.get_redis_connection(node).ping())
        except (redis.RedisError, OSError):
            return False

    def refresh(self) -> None:
        """After a failover: ask the cluster again which node serves which slot."""
        manager = getattr(self.client, "nodes_manager", None)
        if manager is not None:
            manager.initialize()

    def __iter__(self) -> Iterator[Store]:
        return iter(self.stores)

    def __len__(self) -> int:
        return len(self.stores)

    def for_project(self, project: str) -> Store:
        """The store a project's conversations go to."""
        if not self.cluster:
            return self.stores[0]
        return self.stores[bucket_of(project, len(self.stores))]

    def resolve(self, name: str) -> tuple[Store, str]:
        """The store holding conversation ``name`` (or the one conversation it is a prefix of)
        and its full key; :class:`NotFound` if none or several match."""
        if not self.cluster:
            store = self.stores[0]
            return store, store.resolve_conversation(name)
        exact = [s for s in self.stores if s.r.zscore(s.keys.convs, name) is not None]
        if exact:
            return exact[0], name
        matches = [(s, c) for s in self.stores for c in s.conversations() if name and c.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise NotFound(f"{name!r} matches {len(matches)} conversations; give more of the key")
        raise NotFound(f"no conversation {name!r}")
