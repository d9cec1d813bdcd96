"""What ``agg status`` reports: health and figures from Redis, this host's files, and the live
service's state files.

The watcher's and the writer's state come from their state files (``<data dir>/state/``), so
they are shown even while Redis is down — that is when "waiting for Redis" matters. Whether the
process is alive is told by its lock (held only while it runs), not by a pid that may be reused.
This is the one library module that reads :mod:`workers` (the turns' figures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aggregator import defaults
from aggregator.buckets import Buckets, StoreSet, per_bucket, stores_of
from aggregator.config import Settings
from aggregator.embedded import EmbeddedRedis
from aggregator.endpoint import Connection, mask_url
from aggregator.layout import watch_path
from aggregator.lifecycle import ProcessLock, StateFile
from aggregator.paths import DataPaths
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.usage import totals as usage_totals
from workers.status import turn_figures

if TYPE_CHECKING:  # not imported at run time: `agg status` may run on the quick client (aggregator.quickredis)
    import redis


@dataclass
class HostFiles:
    """The tracked files, read once for all of ``agg status``."""

    total: int
    """Tracked files, all hosts."""
    lags: list[tuple[str, int]]
    """This host's files: (path, bytes on disk not yet committed; 0 if unreadable)."""


def host_files(store: StoreSet) -> HostFiles:
    """Every cursor's host, path and offset (one script call per 1,000 files; every bucket's),
    this host's stat-ed."""
    stores = stores_of(store)
    states = [fs for one in stores for fs in one.file_states()]
    lags = []
    for fs in states:
        if fs.host != stores[0].host or fs.path is None:
            continue
        try:
            lag = max(0, os.stat(fs.path).st_size - fs.off)
        except OSError:
            lag = 0
        lags.append((fs.path, lag))
    return HostFiles(len(states), lags)


def file_figures(files: HostFiles) -> dict[str, Any]:
    """Tracked files (all hosts), and this host's files and lag."""
    return {"files": files.total, "files_on_host": len(files.lags), "lag_bytes": sum(lag for _, lag in files.lags)}


def gather(
    conn: Connection, store: Store | Buckets, files: HostFiles | None = None, *, queue: redis.Redis | None = None
) -> dict[str, Any]:
    """The status object (``agg status --json``) but for the live service's part
    (:func:`live_status`); ``files``: :func:`host_files`, if already read. On a cluster store
    (its :class:`Buckets`) the figures are summed over the buckets, ``seq`` and the projections'
    ``seq`` are one per bucket, and ``cluster`` says how many masters and buckets are used. The
    turns' queue figures (RQ, the budget) come from ``queue``, the ``AGG_QUEUE_URL`` Redis when
    one is set, else from the store's Redis."""
    r = conn.client
    info = r.info("server")  # a cluster client asks one node
    cluster = store if isinstance(store, Buckets) and store.cluster else None
    stats = store.stats()
    root = _root(store)
    out: dict[str, Any] = {
        "redis": {
            "url": conn.masked_url,
            "version": info.get("redis_version"),
            "ok": True,
            "embedded": conn.embedded is not None,
            "used_memory_bytes": _used_memory(r, cluster is not None),
        },
        "namespace": root.keys.ns,
        "host": root.host,
        "seq": per_bucket(store, [s.last_seq() for s in stores_of(store)]),
        "events": stats["events"],
        "revisions": stats["revisions"],
        "duplicates": stats["duplicates"],
        "rejected": stats["rejected"],
        "forgotten": stats["forgotten"],
        "lines": stats["lines"],
        "conversations": stats["conversations"],
        **file_figures(files or host_files(store)),
        "last_ingest_at": iso_ms(stats["last_ingest_ms"]) if "last_ingest_ms" in stats else None,
        "last_snapshot_at": None,
        "projections": {"seq": per_bucket(store, [s.projections_seq() for s in stores_of(store)])},
        "usage": usage_totals(store),
    }
    keys = cluster.keys if cluster is not None else root.keys
    bucket_keys = [b.keys for b in cluster] if cluster is not None else None
    out.update(turn_figures(r, keys, keys.turns_queue, buckets=bucket_keys, queue_client=queue))
    if cluster is not None:
        used = cluster.used()
        out["cluster"] = {"masters": cluster.masters(), "buckets": len(cluster), "buckets_used": used}
    return out


def _root(store: Store | Buckets) -> Store:
    """The store of the namespace itself: the one store, or on a cluster the namespace's own keys
    (what is kept once for all buckets: the writer's snapshot record)."""
    if isinstance(store, Store):
        return store
    if not store.cluster:
        return store.stores[0]
    return Store(store.client, store.keys, store.host)


def _used_memory(client: Any, cluster: bool) -> Any:
    """``used_memory``: on a Redis Cluster, the masters' together (the store is spread over them;
    ``tests/cluster/test_read.py::test_status_memory_is_every_masters_together``)."""
    if not cluster:
        return client.info("memory").get("used_memory")
    from redis.cluster import RedisCluster  # not on the quick client's path (a single Redis)

    mem = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
    nodes = [mem] if "used_memory" in mem else list(mem.values())  # one master: its reply alone
    return sum(int(v.get("used_memory", 0)) for v in nodes)


NOT_RUNNING = "not running"


def redis_label(settings: Settings) -> str:
    """How a part names its Redis in its state file: the masked URL (for the embedded server, the
    URL of its socket — what ``agg run`` hands its parts — so both spellings compare equal)."""
    if settings.redis_url:
        return mask_url(settings.redis_url)
    sock = EmbeddedRedis(settings.data_dir).socket_path
    return mask_url(f"unix://{quote(str(sock))}?password=-")


def service_state(state_path: Path, lock_path: Path) -> dict[str, Any]:
    """A service's last state, with ``state`` = ``not running`` if it does not hold its lock."""
    data = StateFile.read(state_path) or {}
    if not ProcessLock.held(lock_path):
        if data.get("state") and data.get("state") != NOT_RUNNING:
            data["last_state"] = data["state"]
        data["state"] = NOT_RUNNING
    return data


def roots_from_cursors(settings: Settings, files: HostFiles) -> list[dict[str, Any]]:
    """Per claude dir: files this host tracks under it and their bytes not yet committed."""
    roots = [(Path(r), str(watch_path(Path(r)) or r).rstrip(os.sep) + os.sep) for r in settings.claude_dirs]
    out: dict[str, dict[str, Any]] = {
        str(r): {"path": str(r), "exists": r.is_dir(), "files": 0, "lag_bytes": 0} for r, _ in roots
    }
    for path, lag in files.lags:
        for r, prefix in roots:
            if path.startswith(prefix):
                out[str(r)]["files"] += 1
                out[str(r)]["lag_bytes"] += lag
                break
    return list(out.values())


def live_status(settings: Settings, store: Store | Buckets | None, files: HostFiles | None = None) -> dict[str, Any]:
    """The live-service part of ``agg status --json`` (``store`` None when Redis is down;
    ``files``: :func:`host_files`, if already read)."""
    ns = settings.namespace
    paths = DataPaths(settings.data_dir, ns)
    watcher = service_state(paths.state("watch"), paths.lock("watch"))
    writer = service_state(paths.state("writer"), paths.lock("writer"))
    here = redis_label(settings)
    for part in (watcher, writer):
        # A part's state is its own view of *its* Redis: say so when that is not the one asked about.
        if part.get("redis") and part["redis"] != here and part.get("state") != NOT_RUNNING:
            part["other_redis"] = True
    out: dict[str, Any] = {"watcher": watcher, "writer": writer, "ingest": last_ingest(settings)}
    if store is None:
        out["roots"] = watcher.get("roots", [])
        out["last_snapshot_at"] = writer.get("last_snapshot_at")
        return out
    s = _root(store).snapshot_record()
    if s:
        out["last_snapshot_at"] = iso_ms(int(s["at_ms"])) if "at_ms" in s else None
        out["snapshot"] = {
            "seq": int(s.get("seq", 0)),
            "path": s.get("path"),
            "host": s.get("host"),
            "conversations": int(s.get("conversations", 0)),
            "messages": int(s.get("messages", 0)),
        }
    else:
        out["last_snapshot_at"] = None
    out["roots"] = roots_from_cursors(settings, files or host_files(store))
    stats = store.stats()
    out["seq_floor_raised"] = stats.get("seq_floor_raised", 0)
    return out


def record_ingest(settings: Settings, skipped: list[dict[str, str]]) -> None:
    """Keep what the last `agg ingest` on this machine could not read (its state file), so that
    `agg status` names it too — not only the ingest's own summary."""
    state = StateFile(DataPaths(settings.data_dir, settings.namespace).state("ingest"))
    state.update(skipped={"count": len(skipped), "first": skipped[: defaults.WATCH_SKIPPED_SHOWN]})


def last_ingest(settings: Settings) -> dict[str, Any] | None:
    """``at`` and ``skipped`` (``count``, ``first``) of the last `agg ingest`, or None if none ran here."""
    data = StateFile.read(DataPaths(settings.data_dir, settings.namespace).state("ingest"))
    if not data:
        return None
    return {"at": data.get("updated_at"), "skipped": data.get("skipped") or {"count": 0, "first": []}}


def describe(st: dict[str, Any]) -> list[str]:
    """Text lines for ``agg status`` about the live service."""
    lines = []
    w = st.get("watcher", {})
    detail = []
    running = w.get("state") != NOT_RUNNING
    if w.get("pid") and running:
        detail.append(f"pid {w['pid']}")
    if w.get("since"):
        detail.append(f"since {w['since']}")
    if not running and w.get("last_state"):
        detail.append(f"last {w['last_state']}")
    if w.get("error") and w.get("state") != "watching":
        detail.append(w["error"])
    if w.get("other_redis"):
        detail.append(f"on another Redis: {w['redis']}")
    if w.get("polling"):
        detail.append("polling")
    lines.append(f"watcher      {w.get('state', NOT_RUNNING)}{' (' + ', '.join(detail) + ')' if detail else ''}")
    if running:
        lines += _watcher_notes(w)
    else:  # a watcher retries what it skipped and says so itself; without one, the last ingest's word
        sk = (st.get("ingest") or {}).get("skipped") or {}
        if sk.get("count"):
            lines.append(
                f"skipped      {sk['count']} not read by the last agg ingest ({st['ingest']['at']}): {_listed(sk)}"
            )
    wr = st.get("writer", {})
    wdetail = []
    if wr.get("error") and wr.get("state") != NOT_RUNNING:
        wdetail.append(wr["error"])
    if wr.get("other_redis"):
        wdetail.append(f"on another Redis: {wr['redis']}")
    lines.append(
        f"writer       {wr.get('state', NOT_RUNNING)}"
        + (f" → {wr['output']}" if wr.get("output") and wr.get("state") != NOT_RUNNING else "")
        + (f" ({', '.join(wdetail)})" if wdetail else "")
    )
    snap = st.get("snapshot")
    at = st.get("last_snapshot_at")
    lines.append(f"snapshot     {at or 'never'}" + (f" (seq {snap['seq']}, {snap['path']})" if snap else ""))
    for r in st.get("roots", []):
        missing = "" if r.get("exists", True) else " (missing)"
        lines.append(f"root         {r['path']}{missing}: {r['files']} files, lag {r['lag_bytes']} bytes")
    return lines


def _watcher_notes(w: dict[str, Any]) -> list[str]:
    """What the watcher could not read, and what its file notifications do not cover."""
    lines = []
    sk = w.get("skipped") or {}
    if sk.get("count"):
        lines.append(f"skipped      {sk['count']} not read, tried again on every rescan: {_listed(sk)}")
    if w.get("notify_note"):
        lines.append(f"notify       {w['notify_note']}")
    elif w.get("notify_error"):
        restarts = w.get("notify_restarts", 0)
        lines.append(f"notify       {w['notify_error']}" + (f" (restarted {restarts} times)" if restarts else ""))
    return lines


def _listed(sk: dict[str, Any]) -> str:
    """``file (reason), …, and M more`` of a ``skipped`` record (``count``, ``first``)."""
    shown = ", ".join(f"{f['file']} ({f['reason']})" for f in sk.get("first", []))
    return shown + (f", and {sk['count'] - len(sk['first'])} more" if sk["count"] > len(sk.get("first", [])) else "")
