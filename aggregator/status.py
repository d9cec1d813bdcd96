"""What ``agg status`` reports: health and figures, gathered from Redis and this host's files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import redis

from aggregator.connection import Connection
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.usage import totals as usage_totals


@dataclass
class HostFiles:
    """The tracked files, read once for all of ``agg status``."""

    total: int
    """Tracked files, all hosts."""
    lags: list[tuple[str, int]]
    """This host's files: (path, bytes on disk not yet committed; 0 if unreadable)."""


def host_files(store: Store) -> HostFiles:
    """Every cursor's host, path and offset (one script call per 1,000 files), this host's stat-ed."""
    fids = sorted(f.decode() for f in store.r.smembers(store.keys.files))
    host = store.host.encode()
    lags = []
    for h, path, off in store.hmget_many([store.keys.file(f) for f in fids], ["host", "path", "off"]):
        if h != host or path is None:
            continue
        name = os.fsdecode(path)
        try:
            lag = max(0, os.stat(name).st_size - int(off or 0))
        except OSError:
            lag = 0
        lags.append((name, lag))
    return HostFiles(len(fids), lags)


def file_figures(files: HostFiles) -> dict[str, Any]:
    """Tracked files (all hosts), and this host's files and lag."""
    return {"files": files.total, "files_on_host": len(files.lags), "lag_bytes": sum(lag for _, lag in files.lags)}


def rq_figures(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """Turns (queued, running, parked, failed, …) and workers (see :mod:`workers.status`)."""
    from aggregator.keys import Keys
    from workers import queue_name
    from workers.status import turn_figures

    return turn_figures(client, Keys(namespace), queue_name(namespace))


def gather(conn: Connection, store: Store, files: HostFiles | None = None) -> dict[str, Any]:
    """The status object (``agg status --json``) but for the live service's part
    (:func:`aggregator.livestatus.live_status`); ``files``: :func:`host_files`, if already read."""
    r = conn.client
    info = r.info("server")
    mem = r.info("memory")
    stats = store.stats()
    raw = r.hget(store.keys.stats, "last_ingest_ms")
    projector = Projector(store)
    out: dict[str, Any] = {
        "redis": {
            "url": conn.masked_url,
            "version": info.get("redis_version"),
            "ok": True,
            "embedded": conn.embedded is not None,
            "used_memory_bytes": mem.get("used_memory"),
        },
        "namespace": store.keys.ns,
        "host": store.host,
        "seq": store.last_seq(),
        "events": stats["events"],
        "revisions": stats["revisions"],
        "duplicates": stats["duplicates"],
        "rejected": stats["rejected"],
        "lines": stats["lines"],
        "conversations": stats["conversations"],
        **file_figures(files or host_files(store)),
        "last_ingest_at": iso_ms(int(raw)) if raw else None,
        **rq_figures(r, store.keys.ns),
        "last_snapshot_at": None,
        "projections": {"seq": projector.checkpoint()},
        "usage": usage_totals(store),
    }
    return out
