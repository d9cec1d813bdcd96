"""``agg compact``: seal idle conversations' lines, and the log's older batches, into compressed
chunks now."""

from __future__ import annotations

import click

from aggregator import defaults
from aggregator.compaction import compact_buckets
from aggregator.config import seal_idle_s
from cli.app import app_context, emit_json


@click.command("compact")
@click.option(
    "--idle",
    "idle",
    type=click.FloatRange(min=0),
    default=None,
    help="Seal conversations whose newest record is at least this many seconds old "
    "(default: AGG_SEAL_IDLE_S, else 3600; 0: every conversation).",
)
@click.option(
    "--keep-log",
    type=click.IntRange(min=0),
    default=defaults.LOG_KEEP_BATCHES,
    show_default=True,
    help="Newest log batches to keep in the stream; older ones the projections have applied are archived "
    "(on a Redis Cluster, in each bucket's log).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def compact_cmd(ctx: click.Context, idle: float | None, keep_log: int, as_json: bool) -> None:
    """Seal idle conversations' lines, and the log's older batches, into compressed chunks
    (replay and tail stay byte for byte)."""
    with app_context(ctx) as app:
        idle_s = seal_idle_s() if idle is None else idle
        report = compact_buckets(app.buckets(), idle_s, keep_log=keep_log)
        if as_json:
            emit_json(report.as_dict())
            return
        if report.lines:
            click.echo(
                f"sealed {report.lines:,} lines of {report.conversations:,} conversations: "
                f"{_sizes(report.raw_bytes, report.sealed_bytes)} in {report.chunks:,} chunks"
            )
        else:
            click.echo(f"nothing to seal: no conversation idle for {idle_s:g} s has raw lines")
        if report.log_batches:
            click.echo(
                f"archived {report.log_batches:,} log batches: "
                f"{_sizes(report.log_raw_bytes, report.log_sealed_bytes)} in {report.log_segments:,} segments"
            )


def _sizes(raw: int, sealed: int) -> str:
    ratio = f" ({raw / sealed:.1f}x)" if sealed else ""
    return f"{raw / 1e6:,.1f} MB -> {sealed / 1e6:,.1f} MB{ratio}"
