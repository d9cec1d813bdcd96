"""Finding and reading the record: ``agg search``, ``agg list``, ``agg show``, ``agg export``, ``agg mcp``.

Registered on the main group by :func:`register`. The work is done by library calls that return
JSON-able answers (:mod:`aggregator.search`, :mod:`aggregator.listing`, :mod:`aggregator.transcript`,
:mod:`aggregator.render`); this module only formats them for a terminal. Colour and the pager are
used only when stdout is a terminal.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.errors import ConfigError
from aggregator.files import write_private
from aggregator.fts import MARK, ROLES
from aggregator.listing import conversations
from aggregator.parse import loads
from aggregator.render import Terminal, envelope_line, html_page, markdown
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from aggregator.text import cut_left, cut_width, display_width, wrap_width
from aggregator.transcript import header, message_of, messages
from cli.app import App, app_context, emit_json
from cli.formats import compact, date_option, money, terminal_width


def _when(ts: str | None) -> str:
    return f"{ts[:10]} {ts[11:16]}" if ts else "-"


def tail_text(store: Store, raw: bytes, width: int) -> str:
    """``agg tail --format text``: one event envelope as a line with its role and a preview."""
    env = orjson.loads(raw)
    msg = None
    (body,) = store.newest_bodies([(env["conv"], env["id"])])
    if body is not None:
        try:
            msg = message_of(env["id"], loads(body))
        except ValueError:
            msg = None
    return envelope_line(env, msg, width)


def rebuild_index(app: App, buckets: Buckets) -> dict[str, Any]:
    """``agg replay --rebuild``'s part: this machine's search index rebuilt from the whole log
    (every bucket's)."""
    index = SearchIndex.open_all(buckets, app.settings.data_dir)
    try:
        return {"path": str(index.path), **index.rebuild(buckets.stores)}
    finally:
        index.close()


def describe_index(res: dict[str, Any]) -> str:
    """One line about a rebuilt search index."""
    size = f"{res['bytes'] / 1e6:.1f} MB"
    return f"search index: {res['docs']:,} texts from {res['entries']:,} log entries, {size} ({res['path']})"


def _progress(buckets: Buckets, index: SearchIndex) -> Any:
    """A progress bar on stderr when the index is far behind and stderr is a terminal, else None."""
    behind = index.behind(buckets.stores)
    if behind < defaults.SEARCH_STEP_ENTRIES * 4 or not sys.stderr.isatty():
        return None
    return click.progressbar(length=behind, label="indexing for search", file=sys.stderr, show_eta=True)


# --- search ---------------------------------------------------------------------------------------------
@click.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--project", metavar="P", help="Only this project (its path, directory name, or part of either).")
@click.option("--conversation", metavar="KEY", help="Only this conversation (a unique prefix is enough).")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    help="Only what the user or the assistant wrote (or tool calls and results, titles, agg summaries).",
)
@date_option("--since", end=False)
@date_option("--until", end=True)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=defaults.SEARCH_LIMIT,
    show_default=True,
    help="Hits to show (0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (snippets mark matches with ⟦ ⟧).")
@click.pass_context
def search_cmd(
    ctx: click.Context,
    query: tuple[str, ...],
    project: str | None,
    conversation: str | None,
    role: str | None,
    since: int | None,
    until: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """Full-text search of every conversation, best matches first.

    Words match whole and in any case; "quoted words" match as a phrase; word* as a prefix;
    Chinese, Japanese and Korean text matches any run of characters. Every term must match.
    """
    from aggregator.search import search

    with app_context(ctx) as app:
        buckets = app.buckets()
        index = SearchIndex.open_all(buckets, app.settings.data_dir)
        bar = _progress(buckets, index)
        with bar if bar is not None else contextlib.nullcontext():
            res = search(
                buckets,
                index,
                " ".join(query),
                project=project,
                conversation=conversation,
                role=role,
                since_ms=since,
                until_ms=until,
                limit=limit if limit else 1 << 62,
                progress=bar.update if bar is not None else None,
            )
        if as_json:
            emit_json(res)
            return
        _print_hits(res, terminal_width(100), sys.stdout.isatty())


def _print_hits(res: dict[str, Any], width: int, color: bool) -> None:
    term = Terminal(width, color)
    for hit in res["hits"]:
        title = hit["title"] or "(untitled)"
        click.echo(term.style(cut_width(title.replace("\n", " "), width), "bold"))
        facts = [hit["conv"][:8], hit["project_path"] or hit["project"], _when(hit["ts"]), hit["role"]]
        if hit["agent"]:
            facts.append(f"subagent {hit['agent']}")
        click.echo(term.style(cut_width(" · ".join(facts), width), "dim"))
        for line in wrap_width(hit["snippet"], width - 2)[:3]:
            click.echo("  " + _highlight(term, line))
        click.echo()
    shown = len(res["hits"])
    more = "; all with --limit 0" if res["total"] > shown else ""
    counted = f"{shown} of {res['total']:,} hits" if shown else f"no match for {res['query']}"
    click.echo(term.style(f"{counted} ({res['took_ms']:.0f} ms){more}", "dim"), err=not shown)


def _highlight(term: Terminal, line: str) -> str:
    """A snippet line with its ⟦marks⟧ as bold yellow (or removed without colour)."""
    out, rest = [], line
    while MARK[0] in rest:
        before, _, after = rest.partition(MARK[0])
        word, _, rest = after.partition(MARK[1])
        out += [before, term.style(word, "bold", "yellow")]
    return "".join([*out, rest]).replace(MARK[1], "")


# --- list -----------------------------------------------------------------------------------------------
@click.command("list")
@click.option("--project", metavar="P", help="Only this project (its path, directory name, or part of either).")
@click.option("--active", is_flag=True, help="Only conversations active now (a record in the last minutes).")
@date_option("--since", end=False)
@click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Conversations to show (0: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def list_cmd(
    ctx: click.Context, project: str | None, active: bool, since: int | None, limit: int, as_json: bool
) -> None:
    """Conversations, newest activity first: title, project, last activity, messages, tokens, cost."""
    with app_context(ctx) as app:
        res = conversations(app.buckets(), project=project, active=active, since_ms=since, limit=limit or None)
        if as_json:
            emit_json(res)
            return
        width = terminal_width()
        term = Terminal(width, sys.stdout.isatty())
        for c in res["conversations"]:
            mark = term.style("● ", "green") if c["active"] else "  "
            title = (c["title"] or "(untitled)").replace("\n", " ")
            click.echo(mark + term.style(cut_width(title, width - 2), "bold"))
            facts = [
                _when(c["last_ts"]),
                c["key"][:8],
                f"{c['messages']:,} msgs",
                f"{compact(sum(c['usage'].values()))} tokens",
                money(c["cost_usd"]),
            ]
            line = " · ".join(facts)
            path = cut_left(c["project_path"] or "", max(10, width - 5 - display_width(line)))
            click.echo("  " + term.style(f"{line} · {path}" if path else line, "dim"))
        if not res["conversations"]:  # say so, rather than print nothing
            why = " match" if project or active or since is not None else " yet: agg run or agg ingest reads them"
            click.echo(term.style("no conversations" + why, "dim"), err=True)
        if res["total"] > len(res["conversations"]):
            shown = len(res["conversations"])
            click.echo(term.style(f"{shown} of {res['total']} conversations; all with --limit 0", "dim"))
        for model in res["unpriced"]:
            click.echo(f"agg: no price for model {model!r}: its cost shows as n/a (add it with AGG_PRICES)", err=True)


# --- show / export ----------------------------------------------------------------------------------------
@click.command("show")
@click.argument("conversation")
@click.pass_context
def show_cmd(ctx: click.Context, conversation: str) -> None:
    """A CONVERSATION as a readable transcript (a key, a unique prefix, or its .jsonl file).

    Tool calls show as one line, tool results by their first lines, subagents beside a bar. Long
    transcripts open in the pager ($PAGER, else less).
    """
    with app_context(ctx) as app:
        store, conv = app.buckets().find(conversation)
        tty = sys.stdout.isatty()
        term = Terminal(terminal_width(100), tty)
        lines = [*term.header(header(store, conv)), *term.messages(messages(store, conv))]
        if tty and len(lines) > shutil.get_terminal_size((80, 24)).lines:
            click.echo_via_pager(line + "\n" for line in lines)
        else:
            for line in lines:
                click.echo(line)


@click.command("export")
@click.argument("conversation")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "html", "jsonl"]),
    default="markdown",
    show_default=True,
    help="markdown or html: a readable document (HTML: one self-contained file); jsonl: the original lines.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (mode 0600) instead of stdout.",
)
@click.pass_context
def export_cmd(ctx: click.Context, conversation: str, fmt: str, output: Path | None) -> None:
    """A CONVERSATION as a document: Markdown, one HTML file, or its original JSONL lines."""
    with app_context(ctx) as app:
        store, conv = app.buckets().find(conversation)
        if fmt == "jsonl":
            data = b"".join(body + b"\n" for _eid, body in store.replay(conv))
        else:
            head = header(store, conv)
            render = markdown if fmt == "markdown" else html_page
            data = render(head, messages(store, conv)).encode("utf-8", "replace")
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return
        try:
            write_private(output.expanduser(), data)
        except OSError as e:
            raise ConfigError(f"cannot write {output}: {e.strerror or e}") from None
        click.echo(f"wrote {output} ({len(data):,} bytes)", err=True)


# --- mcp ----------------------------------------------------------------------------------------------------
@click.command("mcp")
@click.pass_context
def mcp_cmd(ctx: click.Context) -> None:
    """Serve the record to Claude Code (or any MCP client) over stdio, read-only.

    Tools: search, list_conversations, get_conversation, usage. Add it with:
    claude mcp add agg -- agg mcp
    """
    from cli.mcp import serve

    with app_context(ctx) as app:
        serve(app)


def register(group: click.Group) -> None:
    """Add the reading commands to the ``agg`` group."""
    for cmd in (search_cmd, list_cmd, show_cmd, export_cmd, mcp_cmd):
        group.add_command(cmd)
