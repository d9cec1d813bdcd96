"""``agg compact``: seal idle conversations' lines into compressed chunks now."""

from __future__ import annotations

import click

from aggregator.compaction import Compactor
from aggregator.config import seal_idle_s
from aggregator.projections import Projector
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def compact_cmd(ctx: click.Context, idle: float | None, as_json: bool) -> None:
    """Seal idle conversations' lines into compressed chunks (replay stays byte for byte)."""
    with app_context(ctx) as app:
        idle_s = seal_idle_s() if idle is None else idle
        store = app.store()
        Projector(store).catch_up()  # idleness is read from the projections
        report = Compactor(store).run(idle_s)
        if as_json:
            emit_json(report.as_dict())
            return
        if not report.lines:
            click.echo(f"nothing to seal: no conversation idle for {idle_s:g} s has raw lines")
            return
        ratio = report.raw_bytes / report.sealed_bytes if report.sealed_bytes else 0.0
        click.echo(
            f"sealed {report.lines:,} lines of {report.conversations:,} conversations: "
            f"{report.raw_bytes / 1e6:,.1f} MB -> {report.sealed_bytes / 1e6:,.1f} MB "
            f"({ratio:.1f}x) in {report.chunks:,} chunks, {report.seconds:.1f} s"
        )
