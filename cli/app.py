"""What every ``agg`` command shares: the per-invocation :class:`App`, error handling, JSON output.

The command modules (:mod:`cli.main`, :mod:`cli.live`, :mod:`cli.usage`, :mod:`cli.worker`) import
from here, and :mod:`cli.main` imports them: no import cycle.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import orjson
import redis

from aggregator.config import Settings
from aggregator.connection import Connection, as_agg_error, open_redis
from aggregator.errors import AggError
from aggregator.store import Store

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Per-invocation state: resolved settings and, once asked for, the Redis connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None

    def connect(self, *, start: bool = True) -> Connection:
        if self._conn is None:
            self._conn = open_redis(self.settings, start=start)
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


def handle_errors(fn: F) -> F:
    """Turn agg's and Redis' errors into one line on stderr and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (AggError, redis.RedisError) as e:
            err = as_agg_error(e)
            click.echo(f"agg: {err}", err=True)
            sys.exit(err.exit_code)
        except BrokenPipeError:
            # The reader went away (e.g. `agg replay X | head`): not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    return wrapper  # type: ignore[return-value]


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
