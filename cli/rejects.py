"""``agg rejects``: the lines agg refused to store, where they are and why."""

from __future__ import annotations

from typing import Any

import click

from aggregator.buckets import Buckets
from cli.app import app_context, emit_json


def rejections(buckets: Buckets, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """:meth:`~aggregator.store.Store.rejections` over every bucket: newest first, at most ``limit``;
    and how many are kept in all."""
    if len(buckets) == 1:
        return buckets.stores[0].rejections(limit)
    records: list[dict[str, Any]] = []
    kept = 0
    for store in buckets:
        mine, n = store.rejections(limit)
        records += mine
        kept += n
    records.sort(key=lambda r: str(r.get("at") or ""), reverse=True)  # stable: a bucket's own order among equals
    return records[:limit] if limit is not None else records, kept


@click.command("rejects")
@click.option("--json", "as_json", is_flag=True, help='Print {"rejects": [...]} as one JSON object.')
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N, newest first. Default: all kept.")
@click.pass_context
def rejects_cmd(ctx: click.Context, as_json: bool, limit: int | None) -> None:
    """List rejected lines, newest first: file, byte offset, reason, when, and the line's start.

    As many as `agg status` counts, up to the newest 10,000 (older ones are counted, not kept).
    """
    with app_context(ctx) as app:
        buckets = app.buckets()
        rejected = buckets.stats()["rejected"]
        records, kept = rejections(buckets, limit)
        if as_json:
            emit_json({"rejects": records, "rejected": rejected, "kept": kept})
            return
        if rejected > kept:
            click.echo(f"{rejected:,} lines rejected; only the newest {kept:,} are kept. Newest first:")
        else:
            click.echo(f"{rejected:,} lines rejected{'. Newest first:' if records else ''}")
        for r in records:
            prefix = "".join(c if c.isprintable() else repr(c)[1:-1] for c in r["prefix"])  # one line
            click.echo(f"{r['at']}  {r['file']}  offset {r['offset']}: {r['reason']}\n    {prefix}")
