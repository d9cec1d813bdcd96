"""``agg forget``: remove conversations from the store for good (docs/design.md §9)."""

from __future__ import annotations

import sys
from typing import Any

import click

from aggregator.buckets import Buckets
from aggregator.errors import AggError, ConfigError, NotFound
from aggregator.forget import forget, project_conversations_in, resolve_every, summary
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from aggregator.text import cut_width
from cli.app import App, app_context, emit_json
from cli.formats import compact


@click.command("forget")
@click.argument("conversations", nargs=-1)
@click.option("--project", metavar="P", help="Every conversation of this project (its path, directory name, or part).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as one JSON object.")
@click.pass_context
def forget_cmd(
    ctx: click.Context, conversations: tuple[str, ...], project: str | None, yes: bool, as_json: bool
) -> None:
    """Remove CONVERSATIONs (keys, unique prefixes, or .jsonl files) from the store for good.

    Their events, bodies, projections, usage, recent messages and search-index entries go, and a
    tombstone stays: re-reading the same transcript files (agg ingest, a watcher on any machine)
    or agg replay --rebuild never brings those lines back. Lines written to the session after the
    forget are stored as usual.
    """
    if bool(conversations) == bool(project):
        raise ConfigError("give CONVERSATION... or --project P (not both)")
    if not yes and not sys.stdin.isatty():
        raise ConfigError("agg forget asks for confirmation on a terminal: pass --yes to forget without asking")
    with app_context(ctx) as app:
        buckets = app.buckets()
        if project:
            chosen = project_conversations_in(buckets, project)
            if not chosen:
                raise NotFound(f"no conversation in a project matching {project!r}")
        else:
            # every name resolved before anything is removed: a typo forgets nothing
            named = {(s.keys.ns, c): (s, c) for name in conversations for s, c in resolve_every(buckets, name)}
            chosen = list(named.values())
        if not yes:
            _confirm(chosen)
        res = _forget_all(app, buckets, chosen)
        if as_json:
            emit_json(res)
            return
        for c in res["conversations"]:
            tokens = sum(v for k, v in c["usage"].items() if k != "responses")
            click.echo(
                f"forgot {c['conv']}: {c['events']:,} events, {c['revisions']:,} revisions, "
                f"{compact(tokens)} tokens, {c['usage']['responses']:,} responses"
            )


def _local_index(app: App, buckets: Buckets) -> SearchIndex | None:
    """This machine's search index of the store (every bucket's), caught up, if it has one (none
    is created)."""
    index = SearchIndex.existing(buckets, app.settings.data_dir)
    if index is not None:
        index.follow(buckets.stores)
    return index


def _forget_all(app: App, buckets: Buckets, chosen: list[tuple[Store, str]]) -> dict[str, Any]:
    """:func:`aggregator.forget.forget` in each bucket (one on a single Redis) of its conversations
    of ``chosen``, and this machine's search index purged of them; one result, its conversations
    in the order of ``chosen``."""
    groups: dict[str, tuple[Store, list[str]]] = {}
    for store, conv in chosen:
        groups.setdefault(store.keys.ns, (store, []))[1].append(conv)
    index = _local_index(app, buckets)
    try:
        if index:
            # the texts' words go too, read while the store has them — before the forget, so that
            # an indexer following the log (agg serve) cannot drop the rows first and leave the words
            for store, conv in chosen:
                index.purge(index.indexed_texts(store, conv))
        try:
            results = [forget(store, convs) for store, convs in groups.values()]
        except BaseException:
            if index:
                index.reset()  # it lacks rows of conversations the store may still hold: built again
            raise
        if index:
            index.follow(buckets.stores)  # applies the forget entries: rows indexed meanwhile go too
    finally:
        if index:
            index.close()
    if len(results) == 1:
        return results[0]
    done = {(ns, c["conv"]): c for ns, res in zip(groups, results, strict=True) for c in res["conversations"]}
    return summary([done[s.keys.ns, c] for s, c in chosen])


def _confirm(chosen: list[tuple[Store, str]]) -> None:
    """Ask on the terminal, naming what would go; :class:`AggError` if the answer is no."""
    convs = [c for _, c in chosen]
    rows = [row for store, conv in chosen[:5] for row in store.projection_fields([conv], ["title", "events"])]
    titles = [f"“{cut_width(t, 60)}”" if t else "(untitled)" for t, _ in rows]
    if len(convs) == 1:
        what = f"conversation {convs[0]} ({titles[0]}, {rows[0][1] or 0} events)"
    else:
        shown = ", ".join(f"{c[:8]} {t}" for c, t in zip(convs, titles, strict=False))
        what = f"{len(convs)} conversations ({shown}{', …' if len(convs) > 5 else ''})"
    if not click.confirm(f"Forget {what} for good?", default=False, err=True):
        raise AggError("nothing forgotten")
