"""The ``agg`` command.

Global options (each also an environment variable) come before the command::

    agg [--redis-url URL] [--namespace NS] [--data-dir DIR] [--claude-dir DIR]... [--queue-url URL] COMMAND

Errors a user can cause end with one line on stderr and a non-zero exit (handled once, by the
group: :class:`cli.app.AggGroup`): 2 for bad options or configuration, 3 when Redis is unreachable,
unusable or the embedded server cannot start, 4 when a named conversation does not exist, 5 when
already running, 130 when interrupted, 1 otherwise.


Each command lives in its own module, imported only when it runs (:data:`COMMANDS`): ``agg
--help`` imports none of them, ``agg status`` only its own (``tests/unit/test_cli_imports.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aggregator import defaults
from cli.app import AggGroup, App

COMMANDS: dict[str, tuple[str, str]] = {
    "compact": (
        "cli.compact:compact_cmd",
        "Seal idle conversations' lines, and the log's older batches, into compressed chunks "
        "(replay and tail stay byte for byte).",
    ),
    "export": (
        "cli.read:export_cmd",
        "A CONVERSATION as a document: Markdown, one HTML file, or its original JSONL lines.",
    ),
    "forget": (
        "cli.forget:forget_cmd",
        "Remove CONVERSATIONs (keys, unique prefixes, or .jsonl files) from the store for good.",
    ),
    "ingest": ("cli.ingest:ingest_cmd", "Backfill: store every line of the claude dirs (or of PATHS) not stored yet."),
    "list": (
        "cli.read:list_cmd",
        "Conversations, newest activity first: title, project, last activity, messages, tokens, cost.",
    ),
    "mcp": ("cli.read:mcp_cmd", "Serve the record to Claude Code (or any MCP client) over stdio, read-only."),
    "redis": ("cli.embedded:redis_group", "Manage the embedded redis-server (used when no --redis-url is given)."),
    "rejects": (
        "cli.rejects:rejects_cmd",
        "List rejected lines, newest first: file, byte offset, reason, when, and the line's start.",
    ),
    "replay": (
        "cli.replay:replay_cmd",
        "Print a CONVERSATION's events in order, or (--rebuild) recompute the projections.",
    ),
    "run": (
        "cli.live:run_cmd",
        "Run the whole service: embedded Redis (unless --redis-url), watcher, writer, turn workers, and the "
        "web pages (agg serve: its URL is the first line printed; AGG_WEB_HOST, AGG_WEB_PORT).",
    ),
    "search": ("cli.read:search_cmd", "Full-text search of every conversation, best matches first."),
    "serve": ("cli.web:serve_cmd", "Serve web pages of every conversation, live, and a JSON API (/api/...)."),
    "service": (
        "cli.live:service_group",
        "Keep agg running in the background: systemd, launchd, or a Procfile (honcho).",
    ),
    "show": (
        "cli.read:show_cmd",
        "A CONVERSATION as a readable transcript (a key, a unique prefix, or its .jsonl file).",
    ),
    "status": ("cli.status:status_cmd", "Health and figures: Redis, events, conversations, files, lag, turns."),
    "tail": ("cli.live:tail_cmd", "Print event envelopes as JSON lines as they are committed."),
    "usage": ("cli.usage:usage_cmd", "Token usage and cost, each API response counted once (docs/design.md §6)."),
    "watch": (
        "cli.live:watch_cmd",
        "Tail the claude dirs into Redis until stopped (Ctrl-C / SIGTERM commit what was read).",
    ),
    "worker": ("cli.worker:worker_cmd", "Run LLM turns: an RQ worker with the turn scheduler inside it."),
    "writer": (
        "cli.live:writer_cmd",
        "Keep current.json (conversations and the latest 1000 messages) up to date.",
    ),
}
"""Every command: name → (``module:attribute``, the first paragraph of its help, which ``agg
--help`` lists without importing the module; ``tests/unit/test_cli_imports.py`` checks both)."""


def _claude_dirs(values: tuple[str, ...]) -> list[Path]:
    from aggregator.config import default_claude_dirs

    dirs: list[Path] = []
    for v in values:
        dirs += [Path(p).expanduser() for p in v.split(":") if p]
    return dirs or default_claude_dirs()


@click.group(
    cls=AggGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
@click.option(
    "--queue-url",
    envvar="AGG_QUEUE_URL",
    metavar="URL",
    help="Standalone Redis for the LLM turn queue (needed when the store is a Redis Cluster). "
    "Default: the store's Redis.",
)
@click.version_option(package_name="agg")
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str | None,
    namespace: str,
    data_dir: Path | None,
    claude_dirs: tuple[str, ...],
    queue_url: str | None,
) -> None:
    """agg keeps a live, durable, replayable record of every Claude Code conversation in Redis."""
    if isinstance(claude_dirs, str):  # a single env value arrives unsplit
        claude_dirs = (claude_dirs,)
    from aggregator.config import Settings, default_data_dir, validate_namespace  # not for --help

    settings = Settings(
        redis_url=redis_url or None,
        namespace=validate_namespace(namespace),
        data_dir=(data_dir or default_data_dir()).expanduser(),
        claude_dirs=_claude_dirs(claude_dirs),
        queue_url=queue_url or None,
    )
    ctx.obj = App(settings)


def main() -> None:
    """Entry point of the ``agg`` console script."""
    try:
        cli.main(prog_name="agg", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
