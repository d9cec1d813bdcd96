"""``agg list`` as a library call: conversations newest activity first, with their cost (docs/design.md §9).

The same answers serve ``agg list --json``, ``agg mcp``'s ``list_conversations`` and ``agg serve``'s
``/api/conversations`` (which pages through them with ``offset``). Choosing and ordering reads three
fields of each conversation's projection; only the conversations of the page are read whole, and
the projects' paths and the costs (:class:`Totals`) once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aggregator.buckets import StoreSet, stores_of
from aggregator.config import active_minutes as active_minutes_setting
from aggregator.parse import ts_ms
from aggregator.prices import Costing
from aggregator.prices import load as load_prices
from aggregator.projections import Projector, catch_up_all
from aggregator.projects import matches, project_paths
from aggregator.store import Store
from aggregator.transcript import header
from aggregator.usage import conversation_cost, conversation_costs
from aggregator.views import conversation_views, is_active


@dataclass(frozen=True)
class Totals:
    """What a listing reads about every conversation besides choosing them: the projects' readable
    paths and each conversation's cost. A caller that lists often (``agg serve``) keeps one while the
    projections stay as they were (:func:`totals_state`) instead of reading them for every page."""

    paths: dict[str, str]
    costs: dict[str, float | None]
    unpriced: list[str]
    """Models with tokens but no price."""


def totals(store: StoreSet) -> Totals:
    """The :class:`Totals` of the store's projections as they are now (every bucket's)."""
    costing = Costing()
    costs = conversation_costs(store, costing)
    paths: dict[str, str] = {}
    for one in stores_of(store):
        paths.update(project_paths(one))
    return Totals(paths, costs, sorted(costing.unpriced))


def totals_state(store: Store) -> tuple[Any, ...]:
    """Something that changes whenever :func:`totals` could: the projections' checkpoint, the usage
    totals, the number of conversations, the price table in use."""
    usage = store.usage_total()
    return (
        Projector(store).checkpoint(),
        tuple(sorted(usage.items())),
        store.stats()["conversations"],
        id(load_prices()),
    )


def conversations(
    store: StoreSet,
    *,
    project: str | None = None,
    active: bool = False,
    since_ms: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    now_ms: int | None = None,
    known: Totals | None = None,
) -> dict[str, Any]:
    """``{"conversations": [...], "total", "unpriced"}``: each conversation's projection
    (:func:`aggregator.views.conversation_view`) plus ``project_path`` and ``cost_usd`` (null if one
    of its models has no price), newest activity first; ``total`` counts the matches before
    ``offset`` and ``limit``; ``unpriced`` names the models without a price.

    ``project`` selects as ``--project`` does (:func:`aggregator.projects.matches`), ``active``
    keeps active ones, ``since_ms`` those with activity since then. ``known``: the :class:`Totals`
    of the projections as they are (else read here). Over a cluster store's buckets: their
    conversations in one list.
    """
    stores = stores_of(store)
    catch_up_all(stores)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    minutes = active_minutes_setting()
    known = totals(stores) if known is None else known
    chosen: list[tuple[int, str, int]] = []
    for n, one in enumerate(stores):
        convs = one.conversations()
        rows = one.projection_fields(convs, ["last_ms", "messages", "project"])
        for conv, (last, messages, proj) in zip(convs, rows, strict=True):
            if not messages or int(messages) <= 0:
                continue
            name = proj or ""
            if project is not None and not matches(project, name, known.paths.get(name, name)):
                continue
            last_ms = int(last) if last is not None else None
            if active and not is_active(last_ms, now_ms, minutes):
                continue
            if since_ms is not None and (last_ms or 0) < since_ms:
                continue
            chosen.append((-1 if last_ms is None else last_ms, conv, n))
    chosen.sort(reverse=True)
    page = chosen[offset : offset + limit if limit else None]
    views: dict[str, dict[str, Any]] = {}
    for n, one in enumerate(stores):
        mine = [c for _, c, m in page if m == n]
        if mine:
            views.update((v["key"], v) for v in conversation_views(one, mine, now_ms=now_ms, active_minutes=minutes))
    out = [views[c] for _, c, _ in page if c in views]
    for v in out:
        v["project_path"] = known.paths.get(v["project"] or "")
        v["cost_usd"] = known.costs.get(v["key"]) if v["responses"] else 0.0
    return {"conversations": out, "total": len(chosen), "unpriced": list(known.unpriced)}


def conversation(store: Store, conv: str, *, now_ms: int | None = None) -> dict[str, Any]:
    """One conversation (its key) as :func:`conversations` lists it — also one with no message yet:
    :func:`aggregator.transcript.header` with ``active`` and ``cost_usd``."""
    view = header(store, conv)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    view["active"] = is_active(ts_ms(view["last_ts"]), now_ms, active_minutes_setting())
    view["cost_usd"] = conversation_cost(store, conv) if view["responses"] else 0.0
    return view
