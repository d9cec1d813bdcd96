"""``agg serve``: local web pages and a JSON API over the record, live.

Registered on the main group by :func:`register` (one line in :mod:`cli.main`). Starlette and
uvicorn are imported only when the command runs, so ``agg --help`` stays fast.
"""

from __future__ import annotations

import os

import click

from aggregator import defaults
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.live.web.access import is_loopback, is_wildcard, load_token, serve_url
from cli.app import get_app

host_option = click.option(
    "--host",
    default=defaults.WEB_HOST,
    envvar="AGG_WEB_HOST",
    show_default=True,
    help="Address to listen on. Anything but a loopback address lets other machines try the token.",
)
port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=defaults.WEB_PORT,
    envvar="AGG_WEB_PORT",
    show_default=True,
    help="Port to listen on (0: any free port; the printed URL has the one chosen).",
)


@click.command("serve")
@host_option
@port_option
@click.option("--no-url", is_flag=True, help="Do not print the URL (agg run prints it for its web part).")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str, port: int, no_url: bool) -> None:
    """Serve web pages of every conversation, live, and a JSON API (/api/...).

    Prints the URL to open, with its access token, as the first line. Every request needs the
    token (the page keeps it in a cookie); requests naming another host are refused.
    """
    from aggregator.live.web.server import serve  # the web stack loads here only
    from aggregator.logs import setup_logging

    setup_logging()

    if is_wildcard(host) or not is_loopback(host):
        click.echo(
            f"agg: warning: serving on {host}: other machines can reach this port (plain HTTP); "
            "anyone with the token can read every conversation",
            err=True,
        )
    serve(get_app(ctx).settings, host=host, port=port, print_url=not no_url)


def web_url(settings: Settings) -> str:
    """The URL ``agg run``'s web part serves (``AGG_WEB_HOST`` / ``AGG_WEB_PORT`` or the defaults)."""
    host = os.environ.get("AGG_WEB_HOST") or defaults.WEB_HOST
    raw = os.environ.get("AGG_WEB_PORT") or str(defaults.WEB_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"bad AGG_WEB_PORT {raw!r}: agg run needs a port from 1 to 65535")
    return serve_url(host, int(raw), load_token(settings))


def register(group: click.Group) -> None:
    """Add ``agg serve`` to the ``agg`` group."""
    group.add_command(serve_cmd)
