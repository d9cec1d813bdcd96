"""``agg status``: health and figures, on the quick client when it can answer (:mod:`cli.quick`)."""

from __future__ import annotations

import sys
from typing import Any

import click

from aggregator.buckets import combined_digest
from aggregator.endpoint import mask_url
from aggregator.errors import AggError
from aggregator.live.status import NOT_RUNNING, describe, gather, host_files, live_status
from aggregator.projections import Projector, catch_up_all
from cli.app import App, app_context, emit_json
from cli.quick import run_quick
from workers.scripts import READ_ONLY
from workers.status import budget_line


@click.command("status")
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
        if digest:  # catches the projections up: writes, which only redis-py sends
            status(app, as_json, digest)
        else:
            run_quick(app, lambda: status(app, as_json, digest), READ_ONLY)


def status(app: App, as_json: bool, digest: bool) -> None:
    """``agg status`` on ``app``'s connection (the quick client's or redis-py's)."""
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
    buckets = app.buckets()
    if digest:
        catch_up_all(buckets)
    files = host_files(buckets)
    queue = None
    if app.settings.queue_url:  # RQ and the budget are there, not on the store's Redis
        from aggregator.connection import open_queue  # redis-py: not on the quick client's path

        queue = open_queue(app.settings, conn)
    try:
        st = gather(conn, buckets, files, queue=queue.client if queue else None)
    finally:
        if queue is not None:
            queue.close()
    st["redis"]["binary"] = conn.client.info("server").get("executable")
    st.update(live_status(app.settings, buckets, files))
    if digest:
        st["projections"]["digest"] = combined_digest([Projector(one).digest() for one in buckets])
    if as_json:
        emit_json(st)
        return
    print_status(st, digest)


def print_status(st: dict[str, Any], digest: bool) -> None:
    """``agg status`` as text, from the status object."""
    r = st["redis"]
    served = f", embedded: {r['binary']}" if r["embedded"] else ""
    click.echo(f"redis        {r['url']} (redis {r['version']}{served})")
    if "cluster" in st:
        c = st["cluster"]
        click.echo(f"cluster      {c['masters']} masters, {len(c['buckets_used'])} of {c['buckets']} buckets used")
    click.echo(
        f"events       {st['events']} ({st['revisions']} revisions, "
        f"{st['duplicates']} duplicates skipped, {st['rejected']} lines rejected"
        + (f", {st['forgotten']} lines of forgotten conversations dropped)" if st.get("forgotten") else ")")
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
