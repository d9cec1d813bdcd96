"""``agg redis``: the embedded redis-server (start, stop, status, redis-cli)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from aggregator.embedded import EmbeddedRedis, running_servers
from aggregator.errors import AggError
from cli.app import emit_json, get_app


@click.group("redis")
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
