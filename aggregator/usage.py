"""Token usage as the projections hold it: totals, and tables by conversation, project, model or day.

Reading never touches files or the log: totals are one hash, each dimension one hash, and the
per-conversation table one script call per 1,000 conversations (``Store.hmget_many``). How usage is counted
(docs/design.md §6) is in :mod:`aggregator.projections`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from aggregator.errors import ConfigError
from aggregator.projections import USAGE_DIMS, USAGE_FIELDS, Projector
from aggregator.store import Store

BY_CHOICES = ("conversation", *USAGE_DIMS)
"""What ``agg usage --by`` accepts."""

COUNTS = (*USAGE_FIELDS, "responses")
"""Numbers in every usage row: the four token counts and the number of API responses."""


def _row(key: str | None, counts: dict[str, int]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key}
    row.update({name: counts.get(name, 0) for name in COUNTS})
    row["total"] = sum(counts.get(name, 0) for name in USAGE_FIELDS)
    return row


def totals(store: Store) -> dict[str, int]:
    """Usage over the whole store: ``input``, ``output``, ``cache_read``, ``cache_creation``, ``responses``."""
    raw = store.r.hgetall(store.keys.usage_total)
    return {name: int(raw.get(name.encode(), 0)) for name in COUNTS}


def table(store: Store, by: str) -> list[dict[str, Any]]:
    """One row per conversation / project / model / day: ``key``, the :data:`COUNTS`, ``total``.

    Days are UTC and sorted oldest first; other tables are sorted by ``total``, largest first.
    Conversation rows also carry ``project`` and ``title``.
    """
    if by not in BY_CHOICES:
        raise ConfigError(f"bad --by {by!r}: choose one of {', '.join(BY_CHOICES)}")
    if by == "conversation":
        rows = _conversation_rows(store)
    else:
        sums: dict[str, dict[str, int]] = defaultdict(dict)
        for f, v in store.r.hgetall(store.keys.usage_by(by)).items():
            value, name = orjson.loads(f)
            sums[value][name] = int(v)
        rows = [_row(value or None, counts) for value, counts in sums.items()]
    if by == "day":
        rows.sort(key=lambda r: r["key"] or "")
    else:
        rows.sort(key=lambda r: (-r["total"], r["key"] or ""))
    return rows


_CONV_FIELDS = [*(f"usage_{n}" for n in COUNTS), "project", "title"]


def _conversation_rows(store: Store) -> list[dict[str, Any]]:
    convs = store.conversations()
    rows = []
    n = len(COUNTS)
    for conv, vals in zip(convs, store.hmget_many([store.keys.proj(c) for c in convs], _CONV_FIELDS), strict=True):
        if not vals[n - 1]:  # no responses
            continue
        row = _row(conv, {name: int(v or 0) for name, v in zip(COUNTS, vals, strict=False)})
        project, title = vals[n], vals[n + 1]
        row["project"] = project.decode() if project else None
        row["title"] = title.decode() if title else None
        rows.append(row)
    return rows


def report(store: Store, by: str) -> dict[str, Any]:
    """What ``agg usage --json`` prints: ``by``, ``seq`` (last log seq covered), ``rows``, ``total``."""
    return {
        "by": by,
        "seq": Projector(store).checkpoint(),
        "rows": table(store, by),
        "total": {k: v for k, v in _row(None, totals(store)).items() if k != "key"},
    }
