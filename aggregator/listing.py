"""``agg list`` as a library call: conversations newest activity first, with their cost (docs/design.md §9)."""

from __future__ import annotations

import time
from typing import Any

from aggregator.parse import ts_ms
from aggregator.prices import Costing
from aggregator.projections import Projector
from aggregator.projects import matches, project_paths
from aggregator.store import Store
from aggregator.usage import conversation_costs
from aggregator.views import conversation_views


def conversations(
    store: Store,
    *,
    project: str | None = None,
    active: bool = False,
    since_ms: int | None = None,
    limit: int | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """``{"conversations": [...], "total", "unpriced"}``: each conversation's projection
    (:func:`aggregator.views.conversation_view`) plus ``project_path`` and ``cost_usd`` (null if one
    of its models has no price), newest activity first; ``total`` counts the matches before
    ``limit``; ``unpriced`` names the models without a price.

    ``project`` selects as ``--project`` does (:func:`aggregator.projects.matches`), ``active``
    keeps active ones, ``since_ms`` those with activity since then.
    """
    Projector(store).catch_up()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    views = conversation_views(store, now_ms=now_ms)
    paths = project_paths(store)
    costing = Costing()
    costs = conversation_costs(store, costing)
    out = []
    for v in views:
        path = paths.get(v["project"] or "", v["project"] or "")
        if project is not None and not matches(project, v["project"] or "", path):
            continue
        if active and not v["active"]:
            continue
        if since_ms is not None and (ts_ms(v["last_ts"]) or 0) < since_ms:
            continue
        v["project_path"] = path or None
        v["cost_usd"] = costs.get(v["key"]) if v["responses"] else 0.0
        out.append(v)
    out.sort(key=lambda v: (v["last_ts"] or "", v["key"]), reverse=True)
    total = len(out)
    if limit:
        out = out[:limit]
    return {"conversations": out, "total": total, "unpriced": sorted(costing.unpriced)}
