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
from aggregator.errors import ConfigError, StoreError
from aggregator.fts import ROLES, parts, snippet, terms, translate
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.projects import matches, project_paths
from aggregator.searchindex import Row, SearchIndex
from aggregator.store import Store
from aggregator.text import iso_ms
from aggregator.transcript import conversation_key


def select_projects(store: Store, query: str) -> set[str]:
    """Project directory names that ``--project query`` selects (see :func:`aggregator.projects.matches`)."""
    return {p for p, path in project_paths(store).items() if matches(query, p, path)}


def search(
    store: Store,
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
    """
    t0 = time.perf_counter()
    match = translate(query)
    if role is not None and role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    conv = conversation_key(store, conversation) if conversation else None
    projects = select_projects(store, project) if project else None
    Projector(store).catch_up()  # titles and projects as of now (a no-op when current)
    rows: list[Row] = []
    total = 0
    try:
        index.catch_up(store, progress)
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
    convs = sorted({r.conv for r in rows})
    titles = store.projection_fields(convs, ["title"])
    title_of = {c: (t[0] or None) for c, t in zip(convs, titles, strict=True)}
    paths = project_paths(store, convs)
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
        for r, snip in zip(rows, snippets(store, rows, terms(query)), strict=True)
    ]
    return {"query": query, "total": total, "took_ms": round((time.perf_counter() - t0) * 1000, 1), "hits": hits}


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
