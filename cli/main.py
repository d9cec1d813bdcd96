"""The ``agg`` command.

Global options (each also an environment variable) come before the command::

    agg [--redis-url URL] [--namespace NS] [--data-dir DIR] [--claude-dir DIR]... COMMAND

Errors a user can cause end with one line on stderr and a non-zero exit (handled once, by the
group: :class:`cli.app.AggGroup`): 2 for bad options or configuration, 3 when Redis is unreachable,
unusable or the embedded server cannot start, 4 when a named conversation does not exist, 5 when
already running, 130 when interrupted, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from aggregator import defaults
from aggregator.config import Settings, default_claude_dirs, default_data_dir, validate_namespace
from aggregator.connection import mask_url
from aggregator.embedded import EmbeddedRedis, running_servers
from aggregator.errors import AggError, ConfigError, Interrupted
from aggregator.ingest import IngestReport, discover, ingest, pending_bytes
from aggregator.live.status import NOT_RUNNING, describe, gather, host_files, live_status, record_ingest
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.text import render
from cli import live, read, web
from cli.app import AggGroup, App, app_context, emit_json, get_app
from cli.rejects import rejects_cmd
from cli.usage import usage_cmd
from cli.worker import worker_cmd
from workers.status import budget_line


def _claude_dirs(values: tuple[str, ...]) -> list[Path]:
    dirs: list[Path] = []
    for v in values:
        dirs += [Path(p).expanduser() for p in v.split(":") if p]
    return dirs or default_claude_dirs()


@click.group(cls=AggGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
        report = IngestReport()
        try:
            if sys.stderr.isatty():
                total = pending_bytes(store, sources)
                with click.progressbar(
                    length=total, label="ingesting", file=sys.stderr, show_pos=False, show_percent=True, show_eta=True
                ) as bar:
                    ingest(store, sources, progress=bar.update, report=report, walk=walk)
            else:
                ingest(store, sources, report=report, walk=walk)
        except KeyboardInterrupt:
            # Every batch is committed atomically with its file's cursor: what Redis took stays,
            # and the next run reads each file from its cursor on
            # (tests/process/test_rejects_and_interrupts.py::test_ctrl_c_during_ingest_keeps_what_was_committed).
            raise Interrupted(
                f"interrupted after {report.files} of {len(sources)} files ({report.lines:,} lines); every "
                "batch Redis committed is kept, and the next agg ingest continues from there"
            ) from None
        record_ingest(app.settings, report.skipped)
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
def status_cmd(ctx: click.Context, as_json: bool, digest: bool) -> None:
    """Health and figures: Redis, events, conversations, files, lag, turns."""
    with app_context(ctx) as app:
        try:
            conn = app.connect()
        except AggError as e:
            url = app.settings.redis_url
            live = _unverified(live_status(app.settings, None), mask_url(url) if url else None)
            if not as_json:
                shown = {k: dict(v) if isinstance(v, dict) else v for k, v in live.items()}
                for part in (shown["watcher"], shown["writer"]):
                    if "note" in part:  # the mark goes where the state is read
                        part["state"] = f"{part['note']}; its state file says {part['state']}"
                for line in describe(shown):
                    click.echo(line)
                raise
            emit_json({"redis": {"url": mask_url(url) if url else "embedded", "ok": False, "error": str(e)}, **live})
            sys.exit(e.exit_code)
        store = app.store()
        if digest:
            Projector(store).catch_up()
        files = host_files(store)
        st = gather(conn, store, files)
        st["redis"]["binary"] = conn.client.info("server").get("executable")
        st.update(live_status(app.settings, store, files))
        if digest:
            st["projections"]["digest"] = Projector(store).digest()
        if as_json:
            emit_json(st)
            return
        r = st["redis"]
        served = f", embedded: {r['binary']}" if r["embedded"] else ""
        click.echo(f"redis        {r['url']} (redis {r['version']}{served})")
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
        if t.get("budget"):
            click.echo(f"llm budget   {budget_line(t['budget'])}")
        for line in describe(st):
            click.echo(line)
        if digest:
            click.echo(f"projections  seq {st['projections']['seq']}, digest {st['projections']['digest']}")


def _unverified(live: dict[str, Any], url: str | None) -> dict[str, Any]:
    """The watcher's and the writer's state files, marked as their word only: without Redis,
    ``agg status`` cannot tell whether they still work, and a part that serves another Redis
    (``url`` is this command's, masked; None: the embedded one) says nothing about this one.
    The text shows the mark in place of the state, so that "watching" never reads as healthy."""
    for role in ("watcher", "writer"):
        part = live.get(role) or {}
        if part.get("state", NOT_RUNNING) == NOT_RUNNING:
            continue
        theirs = part.get("redis")
        same = theirs == url if url else theirs in (None, "embedded") or str(theirs).startswith("unix://")
        if same and str(part.get("state")).startswith("waiting"):
            continue  # "waiting for Redis": it says what this command found; no health claimed
        part["verified"] = False
        other = "the embedded Redis" if theirs == "embedded" else f"another Redis: {theirs}"
        part["note"] = "not verified (Redis unreachable)" if same else f"not verified (it uses {other})"
        part.pop("other_redis", None)  # the note names the other Redis: once is enough
    return live


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
def replay_cmd(ctx: click.Context, conversation: str | None, fmt: str, rebuild: bool, as_json: bool) -> None:
    """Print a CONVERSATION's events in order, or (--rebuild) recompute the projections."""
    if rebuild == (conversation is not None):
        raise click.UsageError("give a CONVERSATION or --rebuild (not both)")
    with app_context(ctx) as app:
        store = app.store()
        if rebuild:
            res = Projector(store).rebuild()
            res["search_index"] = read.rebuild_index(app, store)
            if as_json:
                emit_json(res)
            else:
                click.echo(
                    f"rebuilt {', '.join(res['rebuilt'])}: {res['entries']} log entries, "
                    f"{res['conversations']} conversations, seq {res['seq']}"
                )
                same = res["digest"] == res["digest_before"]
                click.echo(f"digest {res['digest']} ({'unchanged' if same else 'was ' + res['digest_before']})")
                click.echo(read.describe_index(res["search_index"]))
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
def redis_start(ctx: click.Context) -> None:
    """Start the embedded redis-server (no-op if it runs)."""
    app = get_app(ctx)
    emb = EmbeddedRedis(app.settings.data_dir)
    if not emb.ensure_running():
        click.echo(f"already running: {emb.socket_path}")
        return
    assert emb.server is not None
    new = " on a new data dir" if emb.created else ""
    click.echo(f"started: {emb.socket_path} (redis {emb.server.release}, {emb.server.binary}{new})")


@redis_group.command("stop")
@click.option("--all", "every", is_flag=True, help="Stop every embedded redis-server of this user (all data dirs).")
@click.pass_context
def redis_stop(ctx: click.Context, every: bool) -> None:
    """Stop the embedded redis-server (its data stays in the data dir)."""
    app = get_app(ctx)
    if not every:
        click.echo("stopped" if EmbeddedRedis(app.settings.data_dir).stop() else "not running")
        return
    servers = running_servers()
    for srv in servers:
        EmbeddedRedis(srv.data_dir).stop()
        click.echo(f"stopped {srv.data_dir} (pid {srv.pid}, redis {srv.version})")
    if not servers:
        click.echo("no embedded redis-server running")


@redis_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def redis_status(ctx: click.Context, as_json: bool) -> None:
    """This data dir's embedded redis-server (binary, version, the data's), and every other
    embedded redis-server this user runs."""
    app = get_app(ctx)
    emb = EmbeddedRedis(app.settings.data_dir)
    state = emb.state()
    servers = running_servers()
    here = next((x for x in servers if x.data_dir == emb.data_dir.resolve()), None)
    out: dict[str, Any] = {
        "data_dir": str(emb.data_dir),
        "socket": str(emb.socket_path),
        "state": state,
        "running": state != "down",
        "pid": here.pid if here else emb.pid() if state != "down" else None,
        "binary": here.binary if here else None,
        "version": here.version if here else None,
        "data": emb.record(),
        "next": None,
        "servers": [
            {"pid": x.pid, "data_dir": str(x.data_dir), "binary": x.binary, "version": x.version} for x in servers
        ],
    }
    if state == "down":
        try:
            nxt = emb.choose()
            out["next"] = {"binary": nxt.binary, "version": nxt.release}
        except AggError as e:
            out["next"] = {"error": str(e)}
    if as_json:
        emit_json(out)
        return
    for line in _redis_status_lines(out):
        click.echo(line)


def _redis_status_lines(st: dict[str, Any]) -> list[str]:
    lines = [f"data dir     {st['data_dir']}"]
    if st["running"]:
        lines.append(f"server       {st['state']} (pid {st['pid']}): redis {st['version']}, {st['binary']}")
    elif "error" in st["next"]:
        lines.append(f"server       not running; cannot start: {st['next']['error']}")
    else:
        lines.append(f"server       not running; would start redis {st['next']['version']}, {st['next']['binary']}")
    lines.append(f"socket       {st['socket']}")
    rec = st["data"]
    if rec:
        made = rec.get("created") or {}
        lines.append(
            f"data         last written by redis {rec['version']} ({rec['binary']}); "
            f"created by redis {made.get('version', '?')} at {made.get('at', '?')}"
        )
    else:
        lines.append("data         none recorded")
    lines.append(f"embedded redis-servers of this user: {len(st['servers'])}")
    lines += [f"  pid {x['pid']:<8} redis {x['version']:<8} {x['data_dir']}" for x in st["servers"]]
    return lines


@redis_group.command("cli", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
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
cli.add_command(rejects_cmd)
live.register(cli)
read.register(cli)
web.register(cli)


def main() -> None:
    """Entry point of the ``agg`` console script."""
    try:
        cli.main(prog_name="agg", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
