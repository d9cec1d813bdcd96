"""``agg replay``: a conversation's events as stored, or the projections recomputed."""

from __future__ import annotations

import sys
from typing import Any

import click

from aggregator.buckets import Buckets, combined_digest
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.text import render
from cli import read
from cli.app import app_context, emit_json


def rebuild_all(buckets: Buckets) -> dict[str, Any]:
    """:meth:`Projector.rebuild` of every bucket, as one result: counts summed, ``seq`` one per
    bucket, and the digests those of the buckets' digests in bucket order
    (:func:`~aggregator.buckets.combined_digest`): a single Redis gives its own store's result."""
    results = [Projector(store).rebuild() for store in buckets]
    if not buckets.cluster:
        return results[0]
    return {
        "rebuilt": results[0]["rebuilt"],
        "entries": sum(r["entries"] for r in results),
        "conversations": sum(r["conversations"] for r in results),
        "seq": [r["seq"] for r in results],
        "digest": combined_digest([r["digest"] for r in results]),
        "digest_before": combined_digest([r["digest_before"] for r in results]),
        "buckets": len(results),
    }


@click.command("replay")
@click.argument("conversation", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "text"]),
    default="jsonl",
    show_default=True,
    help="jsonl: each event's original line, byte for byte; text: one readable line each.",
)
@click.option("--rebuild", is_flag=True, help="Recompute every projection from the event log.")
@click.option("--json", "as_json", is_flag=True, help="With --rebuild: print the result as JSON.")
@click.pass_context
def replay_cmd(ctx: click.Context, conversation: str | None, fmt: str, rebuild: bool, as_json: bool) -> None:
    """Print a CONVERSATION's events in order, or (--rebuild) recompute the projections."""
    if rebuild == (conversation is not None):
        raise click.UsageError("give a CONVERSATION or --rebuild (not both)")
    with app_context(ctx) as app:
        buckets = app.buckets()
        if rebuild:
            res = rebuild_all(buckets)
            res["search_index"] = read.rebuild_index(app, buckets)
            if as_json:
                emit_json(res)
            else:
                click.echo(
                    f"rebuilt {', '.join(res['rebuilt'])}: {res['entries']} log entries, "
                    f"{res['conversations']} conversations, seq {res['seq']}"
                )
                same = res["digest"] == res["digest_before"]
                click.echo(f"digest {res['digest']} ({'unchanged' if same else 'was ' + res['digest_before']})")
                click.echo(read.describe_index(res["search_index"]))
            return
        assert conversation is not None
        store, conv = buckets.resolve(conversation)
        out = sys.stdout.buffer
        for _eid, body in store.replay(conv):
            if fmt == "jsonl":
                out.write(body + b"\n")
            else:
                obj = loads(body)
                env = {"ts": obj.get("timestamp"), "type": obj.get("type"), "agent": obj.get("agentId")}
                out.write(render(obj, env).encode("utf-8", "replace") + b"\n")
        out.flush()
