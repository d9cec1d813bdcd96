"""What ``agg status`` reports: health and figures, gathered from Redis and this host's files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import redis

from aggregator.connection import Connection
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.usage import totals as usage_totals


def iso_ms(ms: int | None) -> str | None:
    """ISO-8601 UTC text of epoch milliseconds (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_figures(store: Store) -> dict[str, Any]:
    """Tracked files (all hosts), and this host's lag: bytes on disk not yet committed."""
    lag = 0
    here = 0
    fids = sorted(f.decode() for f in store.r.smembers(store.keys.files))
    host = store.host.encode()
    for h, path, off in store.hmget_many([store.keys.file(f) for f in fids], ["host", "path", "off"]):
        if h != host or path is None:
            continue
        here += 1
        try:
            size = os.stat(os.fsdecode(path)).st_size
        except OSError:
            continue
        lag += max(0, size - int(off or 0))
    return {"files": len(fids), "files_on_host": here, "lag_bytes": lag}


def rq_figures(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """Turns (queued, running, parked, failed, …) and workers (see :mod:`workers.status`)."""
    from aggregator.keys import Keys
    from workers import queue_name
    from workers.status import turn_figures

    return turn_figures(client, Keys(namespace), queue_name(namespace))


def gather(conn: Connection, store: Store) -> dict[str, Any]:
    """The full status object (``agg status --json``)."""
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
        **file_figures(store),
        "last_ingest_at": iso_ms(int(raw)) if raw else None,
        **rq_figures(r, store.keys.ns),
        "last_snapshot_at": None,
        "projections": {"seq": projector.checkpoint()},
        "usage": usage_totals(store),
    }
    return out
