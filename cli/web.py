"""``agg serve``: local web pages and a JSON API over the record, live.

Registered on the main group by :func:`register` (one line in :mod:`cli.main`). Starlette and
uvicorn are imported only when the command runs, so ``agg --help`` stays fast.
"""

from __future__ import annotations

import click

from aggregator import defaults
from aggregator.live.web.access import is_loopback, is_wildcard
from cli.app import get_app, handle_errors

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
@click.pass_context
@handle_errors
def serve_cmd(ctx: click.Context, host: str, port: int) -> None:
    """Serve web pages of every conversation, live, and a JSON API (/api/...).

    Prints the URL to open, with its access token, as the first line. Every request needs the
    token (the page keeps it in a cookie); requests naming another host are refused.
    """
    from aggregator.live.web.server import serve  # the web stack loads here only

    if is_wildcard(host) or not is_loopback(host):
        click.echo(
            f"agg: warning: serving on {host}: other machines can reach this port (plain HTTP); "
            "anyone with the token can read every conversation",
            err=True,
        )
    serve(get_app(ctx).settings, host=host, port=port)


def register(group: click.Group) -> None:
    """Add ``agg serve`` to the ``agg`` group."""
    group.add_command(serve_cmd)
