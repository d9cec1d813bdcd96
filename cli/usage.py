"""``agg usage``: token usage and its cost from the projections (never from files)."""

from __future__ import annotations

import sys
from typing import Any

import click

from aggregator.projections import catch_up_all
from aggregator.text import cut_left, cut_width, pad_width
from aggregator.usage import BY_CHOICES, report
from cli.app import App, app_context, emit_json
from cli.formats import compact, date_option, money, terminal_width
from cli.quick import run_quick

NUMBERS = (("input", "IN"), ("output", "OUT"), ("cache_read", "CACHE R"), ("cache_creation", "CACHE W"))
"""Token columns of the table: field, heading."""

NUM_W, COST_W = 7, 9


@click.command("usage")
@click.option(
    "--by",
    type=click.Choice(BY_CHOICES),
    default="conversation",
    show_default=True,
    help="Sum per conversation, project, model, day, week or month (UTC; a week is named by its Monday).",
)
@date_option("--since", end=False)
@date_option("--until", end=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (full numbers, cost_usd per row).")
@click.pass_context
def usage_cmd(ctx: click.Context, by: str, since: int | None, until: int | None, as_json: bool) -> None:
    """Token usage and cost, each API response counted once (docs/design.md §6).

    Cost is computed offline from the list prices shipped with agg (AGG_PRICES=FILE adds or
    overrides models); a model without a price shows n/a, never $0. Dates are UTC days.
    """
    with app_context(ctx) as app:
        run_quick(app, lambda: usage(app, by, since, until, as_json))


def usage(app: App, by: str, since: int | None, until: int | None, as_json: bool) -> None:
    """``agg usage`` on ``app``'s connection (the quick client's, or redis-py's)."""
    buckets = app.buckets()
    # Two GETs when the projections are current; else it applies the log, which only redis-py does
    # (the quick client hands over at its first write: cli.quick).
    catch_up_all(buckets)
    rep = report(buckets, by, since, until)
    if as_json:
        emit_json(rep)
    else:
        for line in table_lines(rep, terminal_width(), sys.stdout.isatty()):
            click.echo(line)
    for model in rep["prices"]["unpriced"]:
        click.echo(f"agg: no price for model {model!r}: its cost shows as n/a (add it with AGG_PRICES)", err=True)
    if not rep["complete"]:
        click.echo("agg: usage was projected by an older agg; run `agg replay --rebuild` for full figures", err=True)


def table_lines(rep: dict[str, Any], width: int, color: bool) -> list[str]:
    """``agg usage`` as a table that fits ``width`` columns (80 by default), TOTAL last."""
    from aggregator.render import Terminal  # not for --json, which must start fast (cli.quick)

    term = Terminal(width, color)
    by = rep["by"]
    label_w = max(12, width - len(NUMBERS) * (NUM_W + 2) - COST_W - 2)
    head = pad_width(by.upper(), label_w) + "".join("  " + pad_width(h, NUM_W, right=True) for _, h in NUMBERS)
    out = [term.style(head + "  " + pad_width("COST", COST_W, right=True), "dim")]
    for row in rep["rows"]:
        out.append(_line(_label(row, by, label_w), row, label_w))
    out.append(term.style("-" * min(width, label_w + len(NUMBERS) * (NUM_W + 2) + COST_W + 2), "dim"))
    out.append(term.style(_line("TOTAL", rep["total"], label_w), "bold"))
    note = f"list prices of {rep['prices']['date']}"
    if rep["since"] or rep["until"]:
        note = f"{rep['since'] or '…'} to {rep['until'] or '…'} (UTC); " + note
    out.append(term.style(cut_width(note, width), "dim"))
    return out


def _line(label: str, row: dict[str, Any], label_w: int) -> str:
    nums = "".join("  " + pad_width(compact(row[f]), NUM_W, right=True) for f, _ in NUMBERS)
    return (
        pad_width(label.replace("\n", " "), label_w)
        + nums
        + "  "
        + pad_width(money(row["cost_usd"]), COST_W, right=True)
    )


def _label(row: dict[str, Any], by: str, width: int) -> str:
    key = str(row["key"] or "(unknown)")
    if by == "conversation":
        return f"{key[:8]} {row.get('title') or ''}".rstrip()
    if by == "project":
        return cut_left(str(row.get("project_path") or key), width)
    return key
