"""The live-service commands: ``agg watch``, ``agg writer``, ``agg tail``, ``agg run``, ``agg service``.

Registered on the main group by :func:`register` (one line in :mod:`cli.main`).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
import orjson

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.config import check_env
from aggregator.errors import AggError, ConfigError, NotFound, StoreError
from aggregator.lifecycle import StopFlag
from aggregator.live.install import (
    ENV_FILE,
    Installed,
    install_launchd,
    install_systemd,
    launchd_plist,
    setup_procfile,
    systemd_unit,
)
from aggregator.live.subscribe import Subscription, parse_position
from aggregator.live.supervisor import Supervisor, default_parts
from aggregator.live.watcher import Watcher
from aggregator.live.writer import BucketsSnapshotWriter, SnapshotWriter, WriterService
from aggregator.logs import setup_logging
from aggregator.paths import DataPaths
from aggregator.seqfloor import SeqFloor
from cli.app import App, app_context, get_app
from cli.formats import terminal_width
from cli.read import tail_text
from cli.web import web_url


def _app(ctx: click.Context) -> App:
    app = get_app(ctx)
    if not app.settings.claude_dirs:
        # No claude dir exists yet (Claude Code never ran): watch where it will appear.
        app.settings = replace(app.settings, claude_dirs=[Path.home() / ".claude"])
    return app


def _output(app: App, output: Path | None) -> Path:
    return (output or DataPaths(app.settings.data_dir, app.settings.namespace).current_json).expanduser().absolute()


# Options shared by `agg watch` / `agg writer` and `agg run`, which runs both.
poll_option = click.option(
    "--poll",
    is_flag=True,
    envvar="AGG_WATCH_POLL",
    help="Poll for changes instead of using file notifications (network mounts, WSL, Docker).",
)
output_option = click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the snapshot (current.json). Default: current.json in the data dir.",
)
verbose_option = click.option(
    "--verbose", "-v", is_flag=True, help="Also log routine lines: each snapshot written, each LLM turn, RQ's jobs."
)
interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=0.0),
    default=defaults.WRITER_INTERVAL_S,
    show_default=True,
    help="Shortest time between two current.json writes, in seconds.",
)


# --- watch -------------------------------------------------------------------------------------
@click.command("watch")
@poll_option
@verbose_option
@click.pass_context
def watch_cmd(ctx: click.Context, poll: bool, verbose: bool) -> None:
    """Tail the claude dirs into Redis until stopped (Ctrl-C / SIGTERM commit what was read).

    Keeps running while Redis is away (state "waiting for Redis" in `agg status`) and resumes
    from the cursors stored in Redis.
    """
    setup_logging(verbose)
    app = _app(ctx)
    check_env()
    Watcher(app.settings, StopFlag().install(), poll=poll).run()


# --- writer ------------------------------------------------------------------------------------
@click.command("writer")
@output_option
@interval_option
@click.option("--once", is_flag=True, help="Write one snapshot and exit (for scripts and cron).")
@verbose_option
@click.pass_context
def writer_cmd(ctx: click.Context, output: Path | None, interval: float, once: bool, verbose: bool) -> None:
    """Keep current.json (conversations and the latest 1000 messages) up to date.

    It is replaced atomically (mode 0600) only when something changed, at most every --interval
    seconds, and each write is announced on the `<ns>:snapshots` channel.
    """
    app = _app(ctx)
    path = _output(app, output)
    check_env()
    if once:
        with app_context(ctx):
            buckets = app.buckets()
            floor = SeqFloor(app.settings.keys, DataPaths(app.settings.data_dir, app.settings.namespace).floor)
            writer: SnapshotWriter = (
                BucketsSnapshotWriter(buckets, path)
                if buckets.cluster
                else SnapshotWriter(buckets.stores[0], path, floor=floor)
            )
            writer.refresh()
            if not writer.built:
                raise StoreError(
                    f"{path} covers seq {writer.seq}, beyond what the store holds: not replaced "
                    "(Redis lost writes, or another store wrote it)"
                )
            try:
                notice = writer.write()
            except OSError as e:  # a full disk: the old file is kept whole (written aside, then renamed)
                raise AggError(f"cannot write {path}: {e.strerror or e}; the old file is kept") from None
            floor.save()
            click.echo(
                f"wrote {path}: seq {notice['seq']}, {notice['conversations']} conversations, "
                f"{notice['messages']} messages"
            )
        return
    setup_logging(verbose)
    WriterService(app.settings, StopFlag().install(), path, interval).run()


# --- tail --------------------------------------------------------------------------------------
class SinceType(click.ParamType[int | str]):
    """``--since``: a seq (``0`` = all), or on a Redis Cluster a position ``3:120,7:55``."""

    name = "since"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit():  # "²" is a digit to isdigit, not to int
            return int(text)
        if ":" not in text:
            self.fail(f"{text!r} is not a seq (0 or more), nor a position like 3:120,7:55 (Redis Cluster)", param, ctx)
        try:
            parse_position(text)
        except ConfigError as e:
            self.fail(str(e), param, ctx)
        return text


@click.command("tail")
@click.option("--conversation", metavar="KEY", help="Only this conversation (a unique prefix is enough).")
@click.option(
    "--since",
    type=SinceType(),
    metavar="SEQ",
    help="First print the stored events after SEQ (0 = all), then the live ones, with no gap. "
    "On a Redis Cluster seq is per bucket: 0, or a position BUCKET:SEQ,… (as printed on stderr when "
    "tail stops; a bucket not named is read from its beginning).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "text"]),
    default="jsonl",
    show_default=True,
    help="jsonl: the envelopes; text: one readable line each (seq, time, conversation, role, preview).",
)
@click.pass_context
def tail_cmd(ctx: click.Context, conversation: str | None, since: int | str | None, fmt: str) -> None:
    """Print event envelopes as JSON lines as they are committed.

    Gaps in `seq` (a dropped connection, a slow reader cut off by Redis) are filled from the
    store, so the output has every event once, in increasing `seq` order.

    On a Redis Cluster, `seq` counts per bucket: each envelope carries its `bucket`, the order
    holds within a bucket, and when tail stops it prints on stderr the position to resume from
    (`agg: resume with --since 3:120,7:55`).
    """
    with app_context(ctx) as app:
        conn = app.connect()
        buckets = app.buckets()
        if not conn.cluster and isinstance(since, str):
            raise ConfigError(f"--since {since}: a position per bucket is for a store on a Redis Cluster; give a seq")
        conv = None
        if conversation is not None:
            try:
                _, conv = buckets.resolve(conversation)
            except NotFound as e:
                if "matches" in str(e):
                    raise
                conv = conversation
                click.echo(f"agg: no conversation {conversation!r} yet; waiting for it", err=True)
        stop = StopFlag().install()
        out = sys.stdout.buffer
        sub = Subscription(conn.client, app.settings.keys, since=since, conversation=conv, stop=stop)
        width = terminal_width(160)
        try:
            for raw in sub.raw():
                out.write((_text(buckets, raw, width).encode("utf-8", "replace") if fmt == "text" else raw) + b"\n")
                out.flush()
        finally:
            if conn.cluster and sub.started:  # before it started there is no place to resume from
                click.echo(f"agg: resume with --since {sub.position()}", err=True)


def _text(buckets: Buckets, raw: bytes, width: int) -> str:
    """``--format text``: on a Redis Cluster the line starts ``bucket:seq``, the event's place."""
    if not buckets.cluster:
        return tail_text(buckets.stores[0], raw, width)
    bucket = int(orjson.loads(raw)["bucket"])
    return f"{bucket}:{tail_text(buckets.stores[bucket], raw, width)}"


# --- run ---------------------------------------------------------------------------------------
@click.command("run")
@output_option
@interval_option
@poll_option
@click.option("--no-web", "no_web", is_flag=True, help="Leave out the web pages (agg serve).")
@verbose_option
@click.pass_context
def run_cmd(ctx: click.Context, output: Path | None, interval: float, poll: bool, no_web: bool, verbose: bool) -> None:
    """Run the whole service: embedded Redis (unless --redis-url), watcher, writer, turn workers,
    and the web pages (agg serve: its URL is the first line printed; AGG_WEB_HOST, AGG_WEB_PORT).

    Each part runs as its own process, restarted if it fails. Ctrl-C / SIGTERM stops the parts
    (they commit what they read) and then the embedded Redis, if this command started it.
    """
    from workers.config import TurnConfig
    from workers.providers import make_provider
    from workers.turns import load_turn_function

    setup_logging(verbose)
    app = _app(ctx)
    # Every setting the parts read, checked before any of them starts (one line, exit 2).
    check_env()
    turns = TurnConfig.from_env()
    make_provider(turns)  # its SDK installed
    load_turn_function(turns.turn)  # AGG_TURN importable
    path = _output(app, output)
    url = None if no_web else web_url(app.settings)
    if url:
        click.echo(url)  # the first line on stdout: the web part's URL (agg serve --no-url)
    v = ["-v"] if verbose else []
    parts = default_parts(
        watch_args=[*(["--poll"] if poll else []), *v],
        writer_args=["--output", str(path), "--interval", str(interval), *v],
        worker_args=v,
        web=not no_web,
    )
    label = turns.provider if turns.provider == "offline" else f"{turns.provider} ({turns.model})"
    code = Supervisor(app.settings, parts, StopFlag().install(), output=path, turns=label, web=url).run()
    sys.exit(code)


# --- service -------------------------------------------------------------------------------------
@click.group("service")
def service_group() -> None:
    """Keep agg running in the background: systemd, launchd, or a Procfile (honcho)."""


@service_group.command("systemd")
@click.option("--install", is_flag=True, help="Write ~/.config/systemd/user/agg.service instead of printing it.")
@click.pass_context
def service_systemd(ctx: click.Context, install: bool) -> None:
    """A systemd user unit that runs `agg run` (with this command's global options)."""
    app = _app(ctx)
    if not install:
        env_file = f"%h/{ENV_FILE}" if app.settings.redis_url else None
        click.echo(systemd_unit(app.settings, env_file), nl=False)
        return
    _installed(install_systemd(app.settings))


@service_group.command("launchd")
@click.option("--install", is_flag=True, help="Write ~/Library/LaunchAgents/dev.agg.run.plist instead of printing it.")
@click.pass_context
def service_launchd(ctx: click.Context, install: bool) -> None:
    """A launchd agent (macOS) that runs `agg run` at login."""
    app = _app(ctx)
    if not install:
        sys.stdout.buffer.write(launchd_plist(app.settings))
        return
    _installed(install_launchd(app.settings))


def _installed(done: Installed) -> None:
    click.echo(f"wrote {done.path}; now run:")
    for step in done.next_steps:
        click.echo(f"  {step}")


@service_group.command("procfile")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where the Procfile lives (and where `honcho start` runs).",
)
def service_procfile(directory: Path) -> None:
    """Prepare DIR for `honcho start`: .env and a private Redis config (socket, password).

    Writes .agg/redis-procfile.conf and .env (both 0600), and a Procfile and redis.conf if DIR
    has none.
    """
    if not directory.is_dir():
        raise ConfigError(f"no such directory: {directory}")
    done = setup_procfile(directory)
    for p in done.written:
        click.echo(f"wrote {p}")
    click.echo(f"Redis for the Procfile: {done.redis_url_masked}")
    click.echo(f"now run: cd {done.directory} && honcho start")


def register(group: click.Group) -> None:
    """Add the live-service commands to the ``agg`` group."""
    for cmd in (watch_cmd, writer_cmd, tail_cmd, run_cmd, service_group):
        group.add_command(cmd)
