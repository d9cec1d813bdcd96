"""Output and option helpers the command modules share: terminal width, compact numbers, money,
``--since`` / ``--until`` dates. Light on purpose (``agg usage`` imports it: :mod:`cli.quick`)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from aggregator.dates import DATE_HELP, parse_when
from aggregator.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def terminal_width(default: int = 80) -> int:
    """Columns of the terminal stdout writes to (``default`` when it is not a terminal)."""
    if not sys.stdout.isatty():
        return default
    return max(60, shutil.get_terminal_size((default, 24)).columns)


def compact(n: int) -> str:
    """A count in at most 6 columns: ``9,999``, ``12.3k``, ``456k``, ``1.2M``, ``78M``, ``1.2G``."""
    if n < 10_000:
        return f"{n:,}"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)


def money(cost: float | None) -> str:
    """A cost in dollars with cents (``n/a`` when unknown)."""
    return "n/a" if cost is None else f"${cost:,.2f}"


def date_option(name: str, end: bool) -> Callable[[F], F]:
    """``--since`` / ``--until DATE``: the value becomes epoch milliseconds (a day's end for ``--until``)."""

    def parse(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
        try:
            return None if value is None else parse_when(value, end=end)
        except ConfigError as e:
            raise click.BadParameter(str(e).removeprefix(f"bad date {value!r}: ")) from None

    what = "until" if end else "since"
    return click.option(name, metavar="DATE", callback=parse, help=f"Only {what} DATE ({DATE_HELP}).")
