"""What every ``agg`` command shares: the per-invocation :class:`App`, error handling, JSON output.

The command modules (:mod:`cli.main`, :mod:`cli.live`, :mod:`cli.usage`, :mod:`cli.worker`) import
from here, and :mod:`cli.main` imports them: no import cycle.

Errors are handled once, at the entry: the ``agg`` group is an :class:`AggGroup`, whose
:func:`one_line_errors` turns whatever a command raises into one line on stderr and an exit code
— a command needs no decorator for it.

Nothing here imports redis-py, the store or a command module: ``agg --help`` and the quick
commands (:mod:`cli.quick`) start without them (``tests/unit/test_cli_imports.py``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from aggregator.errors import AggError

if TYPE_CHECKING:
    from aggregator.buckets import Buckets
    from aggregator.config import Settings
    from aggregator.endpoint import Connection

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
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # a command with something to say about it raises Interrupted
    except Exception as e:
        if isinstance(e, (AggError, ConnectionError)) or _is_redis_error(e):
            err = e if isinstance(e, AggError) else _as_agg_error(e)
            click.echo(f"agg: {err}", err=True)
            sys.exit(err.exit_code)
        if isinstance(e, OSError):  # a file or directory agg could not use: the environment's, one line
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"agg: {e.strerror or e}{where}", err=True)
            sys.exit(1)
        raise


def _is_redis_error(e: BaseException) -> bool:
    """Whether ``e`` is redis-py's — which it cannot be unless redis-py was imported."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(e, redis.RedisError)


def _as_agg_error(e: BaseException) -> AggError:
    from aggregator.connection import as_agg_error  # imports redis-py: on this error path only

    return as_agg_error(e)


class AggGroup(click.Group):
    """The ``agg`` group: every command (and sub-group) runs inside :func:`one_line_errors`.

    Commands in ``lazy`` (name → ``(module:attribute, help)``) are imported when run, or when
    asked for by name; ``agg --help`` lists them from ``help`` (the command's help text, or its
    first paragraph), without importing them: ``tests/unit/test_cli_imports.py`` checks that the
    list is what the loaded commands would print."""

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name][0].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{module}:{attr} is not a click command")
            self.add_command(cmd, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's ``Group.format_commands``, with a command not loaded yet listed as a command
        with its ``lazy`` help would be (no short help of its own, not hidden, not deprecated)."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or click.Command(name, help=self.lazy[name][1])
            if not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


class App:
    """Per-invocation state: resolved settings and, once asked for, the Redis connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None
        self.quick: Mapping[str, str | None] | None = None
        """Set by :func:`cli.quick.run_quick` while it tries the quick client: the read-only
        scripts (besides the library's) it may run."""

    def connect(self, *, start: bool = True) -> Connection:
        """The Redis connection (opened, and the embedded server started, on first use). A
        command that creates a new data dir says so on stderr: a mistyped ``--data-dir`` would
        otherwise leave a second redis-server running unnoticed."""
        if self._conn is None and self.quick is not None:
            from aggregator.quickredis import open_quick

            self._conn = open_quick(self.settings, self.quick)
        if self._conn is None:
            from aggregator.connection import open_redis

            self._conn = open_redis(self.settings, start=start)
            emb = self._conn.embedded
            if emb is not None and emb.created and emb.server is not None:
                click.echo(
                    f"agg: created a new data dir {self.settings.data_dir} (redis {emb.server.release}, "
                    f"{emb.server.binary}); its redis-server keeps running: agg redis stop stops it",
                    err=True,
                )
        return self._conn

    def buckets(self) -> Buckets:
        """The store's buckets: one on a single Redis, many on a Redis Cluster (:mod:`aggregator.buckets`)."""
        from aggregator.buckets import Buckets

        conn = self.connect()
        return Buckets.of(conn, self.settings)

    def close(self) -> None:
        """Give the connection back (the next :meth:`connect` opens a new one)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one line of JSON on stdout."""
    import orjson  # not for --help

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
