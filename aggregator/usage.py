"""Token usage and its cost as the projections hold them: totals, and tables by conversation, project,
model, day, week or month, over a date range.

Reading never touches files or the log: totals are one hash, and every table is summed from the
usage cells (one hash: per conversation, model, UTC day and context tier), which is also what the
cost needs — a model's price applies to its own tokens. How usage is counted (docs/design.md §6)
is in :mod:`aggregator.projections`; prices in :mod:`aggregator.prices`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aggregator.dates import day_of, month_of, week_of
from aggregator.errors import ConfigError
from aggregator.prices import Costing, add_cost, rounded
from aggregator.projections import CELL_FIELDS, USAGE_FIELDS, Projector, parse_cell_field
from aggregator.projects import project_paths
from aggregator.store import Store

BY_CHOICES = ("conversation", "project", "model", "day", "week", "month")
"""What ``agg usage --by`` accepts (days, weeks and months are UTC; a week is named by its Monday)."""

COUNTS = (*USAGE_FIELDS, "responses")
"""Numbers in every usage row: the four token counts and the number of API responses."""

ROW_COUNTS = (*CELL_FIELDS,)
"""Numbers a row carries: :data:`COUNTS` and ``cache_creation_1h`` (the 1-hour share of the cache writes)."""


@dataclass(frozen=True)
class Cell:
    """Usage of one conversation with one model on one UTC day, in one context tier."""

    conv: str
    model: str
    day: str
    long: int
    counts: dict[str, int]


def cells(store: Store) -> Iterator[Cell]:
    """Every usage cell of the store."""
    grouped: dict[tuple[str, str, str, int], dict[str, int]] = defaultdict(dict)
    for f, v in store.r.hscan_iter(store.keys.usage_cells, count=5000):
        conv, model, day, long, name = parse_cell_field(f)
        grouped[(conv, model, day, long)][name] = int(v)
    for (conv, model, day, long), counts in grouped.items():
        yield Cell(conv, model, day, long, counts)


def totals(store: Store) -> dict[str, int]:
    """Usage over the whole store: ``input``, ``output``, ``cache_read``, ``cache_creation``, ``responses``."""
    raw = store.r.hgetall(store.keys.usage_total)
    return {name: int(raw.get(name.encode(), 0)) for name in COUNTS}


def _in_range(day: str, since: str | None, until: str | None) -> bool:
    if since is None and until is None:
        return True
    return bool(day) and (since is None or day >= since) and (until is None or day <= until)


def _group_key(by: str, cell: Cell, project_of: dict[str, str]) -> str:
    if by == "conversation":
        return cell.conv
    if by == "project":
        return project_of.get(cell.conv, "")
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
        self.counts: dict[str, int] = dict.fromkeys(ROW_COUNTS, 0)
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
    store: Store,
    by: str,
    since_day: str | None = None,
    until_day: str | None = None,
    convs: set[str] | None = None,
    costing: Costing | None = None,
) -> Usage:
    """Sum the usage cells into one row per conversation / project / model / day / week / month.

    Only cells whose UTC day lies in ``[since_day, until_day]`` (``YYYY-MM-DD``; either may be
    None) and, if given, whose conversation is in ``convs``. Days, weeks and months are sorted
    oldest first, other tables by ``total`` (largest first). Conversation rows also carry
    ``project``, ``project_path`` and ``title``; project rows ``project_path``.
    """
    if by not in BY_CHOICES:
        raise ConfigError(f"bad --by {by!r}: choose one of {', '.join(BY_CHOICES)}")
    costing = costing or Costing()
    all_cells = list(cells(store))
    conv_keys = sorted({c.conv for c in all_cells})
    fields = store.hmget_many([store.keys.proj(c) for c in conv_keys], ["project", "title"])
    project_of = {c: (v[0] or b"").decode() for c, v in zip(conv_keys, fields, strict=True)}
    title_of = {c: v[1].decode() if v[1] else None for c, v in zip(conv_keys, fields, strict=True)}
    rows: dict[str, _Row] = {}
    total = _Row()
    responses = 0
    for cell in all_cells:
        responses += cell.counts.get("responses", 0)
        if not _in_range(cell.day, since_day, until_day) or (convs is not None and cell.conv not in convs):
            continue
        cost = costing.cell(cell.model, cell.long, cell.counts)
        key = _group_key(by, cell, project_of)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _Row()
        row.add(cell, cost)
        total.add(cell, cost)
    paths = project_paths(store, conv_keys) if by in ("conversation", "project") else {}
    out = []
    for key, row in rows.items():
        d = row.as_dict(key or None)
        if by == "conversation":
            d["project"] = project_of.get(key) or None
            d["project_path"] = paths.get(project_of.get(key, ""))
            d["title"] = title_of.get(key)
        elif by == "project":
            d["project_path"] = paths.get(key)
        out.append(d)
    if by in ("day", "week", "month"):
        out.sort(key=lambda r: r["key"] or "")
    else:
        out.sort(key=lambda r: (-r["total"], r["key"] or ""))
    tot = total.as_dict(None)
    del tot["key"]
    return Usage(out, tot, dict(costing.unpriced), responses == totals(store)["responses"])


def report(
    store: Store, by: str, since_ms: int | None = None, until_ms: int | None = None, convs: set[str] | None = None
) -> dict[str, Any]:
    """What ``agg usage --json`` prints: ``by``, ``seq`` (last log seq covered), ``since`` / ``until``
    (UTC days, or null), ``rows``, ``total``, and ``prices`` (the table's ``date``, and
    ``unpriced``: models with no price, whose rows have ``cost_usd`` null)."""
    costing = Costing()
    since = day_of(since_ms) if since_ms is not None else None
    until = day_of(until_ms) if until_ms is not None else None
    u = summarize(store, by, since, until, convs, costing)
    return {
        "by": by,
        "seq": Projector(store).checkpoint(),
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


def conversation_costs(store: Store, costing: Costing | None = None) -> dict[str, float | None]:
    """Cost of each conversation with usage (None where a model has no price)."""
    costing = costing or Costing()
    out: dict[str, float | None] = {}
    for cell in cells(store):
        out[cell.conv] = add_cost(out.get(cell.conv, 0.0), costing.cell(cell.model, cell.long, cell.counts))
    return {c: rounded(v) for c, v in out.items()}
