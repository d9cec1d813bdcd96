"""``agg rejects``: the lines agg refused to store, where they are and why."""

from __future__ import annotations

import click

from cli.app import app_context, emit_json


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
        records, kept = buckets.rejections(limit)
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
