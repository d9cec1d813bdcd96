"""What every ``agg`` command shares: the per-invocation :class:`App`, error handling, JSON output.

The command modules (:mod:`cli.main`, :mod:`cli.live`, :mod:`cli.usage`, :mod:`cli.worker`) import
from here, and :mod:`cli.main` imports them: no import cycle.

Errors are handled once, at the entry: the ``agg`` group is an :class:`AggGroup`, whose
:func:`one_line_errors` turns whatever a command raises into one line on stderr and an exit code
— a command needs no decorator for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson
import redis

from aggregator.config import Settings
from aggregator.connection import Connection, as_agg_error, open_redis
from aggregator.errors import AggError
from aggregator.store import Store

EXIT_INTERRUPTED = 130


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn agg's, Redis' and the system's errors into one line on stderr and an exit code (2
    usage/config, 3 Redis, 4 not found, 5 already running, 130 interrupted, 1 otherwise)."""
    try:
        yield
    except BrokenPipeError:  # before ConnectionError, its base class
        # The reader went away (e.g. `agg replay X | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (AggError, redis.RedisError, ConnectionError) as e:
        err = as_agg_error(e)
        click.echo(f"agg: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # a command with something to say about it raises Interrupted
    except OSError as e:  # a file or directory agg could not use: the environment's, one line
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"agg: {e.strerror or e}{where}", err=True)
        sys.exit(1)


class AggGroup(click.Group):
    """The ``agg`` group: every command (and sub-group) runs inside :func:`one_line_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


class App:
    """Per-invocation state: resolved settings and, once asked for, the Redis connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None

    def connect(self, *, start: bool = True) -> Connection:
        """The Redis connection (opened, and the embedded server started, on first use). A
        command that creates a new data dir says so on stderr: a mistyped ``--data-dir`` would
        otherwise leave a second redis-server running unnoticed."""
        if self._conn is None:
            self._conn = open_redis(self.settings, start=start)
            emb = self._conn.embedded
            if emb is not None and emb.created and emb.server is not None:
                click.echo(
                    f"agg: created a new data dir {self.settings.data_dir} (redis {emb.server.release}, "
                    f"{emb.server.binary}); its redis-server keeps running: agg redis stop stops it",
                    err=True,
                )
        return self._conn

    def store(self) -> Store:
        return Store(self.connect().client, self.settings.keys, self.settings.host)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one line of JSON on stdout."""
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.flush()


def get_app(ctx: click.Context) -> App:
    """The :class:`App` the main group put on the context."""
    app = ctx.find_object(App)
    if app is None:  # only if a command is run without the group
        raise click.UsageError("agg: no settings (run commands through the agg group)")
    return app


@contextmanager
def app_context(ctx: click.Context) -> Iterator[App]:
    """The :class:`App`, closed (its Redis connection given back) when the block ends."""
    app = get_app(ctx)
    try:
        yield app
    finally:
        app.close()
