"""The HTML pages and the fragments the page script fetches to update them live.

Pages are whole documents, rendered on the server, readable without script; the script
(``static/app.js``) only makes them live. Every value from the store goes through
:func:`~aggregator.live.web.render.e` (escaped) or the markdown renderer (raw HTML off).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aggregator.fts import MARK
from aggregator.live.web.charts import bars, compact, stacked_columns
from aggregator.live.web.data import Window
from aggregator.live.web.render import e, render_events, time_tag
from aggregator.projections import USAGE_FIELDS
from aggregator.transcript import HIDDEN_TYPES, agent_label

NAV = (("conversations", "/", "Conversations"), ("usage", "/usage", "Usage"), ("status", "/status", "Status"))
USAGE_LABELS = {"input": "input", "output": "output", "cache_read": "cache read", "cache_creation": "cache write"}


def conv_href(key: str, **query: Any) -> str:
    """Link to a conversation's page."""
    q = urlencode({k: v for k, v in query.items() if v is not None})
    return f"/conversations/{quote(key, safe='')}" + (f"?{q}" if q else "")


def layout(page: str, title: str, body: str, *, assets: dict[str, str], query: str = "") -> str:
    """A whole page: head (own stylesheet and script only), navigation, search box, ``body``."""
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if name == page else ""}>{label}</a>' for name, href, label in NAV
    )
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · agg</title>"
        f'<link rel="icon" href="{assets["favicon.svg"]}" type="image/svg+xml">'
        f'<link rel="stylesheet" href="{assets["app.css"]}">'
        f'<script src="{assets["app.js"]}" defer></script>'
        f'</head><body data-page="{page}">'
        '<header class="top"><a class="brand" href="/">agg</a>'
        f"<nav>{nav}</nav>"
        '<form class="search" action="/search" method="get" role="search">'
        f'<input type="search" name="q" value="{e(query)}" placeholder="Search messages…" aria-label="Search messages">'
        "</form></header>"
        f"<main>{body}</main></body></html>"
    )


def tokens_of(usage: dict[str, int]) -> int:
    return sum(int(usage.get(f, 0)) for f in USAGE_FIELDS)


def money(cost: float | None) -> str:
    """``$1.23``, or ``—`` when the price is not known."""
    if cost is None:
        return '<span class="unknown" title="price not known">—</span>'
    return f"${cost:,.2f}" if cost >= 0.01 or cost == 0 else f"${cost:.4f}"


def _title(view: dict[str, Any]) -> str:
    return str(view.get("title") or f"(untitled) {view['key'][:8]}")


# --- conversations --------------------------------------------------------------------------
def conversation_row(view: dict[str, Any]) -> str:
    """One ``<tr>`` of the conversation list (also what the live list fetches to update a row)."""
    key = view["key"]
    dot = '<span class="dot" title="active"></span>' if view.get("active") else ""
    summary = view.get("summary")
    tokens = tokens_of(view.get("usage") or {})
    return (
        f'<tr data-key="{e(key)}" data-last="{e(view.get("last_ts") or "")}">'
        f'<td class="title">{dot}<a href="{e(conv_href(key))}">{e(_title(view))}</a>'
        + (f'<div class="sub">{e(summary[:200])}</div>' if summary else "")
        + f'</td><td class="project" title="{e(project_label(view))}">{e(tail_of(project_label(view), 30))}</td>'
        f"<td>{time_tag(view.get('last_ts'))}</td>"
        f'<td class="num">{view.get("messages", 0):,}</td>'
        f'<td class="num" title="{tokens:,} tokens">{compact(tokens)}</td>'
        f'<td class="num">{money(view.get("cost_usd"))}</td></tr>'
    )


def conversations_page(
    listing: dict[str, Any],
    projects: Sequence[tuple[str, str]],
    *,
    project: str | None,
    active: bool,
    offset: int,
    limit: int,
    since: str,
) -> str:
    """The body of ``/``: the filter form and the table, newest activity first; ``since``: where
    the store's log ended before the list was read (a seq; on a Redis Cluster, a position), which
    the page's live updates start after."""
    options = '<option value="">all projects</option>' + "".join(
        f'<option value="{e(p)}"{" selected" if p == project else ""}>{e(label)}</option>' for p, label in projects
    )
    total = listing["total"]
    views = listing["conversations"]
    rows = "".join(conversation_row(v) for v in views)
    if not rows:
        empty = (
            "No conversations yet. agg reads Claude Code's transcripts (~/.claude/projects/) while "
            "<code>agg run</code> or <code>agg watch</code> runs, or once with <code>agg ingest</code>."
        )
        rows = (
            f'<tr class="empty"><td colspan="6">{empty if not project and not active else "Nothing matches."}</td></tr>'
        )
    pager = []
    base = {"project": project or None, "active": "1" if active else None}
    if offset > 0:
        pager.append(f'<a href="/?{urlencode({**_clean(base), "offset": max(0, offset - limit)})}">← newer</a>')
    if offset + len(views) < total:
        pager.append(f'<a href="/?{urlencode({**_clean(base), "offset": offset + limit})}">older →</a>')
    shown = f"{offset + 1}–{offset + len(views)} of {total:,}" if views else f"{total:,}"
    return (
        f'<div class="bar"><h1>Conversations</h1><span class="count" id="conv-count">{shown}</span>'
        '<form class="filter" method="get" action="/">'
        f'<select name="project" aria-label="Project">{options}</select>'
        f'<label><input type="checkbox" name="active" value="1"{" checked" if active else ""}> active only</label>'
        '<button type="submit">Filter</button></form>'
        '<span class="live" id="live" title="live updates">live</span></div>'
        '<table class="convs"><thead><tr><th>Title</th><th>Project</th><th>Last activity</th>'
        '<th class="num">Messages</th><th class="num">Tokens</th><th class="num">Cost</th></tr></thead>'
        f'<tbody id="conv-rows" data-live="{1 if offset == 0 else 0}" data-since="{e(since)}">{rows}</tbody></table>'
        f'<nav class="pager">{" ".join(pager)}</nav>'
    )


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --- one conversation -------------------------------------------------------------------------
def chunk(window: Window, agents: dict[str, dict[str, Any]]) -> str:
    """A run of events with its bounds, as the page and its script insert it."""
    return (
        f'<div class="chunk" data-first="{window.first_seq or ""}" data-last="{window.last_seq or ""}" '
        f'data-more-before="{int(window.more_before)}" data-more-after="{int(window.more_after)}">'
        f"{render_events(window.items, agents)}</div>"
    )


def _links(view: dict[str, Any]) -> str:
    parts = []
    for field, label in (
        ("resumed_from", "resumed from"),
        ("compacted_from", "compacted from"),
        ("forked_from", "forked from"),
    ):
        for other in view.get(field) or []:
            parts.append(f'{label} <a href="{e(conv_href(other))}">{e(other[:8])}</a>')
    return f'<p class="links">{" · ".join(parts)}</p>' if parts else ""


def agents_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in view.get("subagents") or []}


def conversation_page(
    view: dict[str, Any], window: Window, *, all_types: bool, tail: bool, since: str, bucket: int | None = None
) -> str:
    """The body of ``/conversations/<key>``: header, the window of events, paging, live state
    (``since``: where the conversation's log ended before the page was read; ``bucket``: its
    bucket on a Redis Cluster, where a place in the log is ``bucket:seq``)."""
    key = view["key"]
    usage = view.get("usage") or {}
    meta = [
        f'<span class="project">{e(project_label(view))}</span>',
        f"<code>{e(key)}</code>",
        f"{time_tag(view.get('first_ts'))} → {time_tag(view.get('last_ts'))}",
        f"{view.get('messages', 0):,} messages",
        f'<span title="{tokens_of(usage):,} tokens">{compact(tokens_of(usage))} tokens</span>',
        f"cost {money(view.get('cost_usd'))}",
    ]
    if view.get("active"):
        meta.insert(0, '<span class="dot" title="active"></span>active')
    subagents = view.get("subagents") or []
    sub = ""
    if subagents:
        items = "".join(f"<li><code>{e(a['id'])}</code> {e(agent_label(a))}</li>" for a in subagents)
        sub = f'<details class="subagents"><summary>{len(subagents)} subagents</summary><ul>{items}</ul></details>'
    summary = (
        f'<p class="summary"><span class="tag">summary</span> {e(view["summary"])}</p>' if view.get("summary") else ""
    )
    all_q = "1" if all_types else None
    earlier_href = conv_href(key, before=window.first_seq, all=all_q)
    earlier = (
        f'<a class="more" id="earlier" href="{e(earlier_href)}">load earlier events</a>'
        if window.more_before
        else '<p class="start">start of the conversation</p>'
    )
    later = (
        f'<a class="more" id="later" href="{e(conv_href(key, after=window.last_seq, all=all_q))}">later events →</a>'
        if window.more_after
        else ""
    )
    toggle = (
        f'<a href="{e(conv_href(key))}">hide bookkeeping records</a>'
        if all_types
        else f'<a href="{e(conv_href(key, all="1"))}">show every record</a>'
    )
    return (
        f'<div class="conv-head"><h1>{e(_title(view))}</h1><p class="meta">{" · ".join(meta)}</p>'
        f'{summary}{_links(view)}{sub}<p class="tools">{toggle} · '
        f'<a href="/api/conversations/{e(quote(key, safe=""))}">JSON</a>'
        ' · <span class="live" id="live">live</span></p></div>'
        f'<section id="events" data-conv="{e(key)}" data-tail="{int(tail and not window.more_after)}" '
        f'data-all="{int(all_types)}" data-since="{e(since)}" data-bucket="{"" if bucket is None else bucket}" '
        f'data-hidden="{",".join(sorted(HIDDEN_TYPES))}">'
        f"{earlier}{chunk(window, agents_of(view))}{later}</section>"
        '<button type="button" id="jump" class="jump" hidden>↓ jump to latest</button>'
    )


# --- search -----------------------------------------------------------------------------------
def marked(snippet: str) -> str:
    """A search snippet escaped, its matches (between :data:`aggregator.fts.MARK`'s two characters,
    which the snippet holds nowhere else) in ``<mark>``."""
    out = []
    for i, part in enumerate(snippet.split(MARK[0])):
        inner, sep, rest = part.partition(MARK[1])
        if i == 0 or not sep:
            out.append(e(part.replace(MARK[1], "")))
        else:
            out.append(f"<mark>{e(inner)}</mark>{e(rest.replace(MARK[1], ''))}")
    return "".join(out)


def project_label(row: dict[str, Any]) -> str:
    """A project as people know it: its path when known, else Claude Code's directory name."""
    return str(row.get("project_path") or row.get("project") or "")


def tail_of(text: str, limit: int = 34) -> str:
    """The end of ``text`` (where a path says most), ``…`` in front when cut."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def search_page(result: dict[str, Any] | str | None, query: str) -> str:
    """The body of ``/search``: the hits, their snippets highlighted, each a link to its message
    (``result`` a message instead when the query could not be run)."""
    if not isinstance(result, dict):
        hint = 'Type words, "a phrase" or a prefix* in the box above.'
        return f'<h1>Search</h1><p class="empty">{e(result) + ". " if result else ""}{hint}</p>'
    hits = result["hits"]
    items = []
    for h in hits:
        href = conv_href(h["conv"], at=h["seq"]) + f"#e-{h['seq']}"
        items.append(
            f'<li><a class="hit" href="{e(href)}">{e(h.get("title") or h["conv"][:8])}</a>'
            f'<span class="meta">{e(project_label(h))} · {e(h.get("role") or "")}'
            + (f" · subagent {e(h['agent'])}" if h.get("agent") else "")
            + " · "
            f"{time_tag(h.get('ts'))}</span>"
            f'<p class="snippet">{marked(h["snippet"])}</p></li>'
        )
    count = f"{result['total']:,} hit{'s' if result['total'] != 1 else ''}"
    shown = f", first {len(hits)} shown" if len(hits) < result["total"] else ""
    body = f'<ol class="hits">{"".join(items)}</ol>' if items else '<p class="empty">No messages match.</p>'
    took = f"({result['took_ms']} ms)"
    return f'<h1>Search</h1><p class="count">{count}{shown} for <code>{e(query)}</code> {took}</p>{body}'


# --- usage ------------------------------------------------------------------------------------
def row_name(row: dict[str, Any]) -> str | None:
    """What a usage row is about, as people read it: a project's directory (as ``agg usage``
    shows it) rather than its encoded name; else the row's key."""
    name = row.get("project_path") or row["key"]
    return str(name) if name is not None else None


def _usage_table(rows: Sequence[dict[str, Any]], label: str) -> str:
    head = "".join(f'<th class="num">{e(USAGE_LABELS[f])}</th>' for f in USAGE_FIELDS)
    body = "".join(
        f'<tr><td title="{e(row_name(r) or "")}">{e(tail_of(name) if (name := row_name(r)) else "(none)")}</td>'
        + "".join(f'<td class="num" title="{int(r[f]):,}">{compact(int(r[f]))}</td>' for f in USAGE_FIELDS)
        + f'<td class="num" title="{int(r["total"]):,}">{compact(int(r["total"]))}</td>'
        f'<td class="num">{int(r["responses"]):,}</td>'
        f'<td class="num">{money(r.get("cost_usd"))}</td></tr>'
        for r in rows
    )
    return (
        f'<table class="usage"><thead><tr><th>{e(label)}</th>{head}<th class="num">total</th>'
        f'<th class="num">responses</th><th class="num">cost</th></tr></thead><tbody>{body}</tbody></table>'
    )


def chart_days(rows: Sequence[dict[str, Any]], span: int = 60) -> list[str]:
    """Every day of the ``span`` days up to the last day with usage (a time axis without holes)."""
    keys = [r["key"] for r in rows if r.get("key")]
    if not keys:
        return []
    last = date.fromisoformat(max(keys))
    return [(last - timedelta(days=n)).isoformat() for n in range(span - 1, -1, -1)]


def usage_page(reports: dict[str, dict[str, Any]]) -> str:
    """The body of ``/usage``: by day, model and project — a chart and the table beside it."""
    total = reports["day"]["total"]
    head = (
        f'<h1>Usage</h1><p class="count">{int(total["total"]):,} tokens in {int(total["responses"]):,} '
        f"API responses · cost {money(total.get('cost_usd'))}</p>"
    )
    day_rows = reports["day"]["rows"]
    days = chart_days(day_rows)
    by_day = {r["key"]: r for r in day_rows}
    day_chart = stacked_columns(
        days,
        [(USAGE_LABELS[f], [int(by_day[d][f]) if d in by_day else 0 for d in days]) for f in USAGE_FIELDS],
        title="tokens by day",
    )
    span = f"The {len(days)} days up to {days[-1]}; the table lists every day with usage." if days else ""
    sections = [
        f'<section class="usage-block"><h2>By day (UTC)</h2><div class="pair"><div>{day_chart}'
        f'<p class="note">{e(span)}</p></div>'
        f'<div class="table-wrap">{_usage_table(day_rows[::-1], "day")}</div></div></section>'
    ]
    for by, label in (("model", "Model"), ("project", "Project")):
        rows = reports[by]["rows"]
        chart = bars([row_name(r) or "(none)" for r in rows], [int(r["total"]) for r in rows], title=f"tokens by {by}")
        sections.append(
            f'<section class="usage-block"><h2>By {by}</h2><div class="pair"><div>{chart}</div>'
            f'<div class="table-wrap">{_usage_table(rows, label.lower())}</div></div></section>'
        )
    return head + "".join(sections)


# --- status -----------------------------------------------------------------------------------
def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _state(part: dict[str, Any]) -> str:
    state = str(part.get("state") or "not running")
    cls = "ok" if state in ("watching", "writing", "running", "idle") else "warn"
    detail = []
    if part.get("pid") and state != "not running":
        detail.append(f"pid {e(part['pid'])}")
    if part.get("since"):
        detail.append(f"since {time_tag(part['since'])}")
    if part.get("error"):
        detail.append(e(part["error"]))
    return f'<span class="state {cls}">{e(state)}</span> ' + " · ".join(detail)


def status_fragment(st: dict[str, Any], rejects: dict[str, Any] | None) -> str:
    """The status figures (the page refreshes this part every few seconds)."""
    r = st.get("redis", {})
    redis_rows: list[tuple[str, Any]] = [
        (
            "state",
            '<span class="state ok">up</span>'
            if r.get("ok")
            else f'<span class="state warn">down</span> {e(r.get("error", ""))}',
        ),
        ("url", f"<code>{e(r.get('url', ''))}</code>"),
    ]
    if r.get("ok"):
        redis_rows += [
            ("version", e(r.get("version"))),
            ("binary", f"<code>{e(r.get('binary') or '?')}</code>"),
            ("embedded", "yes" if r.get("embedded") else "no"),
            ("memory", f"{compact(int(r.get('used_memory_bytes') or 0))}B"),
        ]
        cl = st.get("cluster")
        if cl:
            used = len(cl.get("buckets_used", []))
            redis_rows.append(("cluster", f"{cl['masters']} masters, {used} of {cl['buckets']} buckets used"))
    parts = [f"<section><h2>Redis</h2>{_kv(redis_rows)}</section>"]
    service = [("watcher", _state(st.get("watcher", {}))), ("writer", _state(st.get("writer", {})))]
    if "workers" in st:
        service.append(("workers", e(st["workers"])))
    service.append(("last snapshot", time_tag(st.get("last_snapshot_at")) or "never"))
    parts.append(f"<section><h2>Service</h2>{_kv(service)}</section>")
    if r.get("ok"):
        store = [
            ("events", f"{st['events']:,} ({st['revisions']:,} revisions, {st['duplicates']:,} duplicates skipped)"),
            ("conversations", f"{st['conversations']:,}"),
            ("seq", _seqs(st["seq"], st["projections"]["seq"])),
            ("files", f"{st['files']:,} tracked, {st['files_on_host']:,} on this host"),
            ("lag", f"{st['lag_bytes']:,} bytes not yet read"),
            ("last ingest", time_tag(st.get("last_ingest_at")) or "never"),
            ("rejected lines", f"{st['rejected']:,}"),
        ]
        parts.append(f"<section><h2>Store</h2>{_kv(store)}</section>")
    roots = st.get("roots") or []
    if roots:
        rows = "".join(
            f"<tr><td><code>{e(x['path'])}</code>{'' if x.get('exists', True) else ' (missing)'}</td>"
            f'<td class="num">{x.get("files", 0):,}</td><td class="num">{x.get("lag_bytes", 0):,}</td></tr>'
            for x in roots
        )
        parts.append(
            '<section><h2>Claude dirs</h2><table><thead><tr><th>dir</th><th class="num">files</th>'
            f'<th class="num">lag (bytes)</th></tr></thead><tbody>{rows}</tbody></table></section>'
        )
    t = st.get("turns")
    if t:
        turns = [(k, f"{int(t.get(k, 0)):,}") for k in ("queued", "running", "parked", "failed", "committed") if k in t]
        parked = "".join(
            f'<li><a href="{e(conv_href(p["conv"]))}">{e(p["conv"][:8])}</a> ({e(p.get("fails"))} failures): '
            f"{e(p.get('error') or '')}</li>"
            for p in t.get("parked_conversations", [])
        )
        parts.append(
            f"<section><h2>LLM turns</h2>{_kv(turns)}"
            + (f'<ul class="parked">{parked}</ul>' if parked else "")
            + "</section>"
        )
    if rejects is not None:
        recs = rejects["rejects"]
        rows = "".join(
            f'<tr><td><code>{e(x.get("file"))}</code></td><td class="num">{e(x.get("offset"))}</td>'
            f"<td>{e(x.get('reason'))}</td><td><code>{e(str(x.get('prefix') or '')[:80])}</code></td>"
            f"<td>{time_tag(x.get('at'))}</td></tr>"
            for x in recs
        )
        body = (
            '<table class="rejects"><thead><tr><th>file</th><th class="num">offset</th><th>reason</th>'
            f"<th>line starts</th><th>at</th></tr></thead><tbody>{rows}</tbody></table>"
            if recs
            else '<p class="empty">No line was rejected.</p>'
        )
        parts.append(f"<section><h2>Rejected lines (newest {len(recs)})</h2>{body}</section>")
    return "".join(parts)


def _seqs(seq: int | list[int], projected: int | list[int]) -> str:
    """The log's end and the projections' as the status page shows them: a seq each, or on a Redis
    Cluster each used bucket's (``bucket:seq``), the projections' only where they lag."""
    if isinstance(seq, int):
        return f"{seq:,} (projections at {projected:,})"
    assert isinstance(projected, list)
    ends = " ".join(f"{b}:{n:,}" for b, n in enumerate(seq) if n) or "0"
    behind = [f"{b}:{p:,}" for b, (n, p) in enumerate(zip(seq, projected, strict=True)) if p != n]
    return f"{ends} ({'projections at ' + ' '.join(behind) if behind else 'projections caught up'})"


def status_page(fragment: str) -> str:
    """The body of ``/status``."""
    head = '<div class="bar"><h1>Status</h1><span class="live" id="live">refreshing</span></div>'
    return f'{head}<div id="status">{fragment}</div>'


def error_page(status: int, message: str) -> str:
    """The body of an error page."""
    return f'<h1>{status}</h1><p class="error">{e(message)}</p>'
