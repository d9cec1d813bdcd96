"""Token usage and its cost as the projections hold them: totals, and tables by conversation, project,
model, day, week or month, over a date range.

Reading never touches files or the log: totals are one hash, and every table is summed from the
smallest usage tally that answers it (per model and context tier — what the cost needs, a model's
price applying to its own tokens — and per UTC day, so that any date range can be asked for): per
conversation for conversation tables, per project for project tables, per day for the others.
How usage is counted (docs/design.md §6) is in :mod:`aggregator.projections`; prices in
:mod:`aggregator.prices`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from aggregator.buckets import StoreSet, per_bucket, stores_of
from aggregator.dates import day_of, month_of, week_of
from aggregator.errors import ConfigError
from aggregator.prices import Costing, add_cost, rounded
from aggregator.projections import CELL_FIELDS, TALLIES, USAGE_FIELDS
from aggregator.projects import project_paths
from aggregator.store import Store

BY_CHOICES = ("conversation", "project", "model", "day", "week", "month")
"""What ``agg usage --by`` accepts (days, weeks and months are UTC; a week is named by its Monday)."""

COUNTS = (*USAGE_FIELDS, "responses")
"""Numbers in every usage row: the four token counts and the number of API responses."""


TALLY_OF = {"conversation": "cells", "project": "projects"}
"""The tally each table reads (the others: ``days``): the smallest that answers it."""


@dataclass(frozen=True)
class Cell:
    """Usage of one model in one context tier, on one UTC day, for one conversation or project
    (``who``; empty in the ``days`` tally)."""

    who: str
    model: str
    day: str
    long: int
    counts: dict[str, int]


def cells(store: Store, tally: str = "cells", who: str | None = None) -> list[Cell]:
    """Every entry of a usage tally (:data:`aggregator.projections.TALLIES`), or with ``who`` only
    the entries of that conversation or project (a scan that sends back only their fields)."""
    parts = TALLIES[tally]
    model, day, long = parts.index("model"), parts.index("day"), parts.index("long")
    who_at = 0 if parts[0] in ("conv", "project") else None
    entries = store.usage_tally(tally) if who is None else store.usage_tally_of(tally, who)
    grouped: dict[bytes, dict[str, int]] = defaultdict(dict)
    for f, v in entries.items():
        # JSON [...parts, "name"]: group on the bytes before the name, parse each group's once.
        head, _, name = f.rpartition(b",")
        grouped[head][name[1:-2].decode()] = v
    out = []
    for head, counts in grouped.items():
        k = orjson.loads(head + b"]")
        out.append(Cell(k[who_at] if who_at is not None else "", k[model], k[day], k[long], counts))
    return out


def totals(store: StoreSet) -> dict[str, int]:
    """Usage over the whole store (every bucket of a cluster store): ``input``, ``output``,
    ``cache_read``, ``cache_creation``, ``responses``."""
    out = dict.fromkeys(COUNTS, 0)
    for one in stores_of(store):
        raw = one.usage_total()
        for name in COUNTS:
            out[name] += raw.get(name, 0)
    return out


def _in_range(day: str, since: str | None, until: str | None) -> bool:
    if since is None and until is None:
        return True
    return bool(day) and (since is None or day >= since) and (until is None or day <= until)


def _group_key(by: str, cell: Cell) -> str:
    if by in ("conversation", "project"):
        return cell.who
    if by == "model":
        return cell.model
    if by == "week":
        return week_of(cell.day)
    if by == "month":
        return month_of(cell.day)
    return cell.day


class _Row:
    __slots__ = ("cost", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(CELL_FIELDS, 0)
        self.cost: float | None = 0.0

    def add(self, cell: Cell, cost: float | None) -> None:
        for name, n in cell.counts.items():
            if name in self.counts:
                self.counts[name] += n
        self.cost = add_cost(self.cost, cost)

    def as_dict(self, key: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"key": key, **self.counts}
        row["total"] = sum(self.counts[n] for n in USAGE_FIELDS)
        row["cost_usd"] = rounded(self.cost)
        return row


@dataclass
class Usage:
    """A usage table and its total (see :func:`report`)."""

    rows: list[dict[str, Any]]
    total: dict[str, Any]
    unpriced: dict[str, int]
    complete: bool
    """False when the cells do not add up to the totals: projections from an older agg."""


def summarize(
    store: StoreSet,
    by: str,
    since_day: str | None = None,
    until_day: str | None = None,
    costing: Costing | None = None,
) -> Usage:
    """Sum the usage tallies into one row per conversation / project / model / day / week / month.

    Only responses whose UTC day lies in ``[since_day, until_day]`` (``YYYY-MM-DD``; either may be
    None). Days, weeks and months are sorted oldest first, other tables by ``total`` (largest
    first). Conversation rows also carry ``project``, ``project_path`` and ``title``; project rows
    ``project_path``. Over a cluster store's buckets the tallies add up: a conversation, and a
    project, is in one bucket (:mod:`aggregator.buckets`).
    """
    if by not in BY_CHOICES:
        raise ConfigError(f"bad --by {by!r}: choose one of {', '.join(BY_CHOICES)}")
    costing = costing or Costing()
    rows: dict[str, _Row] = {}
    total = _Row()
    responses = 0
    stores = stores_of(store)
    owner: dict[str, Store] = {}
    for one in stores:
        for cell in cells(one, TALLY_OF.get(by, "days")):
            responses += cell.counts.get("responses", 0)
            if not _in_range(cell.day, since_day, until_day):
                continue
            cost = costing.cell(cell.model, cell.long, cell.counts)
            key = _group_key(by, cell)
            row = rows.get(key)
            if row is None:
                row = rows[key] = _Row()
                owner[key] = one
            row.add(cell, cost)
            total.add(cell, cost)
    out = [row.as_dict(key or None) for key, row in rows.items()]
    if by == "conversation":
        fields: dict[str, Any] = {}
        paths: dict[str, str] = {}
        for one in stores:
            convs = [r["key"] for r in out if r["key"] and owner[r["key"]] is one]
            if convs or len(stores) == 1:
                fields.update(zip(convs, one.projection_fields(convs, ["project", "title"]), strict=True))
                paths.update(project_paths(one, convs))
        for r in out:
            project, title = fields.get(r["key"], (None, None))
            r["project"] = project or None
            r["project_path"] = paths.get(r["project"] or "")
            r["title"] = title or None
    elif by == "project":
        paths = {}
        for one in stores:
            paths.update(project_paths(one))
        for r in out:
            r["project_path"] = paths.get(r["key"] or "")
    if by in ("day", "week", "month"):
        out.sort(key=lambda r: r["key"] or "")
    else:
        out.sort(key=lambda r: (-r["total"], r["key"] or ""))
    tot = total.as_dict(None)
    del tot["key"]
    return Usage(out, tot, dict(costing.unpriced), responses == totals(store)["responses"])


def report(store: StoreSet, by: str, since_ms: int | None = None, until_ms: int | None = None) -> dict[str, Any]:
    """What ``agg usage --json`` prints: ``by``, ``seq`` (last log seq covered; on a cluster, one
    per bucket), ``since`` / ``until``
    (UTC days, or null), ``rows``, ``total``, and ``prices`` (the table's ``date``, and
    ``unpriced``: models with no price, whose rows have ``cost_usd`` null)."""
    costing = Costing()
    since = day_of(since_ms) if since_ms is not None else None
    until = day_of(until_ms) if until_ms is not None else None
    u = summarize(store, by, since, until, costing)
    return {
        "by": by,
        "seq": per_bucket(store, [one.projections_seq() for one in stores_of(store)]),
        "since": since,
        "until": until,
        "rows": u.rows,
        "total": u.total,
        "prices": {"date": costing.table.date, "unpriced": sorted(u.unpriced)},
        "complete": u.complete,
    }


def table(store: Store, by: str) -> list[dict[str, Any]]:
    """One row per ``by`` over all time (see :func:`summarize`)."""
    return summarize(store, by).rows


def conversation_costs(store: StoreSet, costing: Costing | None = None) -> dict[str, float | None]:
    """Cost of each conversation with usage (None where a model has no price)."""
    costing = costing or Costing()
    out: dict[str, float | None] = {}
    for one in stores_of(store):
        for cell in cells(one):
            out[cell.who] = add_cost(out.get(cell.who, 0.0), costing.cell(cell.model, cell.long, cell.counts))
    return {c: rounded(v) for c, v in out.items()}


def conversation_cost(store: Store, conv: str, costing: Costing | None = None) -> float | None:
    """Cost of one conversation, as :func:`conversation_costs` has it (None without usage cells,
    or where a model has no price), reading only that conversation's cells."""
    costing = costing or Costing()
    found = cells(store, who=conv)
    total: float | None = 0.0
    for cell in found:
        total = add_cost(total, costing.cell(cell.model, cell.long, cell.counts))
    return rounded(total) if found else None
