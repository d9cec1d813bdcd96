"""What ``agg status`` adds about the live service: watcher and writer state, roots, snapshots.

The watcher's and the writer's state come from their state files (``<data dir>/state/``), so
they are shown even while Redis is down — that is when "waiting for Redis" matters. Whether the
process is alive is told by its lock (held only while it runs), not by a pid that may be reused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aggregator.config import Settings
from aggregator.lifecycle import ProcessLock, StateFile
from aggregator.status import HostFiles, host_files
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.watcher import watch_lock_path, watch_path, watch_state_path
from aggregator.writer import writer_lock_path, writer_state_path

NOT_RUNNING = "not running"


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


def live_status(settings: Settings, store: Store | None, files: HostFiles | None = None) -> dict[str, Any]:
    """The live-service part of ``agg status --json`` (``store`` None when Redis is down;
    ``files``: :func:`aggregator.status.host_files`, if already read)."""
    ns = settings.namespace
    watcher = service_state(watch_state_path(settings.data_dir, ns), watch_lock_path(settings.data_dir, ns))
    writer = service_state(writer_state_path(settings.data_dir, ns), writer_lock_path(settings.data_dir, ns))
    out: dict[str, Any] = {"watcher": watcher, "writer": writer}
    if store is None:
        out["roots"] = watcher.get("roots", [])
        out["last_snapshot_at"] = writer.get("last_snapshot_at")
        return out
    snap: dict[bytes, bytes] = store.r.hgetall(store.keys.snapshot)
    if snap:
        s = {k.decode(): v.decode() for k, v in snap.items()}
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
    out["seq_floor_raised"] = int(store.r.hget(store.keys.stats, "seq_floor_raised") or 0)
    return out


def describe(st: dict[str, Any]) -> list[str]:
    """Text lines for ``agg status`` about the live service."""
    lines = []
    w = st.get("watcher", {})
    detail = []
    if w.get("pid") and w.get("state") != NOT_RUNNING:
        detail.append(f"pid {w['pid']}")
    if w.get("since"):
        detail.append(f"since {w['since']}")
    if w.get("state") == NOT_RUNNING and w.get("last_state"):
        detail.append(f"last {w['last_state']}")
    if w.get("error") and w.get("state") != "watching":
        detail.append(w["error"])
    if w.get("polling"):
        detail.append("polling")
    lines.append(f"watcher      {w.get('state', NOT_RUNNING)}{' (' + ', '.join(detail) + ')' if detail else ''}")
    wr = st.get("writer", {})
    lines.append(
        f"writer       {wr.get('state', NOT_RUNNING)}"
        + (f" → {wr['output']}" if wr.get("output") and wr.get("state") != NOT_RUNNING else "")
    )
    snap = st.get("snapshot")
    at = st.get("last_snapshot_at")
    lines.append(f"snapshot     {at or 'never'}" + (f" (seq {snap['seq']}, {snap['path']})" if snap else ""))
    for r in st.get("roots", []):
        missing = "" if r.get("exists", True) else " (missing)"
        lines.append(f"root         {r['path']}{missing}: {r['files']} files, lag {r['lag_bytes']} bytes")
    return lines
