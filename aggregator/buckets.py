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

Reading: the library's reading calls (:mod:`aggregator.usage`, :mod:`aggregator.listing`,
:mod:`aggregator.search`, :mod:`aggregator.live.status`) take a :data:`StoreSet` — one store or
the buckets — and merge what each bucket holds (:func:`stores_of`): counters add up, a
conversation is read in its own bucket (:meth:`Buckets.find`), a seq is given per bucket
(:func:`per_bucket`), and digests are combined in bucket order (:func:`combined_digest`). On a
single Redis they answer exactly as they did with the one store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

from aggregator import defaults
from aggregator.errors import NotFound
from aggregator.keys import Keys
from aggregator.layout import SourceFile
from aggregator.store import Cursor, Store

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.endpoint import Connection

T = TypeVar("T")


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
        keys = [self.keys.bucket(i) for i in range(defaults.CLUSTER_BUCKETS)] if self.cluster else [self.keys]
        self.stores = [Store(self.client, k, self.host) for k in keys]

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

    @classmethod
    def of(cls, conn: Connection, settings: Settings) -> Buckets:
        """The buckets of ``settings``' namespace through ``conn`` (a cluster if it is one)."""
        return cls(conn.client, settings.keys, settings.host, cluster=conn.cluster)

    def __iter__(self) -> Iterator[Store]:
        return iter(self.stores)

    def __len__(self) -> int:
        return len(self.stores)

    def index_of(self, project: str) -> int:
        """The bucket a project's conversations go to (0 on a single Redis)."""
        return bucket_of(project, len(self.stores)) if self.cluster else 0

    def for_project(self, project: str) -> Store:
        """The store a project's conversations go to."""
        return self.stores[self.index_of(project)]

    def cursors_for(self, files: Sequence[SourceFile]) -> list[Cursor | None]:
        """The cursors of ``files`` (:meth:`Store.cursors_for`), each from its project's bucket."""
        out: list[Cursor | None] = [None] * len(files)
        groups: dict[int, list[int]] = {}
        for i, sf in enumerate(files):
            groups.setdefault(self.index_of(sf.project), []).append(i)
        for n, idx in groups.items():
            _, cursors = self.stores[n].cursors_for([files[i].path for i in idx])
            for i, cur in zip(idx, cursors, strict=True):
                out[i] = cur
        return out

    def resolve(self, name: str) -> tuple[Store, str]:
        """The store holding conversation ``name`` (or the one conversation it is a prefix of)
        and its full key; :class:`NotFound` if none or several match."""
        if not self.cluster:
            store = self.stores[0]
            return store, store.resolve_conversation(name)
        exact = self.holding(name)
        if exact:
            return exact[0], name
        matches = [(s, c) for s in self.stores for c in s.conversations() if name and c.startswith(name)]
        # one key in two buckets (a session file copied to a project of another bucket) is one name
        keys = {c for _, c in matches}
        if len(keys) == 1:
            return matches[0]
        if matches:
            raise NotFound(f"{name!r} matches {len(keys)} conversations; give more of the key")
        raise NotFound(f"no conversation {name!r}")

    def holding(self, key: str) -> list[Store]:
        """The buckets holding conversation ``key``, in bucket order: one, unless the same session
        file was read in projects of different buckets (each bucket then holds its own copy)."""
        return [s for s in self.stores if s.r.zscore(s.keys.convs, key) is not None]

    def find(self, name: str) -> tuple[Store, str]:
        """What a reading command means by ``name`` (:func:`aggregator.transcript.conversation_key`
        over every bucket): a key, a unique prefix of one, or a transcript's file name or path
        (``…/<session>.jsonl``); an ambiguous prefix names the candidates."""
        from aggregator.transcript import conversation_key  # transcript reads projections: not for ingest

        if not self.cluster:
            return self.stores[0], conversation_key(self.stores[0], name)
        if name.endswith(".jsonl"):
            name = PurePath(name).name.removesuffix(".jsonl")
        try:
            return self.resolve(name)
        except NotFound as e:
            # sorted: a single store lists them by the last seq that touched them, a bucket's own
            matches = sorted({c for s in self.stores for c in s.conversations() if name and c.startswith(name)})
            if len(matches) > 1:
                shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
                raise NotFound(f"{name!r} matches {len(matches)} conversations ({shown}); give more of the key") from e
            raise

    def seq(self) -> int | list[int]:
        """The log's last seq: a number on a single Redis, one per bucket (in bucket order) on a cluster."""
        return per_bucket(self, [s.last_seq() for s in self.stores])

    def stats(self) -> dict[str, int]:
        """:meth:`Store.stats` over every bucket: counters summed, ``last_ingest_ms`` and
        ``log_last`` the largest."""
        out: dict[str, int] = {}
        for store in self.stores:
            for k, v in store.stats().items():
                out[k] = max(out.get(k, v), v) if k in _LARGEST else out.get(k, 0) + v
        return out

    def rejections(self, limit: int | None) -> tuple[list[dict[str, Any]], int]:
        """:meth:`~aggregator.store.Store.rejections` over every bucket: newest first, at most
        ``limit``; and how many are kept in all."""
        if len(self.stores) == 1:
            return self.stores[0].rejections(limit)
        records: list[dict[str, Any]] = []
        kept = 0
        for store in self.stores:
            mine, n = store.rejections(limit)
            records += mine
            kept += n
        records.sort(key=lambda r: str(r.get("at") or ""), reverse=True)  # stable: a bucket's own order among equals
        return records[:limit] if limit is not None else records, kept

    def masters(self) -> int:
        """How many masters serve the store (1 on a single Redis)."""
        if not self.cluster:
            return 1
        return len({(n.host, n.port) for n in self.client.get_primaries()})

    def used(self) -> list[int]:
        """The buckets holding at least one conversation (bucket numbers)."""
        return [i for i, s in enumerate(self.stores) if s.r.zcard(s.keys.convs)]


_LARGEST = frozenset({"last_ingest_ms", "log_last"})
"""Stats fields that are a moment or a position, not a count: over buckets, the largest."""

StoreSet = Store | Buckets | Sequence[Store]
"""What a library reading call accepts: one store, or the buckets of one (a cluster store)."""


def stores_of(where: StoreSet) -> list[Store]:
    """The stores of ``where``, in bucket order (a single store: itself)."""
    if isinstance(where, Store):
        return [where]
    if isinstance(where, Buckets):
        return list(where.stores)
    return list(where)


def per_bucket(where: StoreSet, values: list[T]) -> T | list[T]:
    """A figure with one value per bucket (a seq): the list on a cluster store, else the one value."""
    return values if isinstance(where, Buckets) and where.cluster else values[0]


def combined_digest(digests: Sequence[str]) -> str:
    """One digest of several buckets' projection digests, in bucket order (a single one: itself)."""
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha1("\n".join(digests).encode()).hexdigest()
