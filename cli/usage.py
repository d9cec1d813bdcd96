"""``agg usage``: token usage from the projections (never from files)."""

from __future__ import annotations

import click

from aggregator.projections import Projector
from aggregator.usage import BY_CHOICES, COUNTS, report
from cli.app import app_context, emit_json


@click.command("usage")
@click.option(
    "--by",
    type=click.Choice(BY_CHOICES),
    default="conversation",
    show_default=True,
    help="Sum per conversation, project, model or day (UTC).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def usage_cmd(ctx: click.Context, by: str, as_json: bool) -> None:
    """Token usage, each API response counted once (docs/design.md §6), summed per conversation, project,
    model or day."""
    with app_context(ctx) as app:
        store = app.store()
        Projector(store).catch_up()  # a no-op (one GET, one XRANGE) when the projections are current
        rep = report(store, by)
        if as_json:
            emit_json(rep)
            return
        head = [by, *COUNTS, "total"]
        rows = [[_label(r, by), *(f"{r[c]:,}" for c in (*COUNTS, "total"))] for r in rep["rows"]]
        rows.append(["TOTAL", *(f"{rep['total'][c]:,}" for c in (*COUNTS, "total"))])
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
        widths[0] = min(widths[0], 60)
        for i, row in enumerate([head, *rows]):
            if i == len(rows):
                click.echo("-" * (sum(widths) + 2 * (len(widths) - 1)))
            cells = [str(row[0])[: widths[0]].ljust(widths[0])]
            cells += [str(x).rjust(w) for x, w in zip(row[1:], widths[1:], strict=True)]
            click.echo("  ".join(cells))


def _label(row: dict[str, object], by: str) -> str:
    key = str(row["key"] or "(unknown)")
    if by == "conversation" and row.get("title"):
        return f"{key[:8]} {row['title']}"
    return key
