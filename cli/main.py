"""The ``agg`` command.

Global options (each also an environment variable) come before the command::

    agg [--redis-url URL] [--namespace NS] [--data-dir DIR] [--claude-dir DIR]... COMMAND

Errors a user can cause end with one line on stderr and a non-zero exit: 2 for bad options or
configuration, 3 when Redis is unreachable or the embedded server cannot start, 4 when a named
conversation does not exist, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from aggregator import defaults
from aggregator.config import Settings, default_claude_dirs, default_data_dir, validate_namespace
from aggregator.connection import mask_url
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import AggError, ConfigError
from aggregator.ingest import discover, ingest, pending_bytes
from aggregator.live.status import describe, gather, host_files, live_status
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.text import render
from cli import live
from cli.app import App, app_context, emit_json, get_app, handle_errors
from cli.usage import usage_cmd
from cli.worker import worker_cmd


def _claude_dirs(values: tuple[str, ...]) -> list[Path]:
    dirs: list[Path] = []
    for v in values:
        dirs += [Path(p).expanduser() for p in v.split(":") if p]
    return dirs or default_claude_dirs()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--redis-url",
    envvar="AGG_REDIS_URL",
    metavar="URL",
    help="Redis to use (redis://, rediss://, unix://). Default: the embedded redis-server.",
)
@click.option(
    "--namespace",
    envvar="AGG_NAMESPACE",
    default=defaults.NAMESPACE,
    show_default=True,
    help="Prefix of every key and channel.",
)
@click.option(
    "--data-dir",
    envvar="AGG_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded Redis and current.json live. Default: the user data dir.",
)
@click.option(
    "--claude-dir",
    "claude_dirs",
    envvar="AGG_CLAUDE_DIR",
    multiple=True,
    metavar="DIR",
    help="Claude Code config dir to read (repeatable; env: ':'-separated). "
    "Default: $CLAUDE_CONFIG_DIR, else ~/.claude and ~/.config/claude.",
)
@click.version_option(package_name="agg")
@click.pass_context
@handle_errors
def cli(
    ctx: click.Context, redis_url: str | None, namespace: str, data_dir: Path | None, claude_dirs: tuple[str, ...]
) -> None:
    """agg keeps a live, durable, replayable record of every Claude Code conversation in Redis."""
    if isinstance(claude_dirs, str):  # a single env value arrives unsplit
        claude_dirs = (claude_dirs,)
    settings = Settings(
        redis_url=redis_url or None,
        namespace=validate_namespace(namespace),
        data_dir=(data_dir or default_data_dir()).expanduser(),
        claude_dirs=_claude_dirs(claude_dirs),
    )
    ctx.obj = App(settings)


# --- ingest ----------------------------------------------------------------------------------
@cli.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the totals.")
@click.pass_context
@handle_errors
def ingest_cmd(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Backfill: store every line of the claude dirs (or of PATHS) not stored yet.

    PATH may be a transcript file, a project dir, a `projects/` dir or a claude config dir.
    """
    with app_context(ctx) as app:
        roots = list(paths) or list(app.settings.claude_dirs)
        if not roots:
            raise ConfigError("no claude dirs found: pass a PATH or --claude-dir")
        for p in roots:
            if not os.path.lexists(p):
                raise ConfigError(f"no such file or directory: {p}")
        store = app.store()
        sources, walk = discover(roots)
        if sys.stderr.isatty():
            total = pending_bytes(store, sources)
            with click.progressbar(
                length=total, label="ingesting", file=sys.stderr, show_pos=False, show_percent=True, show_eta=True
            ) as bar:
                report = ingest(store, sources, progress=bar.update, walk=walk)
        else:
            report = ingest(store, sources, walk=walk)
        if as_json:
            emit_json(report.as_dict())
            return
        click.echo(report.summary())
        for s in report.skipped:
            click.echo(f"skipped {s['file']}: {s['reason']}", err=True)


# --- status ----------------------------------------------------------------------------------
@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--digest",
    is_flag=True,
    help="Catch the projections up and add their digest (reads every projection: slower).",
)
@click.pass_context
@handle_errors
def status_cmd(ctx: click.Context, as_json: bool, digest: bool) -> None:
    """Health and figures: Redis, events, conversations, files, lag, turns."""
    with app_context(ctx) as app:
        try:
            conn = app.connect()
        except AggError as e:
            live = live_status(app.settings, None)  # the watcher's own word, even with Redis down
            if not as_json:
                for line in describe(live):
                    click.echo(line)
                raise
            url = app.settings.redis_url
            emit_json({"redis": {"url": mask_url(url) if url else "embedded", "ok": False, "error": str(e)}, **live})
            sys.exit(e.exit_code)
        store = app.store()
        if digest:
            Projector(store).catch_up()
        files = host_files(store)
        st = gather(conn, store, files)
        st.update(live_status(app.settings, store, files))
        if digest:
            st["projections"]["digest"] = Projector(store).digest()
        if as_json:
            emit_json(st)
            return
        r = st["redis"]
        click.echo(f"redis        {r['url']} (redis {r['version']}{', embedded' if r['embedded'] else ''})")
        click.echo(
            f"events       {st['events']} ({st['revisions']} revisions, "
            f"{st['duplicates']} duplicates skipped, {st['rejected']} lines rejected)"
        )
        click.echo(f"conversations {st['conversations']}")
        click.echo(f"files        {st['files']} tracked, lag {st['lag_bytes']} bytes")
        click.echo(f"last ingest  {st['last_ingest_at'] or 'never'}")
        t = st["turns"]
        click.echo(
            f"turns        {t['queued']} queued, {t['running']} running, {t['parked']} parked, "
            f"{t['failed']} failed, {t['committed']} committed; {st['workers']} workers"
        )
        for p in t.get("parked_conversations", []):
            click.echo(f"  parked     {p['conv']} ({p['fails']} failures): {p['error']}")
        for line in describe(st):
            click.echo(line)
        if digest:
            click.echo(f"projections  seq {st['projections']['seq']}, digest {st['projections']['digest']}")


# --- replay ----------------------------------------------------------------------------------
@cli.command("replay")
@click.argument("conversation", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "text"]),
    default="jsonl",
    show_default=True,
    help="jsonl: each event's original line, byte for byte; text: one readable line each.",
)
@click.option("--rebuild", is_flag=True, help="Recompute every projection from the event log.")
@click.option("--json", "as_json", is_flag=True, help="With --rebuild: print the result as JSON.")
@click.pass_context
@handle_errors
def replay_cmd(ctx: click.Context, conversation: str | None, fmt: str, rebuild: bool, as_json: bool) -> None:
    """Print a CONVERSATION's events in order, or (--rebuild) recompute the projections."""
    if rebuild == (conversation is not None):
        raise click.UsageError("give a CONVERSATION or --rebuild (not both)")
    with app_context(ctx) as app:
        store = app.store()
        if rebuild:
            res = Projector(store).rebuild()
            if as_json:
                emit_json(res)
            else:
                click.echo(
                    f"rebuilt {', '.join(res['rebuilt'])}: {res['entries']} log entries, "
                    f"{res['conversations']} conversations, seq {res['seq']}"
                )
                same = res["digest"] == res["digest_before"]
                click.echo(f"digest {res['digest']} ({'unchanged' if same else 'was ' + res['digest_before']})")
            return
        assert conversation is not None
        conv = store.resolve_conversation(conversation)
        out = sys.stdout.buffer
        for _eid, body in store.replay(conv):
            if fmt == "jsonl":
                out.write(body + b"\n")
            else:
                obj = loads(body)
                env = {"ts": obj.get("timestamp"), "type": obj.get("type"), "agent": obj.get("agentId")}
                out.write(render(obj, env).encode("utf-8", "replace") + b"\n")
        out.flush()


# --- the embedded Redis ------------------------------------------------------------------------
@cli.group("redis")
def redis_group() -> None:
    """Manage the embedded redis-server (used when no --redis-url is given)."""


@redis_group.command("start")
@click.pass_context
@handle_errors
def redis_start(ctx: click.Context) -> None:
    """Start the embedded redis-server (no-op if it runs)."""
    app = get_app(ctx)
    emb = EmbeddedRedis(app.settings.data_dir)
    started = emb.ensure_running()
    click.echo(f"{'started' if started else 'already running'}: {emb.socket_path}")


@redis_group.command("stop")
@click.pass_context
@handle_errors
def redis_stop(ctx: click.Context) -> None:
    """Stop the embedded redis-server (its data stays in the data dir)."""
    app = get_app(ctx)
    emb = EmbeddedRedis(app.settings.data_dir)
    click.echo("stopped" if emb.stop() else "not running")


@redis_group.command("cli", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def redis_cli(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run redis-cli against the embedded server (the password goes via REDISCLI_AUTH)."""
    import shutil

    app = get_app(ctx)
    emb = EmbeddedRedis(app.settings.data_dir)
    emb.ensure_running()
    binary = shutil.which("redis-cli") or str(Path(sys.executable).parent / "redis-cli")
    env = dict(os.environ, REDISCLI_AUTH=emb.password_path.read_text().strip())
    os.execve(binary, [binary, "-s", str(emb.socket_path), *args], env)


cli.add_command(usage_cmd)
cli.add_command(worker_cmd)
live.register(cli)


def main() -> None:
    """Entry point of the ``agg`` console script."""
    try:
        cli.main(prog_name="agg", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
