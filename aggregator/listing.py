"""``agg list`` as a library call: conversations newest activity first, with their cost (docs/design.md §9).

The same answers serve ``agg list --json``, ``agg mcp``'s ``list_conversations`` and ``agg serve``'s
``/api/conversations`` (which pages through them with ``offset``). Choosing and ordering reads four
fields of each conversation's projection; only the conversations of the page are read whole.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aggregator.config import active_minutes as active_minutes_setting
from aggregator.parse import ts_ms
from aggregator.prices import Costing
from aggregator.projections import Projector
from aggregator.projects import matches, paths_of
from aggregator.store import Store
from aggregator.transcript import header
from aggregator.usage import conversation_cost, conversation_costs
from aggregator.views import conversation_views, is_active

_CHOOSE_FIELDS = ("last_ms", "messages", "project", "cwd")
"""Projection fields a listing chooses and orders conversations by (``project`` and ``cwd`` also
make the projects' readable paths)."""


def conversations(
    store: Store,
    *,
    project: str | None = None,
    active: bool = False,
    since_ms: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    now_ms: int | None = None,
    paths: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``{"conversations": [...], "total", "unpriced"}``: each conversation's projection
    (:func:`aggregator.views.conversation_view`) plus ``project_path`` and ``cost_usd`` (null if one
    of its models has no price), newest activity first; ``total`` counts the matches before
    ``offset`` and ``limit``; ``unpriced`` names the models without a price.

    ``project`` selects as ``--project`` does (:func:`aggregator.projects.matches`), ``active``
    keeps active ones, ``since_ms`` those with activity since then. ``paths``: the projects'
    readable paths (:func:`aggregator.projects.project_paths`) when the caller has read them already.
    """
    Projector(store).catch_up()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    minutes = active_minutes_setting()
    convs = store.conversations()
    fields = _CHOOSE_FIELDS if paths is None else _CHOOSE_FIELDS[:3]
    rows = store.hmget_many([store.keys.proj(c) for c in convs], list(fields))
    if paths is None:
        paths = paths_of((p, cwd) for _, _, p, cwd in rows)
    chosen: list[tuple[int, str]] = []
    for conv, (last, messages, proj, *_) in zip(convs, rows, strict=True):
        if not messages or int(messages) <= 0:
            continue
        name = proj.decode() if proj else ""
        if project is not None and not matches(project, name, paths.get(name, name)):
            continue
        last_ms = int(last) if last is not None else None
        if active and not is_active(last_ms, now_ms, minutes):
            continue
        if since_ms is not None and (last_ms or 0) < since_ms:
            continue
        chosen.append((-1 if last_ms is None else last_ms, conv))
    chosen.sort(reverse=True)
    page = chosen[offset : offset + limit if limit else None]
    costing = Costing()
    costs = conversation_costs(store, costing)
    out = conversation_views(store, [c for _, c in page], now_ms=now_ms, active_minutes=minutes)
    for v in out:
        v["project_path"] = paths.get(v["project"] or "")
        v["cost_usd"] = costs.get(v["key"]) if v["responses"] else 0.0
    return {"conversations": out, "total": len(chosen), "unpriced": sorted(costing.unpriced)}


def conversation(store: Store, conv: str, *, now_ms: int | None = None) -> dict[str, Any]:
    """One conversation (its key) as :func:`conversations` lists it — also one with no message yet:
    :func:`aggregator.transcript.header` with ``active`` and ``cost_usd``."""
    view = header(store, conv)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    view["active"] = is_active(ts_ms(view["last_ts"]), now_ms, active_minutes_setting())
    view["cost_usd"] = conversation_cost(store, conv) if view["responses"] else 0.0
    return view
