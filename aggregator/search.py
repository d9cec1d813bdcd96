"""``agg search`` as a library call: the index caught up, the query translated and run, hits with the
conversation's title and readable project — a JSON-able answer (docs/design.md §9).

Each hit is one text of one event: the ``role`` says which (``user``, ``assistant``, ``tool`` for
tool calls and results, ``title``, ``summary``), ``id`` is the event id, ``snippet`` the text
around the matched words, cut from the stored record, with each match between ``⟦`` and ``⟧``
(:data:`aggregator.fts.MARK`; the text's own ``⟦⟧`` are shown as ``[]``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from aggregator import defaults
from aggregator.buckets import Buckets, stores_of
from aggregator.errors import ConfigError, StoreError
from aggregator.fts import ROLES, parts, snippet, terms, translate
from aggregator.parse import loads
from aggregator.projections import catch_up_all
from aggregator.projects import matches, project_paths
from aggregator.searchindex import Row, SearchIndex
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.transcript import conversation_key


def select_projects(store: Store | Buckets, query: str) -> set[str]:
    """Project directory names that ``--project query`` selects (see :func:`aggregator.projects.matches`)."""
    return {p for one in stores_of(store) for p, path in project_paths(one).items() if matches(query, p, path)}


def search(
    store: Store | Buckets,
    index: SearchIndex,
    query: str,
    *,
    project: str | None = None,
    conversation: str | None = None,
    role: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = defaults.SEARCH_LIMIT,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Search the record; returns ``{"query", "total", "took_ms", "hits": [...]}``.

    The index is caught up with the log first, so the answer covers every event stored when the
    call began. ``role`` limits hits to one role (``user`` / ``assistant`` leave out tool calls
    and results, titles and summaries). A query without any word raises
    :class:`~aggregator.errors.QueryError`; an unknown ``conversation`` :class:`~aggregator.errors.NotFound`.
    On a cluster store (its :class:`~aggregator.buckets.Buckets`) the index follows every bucket's
    log (:meth:`SearchIndex.follow`); a hit's ``seq`` is then its bucket's.
    """
    t0 = time.perf_counter()
    match = translate(query)
    if role is not None and role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    stores = stores_of(store)
    if not conversation:
        conv = None
    elif isinstance(store, Buckets):
        conv = store.find(conversation)[1]
    else:
        conv = conversation_key(store, conversation)
    projects = select_projects(store, project) if project else None
    catch_up_all(stores)  # titles and projects as of now (a no-op when current)
    rows: list[Row] = []
    total = 0
    try:
        index.follow(stores, progress)
        if projects is None or projects:
            total, rows = index.query(
                match,
                roles=(role,) if role else (),
                conv=conv,
                projects=projects,
                since_ms=since_ms,
                until_ms=until_ms,
                limit=limit,
            )
    except sqlite3.Error as e:  # e.g. a full disk: the index keeps its last whole step
        raise StoreError(f"search index {index.path}: {e}") from None
    title_of: dict[str, str | None] = {}
    paths: dict[str, str] = {}
    owner = _owners(stores, {r.conv for r in rows})
    for one in stores:
        convs = sorted(c for c, o in owner.items() if o is one)
        if convs or len(stores) == 1:
            titles = one.projection_fields(convs, ["title"])
            title_of.update((c, t[0] or None) for c, t in zip(convs, titles, strict=True))
            paths.update(project_paths(one, convs))
    hits = [
        {
            "conv": r.conv,
            "project": r.project,
            "project_path": paths.get(r.project),
            "title": title_of.get(r.conv),
            "seq": r.seq,
            "id": r.id,
            "role": r.role,
            "agent": r.agent,
            "ts": iso_ms(r.ts),
            "snippet": snip,
        }
        for r, snip in zip(rows, _snippets(owner, rows, terms(query)), strict=True)
    ]
    return {"query": query, "total": total, "took_ms": round((time.perf_counter() - t0) * 1000, 1), "hits": hits}


def _owners(stores: list[Store], convs: set[str]) -> dict[str, Store]:
    """The store (bucket) of each of ``convs``; one store: it holds them all."""
    if len(stores) == 1:
        return dict.fromkeys(convs, stores[0])
    out: dict[str, Store] = {}
    for one in stores:
        wanted = sorted(convs - out.keys())
        if not wanted:
            break
        pipe = one.r.pipeline(transaction=False)
        for c in wanted:
            pipe.zscore(one.keys.convs, c)
        out.update((c, one) for c, score in zip(wanted, pipe.execute(), strict=True) if score is not None)
    return out


def _snippets(owner: dict[str, Store], rows: list[Row], query_terms: list[tuple[str, bool, bool]]) -> list[str]:
    """:func:`snippets` of hits in several stores (each hit's conversation's own)."""
    stores = list({id(s): s for s in owner.values()}.values())
    if len(stores) <= 1:
        return snippets(stores[0], rows, query_terms) if stores else [snippet("", query_terms) for _ in rows]
    out: dict[int, str] = {}
    for one in stores:
        mine = [(i, r) for i, r in enumerate(rows) if owner.get(r.conv) is one]
        out.update(zip((i for i, _ in mine), snippets(one, [r for _, r in mine], query_terms), strict=True))
    return [out.get(i, snippet("", query_terms)) for i in range(len(rows))]


def snippets(store: Store, rows: list[Row], query_terms: list[tuple[str, bool, bool]]) -> list[str]:
    """The snippet of each hit, cut from its event's newest stored version (two round trips)."""
    out = []
    for row, raw in zip(rows, store.newest_bodies([(row.conv, row.id) for row in rows]), strict=True):
        text = ""
        if raw:
            try:
                text = next((t for role, t in parts(loads(raw)) if role == row.role), "")
            except ValueError:
                text = ""
        out.append(snippet(text, query_terms))
    return out
