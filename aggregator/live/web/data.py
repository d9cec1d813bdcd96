"""Everything ``agg serve`` reads from the store, as plain data for the pages and the JSON API.

Built on main's library: conversations from their projections (:mod:`aggregator.views`), usage
(:mod:`aggregator.usage`), status (:mod:`aggregator.live.status`), a conversation's events from
its timeline and the log. Three parts stand in for issue 10 (search index, renderers, prices) and
are marked **adapter**: :meth:`WebData.search` (a scan of the recent-messages projection, said so
in its answer), :func:`cost_usd` (no price table yet: ``None``, shown as "—") and the renderer in
:mod:`aggregator.live.web.render`. Their signatures and answers follow docs/design.md §9, so
switching each to issue 10's module changes only its body.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator import defaults
from aggregator.config import Settings
from aggregator.config import active_minutes as active_minutes_setting
from aggregator.connection import Connection
from aggregator.errors import ConfigError
from aggregator.live.status import gather, host_files, live_status
from aggregator.live.web.render import HIDDEN_TYPES, Item
from aggregator.parse import loads
from aggregator.projections import Projector
from aggregator.store import Store
from aggregator.text import iso_ms, message_text
from aggregator.usage import report as usage_report
from aggregator.views import conversation_views

SEARCH_SCOPE = "recent"
"""What the fallback search covers (``scope`` in its answer): the recent-messages projection."""

MARK = ("⟦", "⟧")
"""Around each match in a snippet (as issue 10's ``aggregator.fts.MARK``); the page turns them into
``<mark>``, and a snippet's own ``⟦⟧`` are shown as ``[]``."""

_SNIPPET_CHARS = 160
_SEARCH_TEXT_CHARS = 200_000
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_TERM = re.compile(r'"([^"]*)"?|(\S+)')


# --- adapters for issue 10 -------------------------------------------------------------------
def cost_usd(usage: dict[str, int] | None, model: str | None = None) -> float | None:
    """**Adapter**: the cost of ``usage`` tokens in US dollars, ``None`` when unknown.

    main has no price table yet (issue 10 brings one, with ``AGG_PRICES``): every cost is
    unknown, which docs/design.md §9 spells ``null``.
    """
    return None


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _term_pattern(text: str, prefix: bool) -> str | None:
    words = _WORD.findall(text)
    if not words:
        return None
    if any(_is_cjk(c) for c in text):  # CJK: by substring
        return r"\W*".join(re.escape(w) for w in words)
    body = r"\W+".join(re.escape(w) for w in words)
    tail = r"\w*" if prefix else ""
    return rf"(?<!\w){body}{tail}(?!\w)"


def query_terms(query: str) -> list[re.Pattern[str]]:
    """The query's terms as case-insensitive patterns: whole words, ``"phrases"``, ``prefix*``,
    CJK by substring. Any text is accepted (syntax characters are ignored, never an error)."""
    out = []
    for m in _TERM.finditer(query):
        phrase, word = m.group(1), m.group(2)
        text = phrase if phrase is not None else word
        pattern = _term_pattern(text, prefix=phrase is None and text.endswith("*"))
        if pattern:
            out.append(re.compile(pattern, re.IGNORECASE))
    return out


def snippet(text: str, terms: Sequence[re.Pattern[str]]) -> str:
    """About :data:`_SNIPPET_CHARS` characters of ``text`` (whitespace collapsed) around the first
    match, each match between :data:`MARK`'s two characters."""
    flat = _SPACE.sub(" ", text).strip().replace(MARK[0], "[").replace(MARK[1], "]")
    first = min((m.start() for p in terms if (m := p.search(flat))), default=0)
    start = max(0, first - _SNIPPET_CHARS // 3)
    end = min(len(flat), start + _SNIPPET_CHARS)
    part = flat[start:end]
    spans = sorted((m.start(), m.end()) for p in terms for m in p.finditer(part) if m.end() > m.start())
    out, at = [], 0
    for a, b in spans:
        if a >= at:
            out += [part[at:a], MARK[0], part[a:b], MARK[1]]
            at = b
    out.append(part[at:])
    return ("…" if start else "") + "".join(out) + ("…" if end < len(flat) else "")


# --- the event window of a conversation ------------------------------------------------------
@dataclass
class Window:
    """A run of a conversation's events, oldest first, and whether there are more on either side."""

    items: list[Item] = field(default_factory=list)
    more_before: bool = False
    more_after: bool = False

    @property
    def first_seq(self) -> int | None:
        return self.items[0].seq if self.items else None

    @property
    def last_seq(self) -> int | None:
        return self.items[-1].seq if self.items else None


def _parse(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class WebData:
    """The store as the web pages and the API see it (thread-safe: one per server)."""

    def __init__(self, settings: Settings, conn: Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.store = Store(conn.client, settings.keys, settings.host)
        self.r: Any = conn.client
        self.keys = settings.keys
        self._projector = Projector(self.store)
        self._project_lock = threading.Lock()

    # --- projections ---------------------------------------------------------------------------
    def fresh(self) -> None:
        """Catch the projections up (the writer may not be running); one request at a time does it."""
        with self._project_lock:
            self._projector.catch_up()

    # --- conversations -------------------------------------------------------------------------
    def conversations(
        self,
        *,
        project: str | None = None,
        active: bool = False,
        since_ms: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """``{"conversations": [...], "total": n}``: newest activity first (record time), each a
        ``current.json`` conversation plus ``cost_usd`` (the shape of ``agg list --json``)."""
        self.fresh()
        now = int(time.time() * 1000)
        minutes = active_minutes_setting()
        convs = self.store.conversations()
        fields = self.store.projection_fields(convs, ["last_ms", "messages", "project"])
        chosen: list[tuple[int, str]] = []
        for conv, (last, msgs, proj) in zip(convs, fields, strict=True):
            if not msgs or int(msgs) <= 0:
                continue
            if project is not None and (proj or "") != project:
                continue
            last_ms = int(last or 0)
            if active and now - last_ms > minutes * 60_000:
                continue
            if since_ms is not None and last_ms < since_ms:
                continue
            chosen.append((last_ms, conv))
        chosen.sort(reverse=True)
        page = chosen[offset : offset + limit if limit is not None else None]
        views = conversation_views(self.store, [c for _, c in page], now_ms=now, active_minutes=minutes)
        for v in views:
            v["cost_usd"] = cost_usd(v["usage"])
        return {"conversations": views, "total": len(chosen), "unpriced": []}

    def conversation(self, key: str, *, fresh: bool = True) -> dict[str, Any]:
        """One conversation's view (``key`` may be a unique prefix); :class:`NotFound` otherwise.
        ``fresh=False`` skips catching the projections up (when only the key and subagents matter)."""
        conv = self.store.resolve_conversation(key)
        if fresh:
            self.fresh()
        views = conversation_views(self.store, [conv])
        if not views:  # stored, but no message yet: an empty view
            views = [dict(_empty_view(conv))]
        view = views[0]
        view["cost_usd"] = cost_usd(view["usage"])
        return view

    def projects(self) -> list[tuple[str, str]]:
        """**Adapter**: every project as (name, how to show it), sorted. Issue 10's
        ``aggregator.projects.project_paths`` shows each as its directory path."""
        return [(name, name) for name in self.store.projects()]

    # --- events --------------------------------------------------------------------------------
    def _entries(self, conv: str, firsts: list[int]) -> list[tuple[int, dict[str, Any]]]:
        """(seq, envelope) of ``conv``'s first versions in the log batches starting at ``firsts``."""
        out = []
        for entries in self.store.batches_at(firsts):
            for entry in entries:
                env = orjson.loads(entry.envelope)
                if env["conv"] == conv and not env["revision"]:
                    out.append((entry.seq, env))
        return out

    def _walk(self, conv: str, *, after: int | None = None, before: int | None = None) -> Iterator[tuple[int, Any]]:
        """``conv``'s events (seq, envelope) after ``after`` (ascending) or before ``before``
        (descending; None = from the newest), a chunk of timeline batches at a time."""
        chunk = 64
        if after is not None:
            # The batch holding after + 1 may have started at or before `after`.
            holding = self.store.timeline_holding(conv, after)
            firsts = [] if holding is None else [holding]
            low = after
            while True:
                firsts += self.store.timeline_after(conv, low, chunk)
                if not firsts:
                    return
                for seq, env in sorted(self._entries(conv, firsts)):
                    if seq > after:
                        yield seq, env
                low = max(firsts)
                firsts = []
        high = before
        while True:
            firsts = self.store.timeline_before(conv, high, chunk)
            if not firsts:
                return
            for seq, env in sorted(self._entries(conv, firsts), reverse=True):
                if before is None or seq < before:
                    yield seq, env
            high = min(firsts)

    def _take(self, walk: Iterator[tuple[int, Any]], limit: int, all_types: bool) -> tuple[list[tuple[int, Any]], bool]:
        got: list[tuple[int, Any]] = []
        for seq, env in walk:
            if all_types or env.get("type") not in HIDDEN_TYPES:
                if len(got) == limit:
                    return got, True
                got.append((seq, env))
        return got, False

    def _newest(self, refs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The newest stored line of each (conversation, event id), in two pipelined round trips."""
        return self.store.newest_bodies(refs)

    def _with_records(self, conv: str, picked: list[tuple[int, Any]]) -> list[Item]:
        bodies = self._newest([(conv, env["id"]) for _, env in picked])
        return [Item(seq, env, _parse(b)) for (seq, env), b in zip(picked, bodies, strict=True)]

    def events(
        self,
        conv: str,
        *,
        after: int | None = None,
        before: int | None = None,
        around: int | None = None,
        limit: int = defaults.WEB_PAGE_EVENTS,
        all_types: bool = False,
    ) -> Window:
        """A page of ``conv``'s events (newest bytes of each): after ``after``, before ``before``,
        from ``around`` (a few earlier ones for context), or the newest ones."""
        if around is not None:
            back, more_before = self._take(self._walk(conv, before=around), 3, all_types)
            ahead, more_after = self._take(self._walk(conv, after=around - 1), limit, all_types)
            picked = back[::-1] + ahead
        elif after is not None:
            picked, more_after = self._take(self._walk(conv, after=after), limit, all_types)
            more_before = after > 0 and self._has(conv, before=after + 1, all_types=all_types)
        else:
            back, more_before = self._take(self._walk(conv, before=before), limit, all_types)
            picked = back[::-1]
            more_after = before is not None and self._has(conv, after=before - 1, all_types=all_types)
        return Window(self._with_records(conv, picked), more_before, more_after)

    def _has(self, conv: str, *, before: int | None = None, after: int | None = None, all_types: bool) -> bool:
        walk = self._walk(conv, before=before) if before is not None else self._walk(conv, after=after)
        return bool(self._take(walk, 1, all_types)[0])

    # --- search: adapter -----------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        project: str | None = None,
        conversation: str | None = None,
        role: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """**Adapter** for issue 10's ``aggregator.search.search``: ``{"query", "total", "took_ms",
        "hits": [{"conv", "project", "project_path", "title", "seq", "id", "role", "agent", "ts",
        "snippet"}]}``, newest first; snippets mark matches with :data:`MARK`. A query without a
        word raises :class:`ConfigError` (as its ``QueryError`` does).

        Until the search index lands this scans the text of the messages the recent-messages
        projection holds (the newest :data:`~aggregator.projections.RECENT_KEEP`), and says so:
        ``"scope": "recent"`` and ``"scanned"`` (messages read).
        """
        started = time.perf_counter()
        terms = query_terms(query)
        if not terms:
            raise ConfigError("the query has no word to search for")
        self.fresh()
        members = [((m.seq, m.conv, m.id, m.role), m.tms) for m in reversed(self.store.recent_messages())]
        conv_filter = self.store.resolve_conversation(conversation) if conversation else None
        members = [
            (m, tms)
            for m, tms in members
            if (conv_filter is None or m[1] == conv_filter)
            and (role is None or m[3] == role)
            and (since_ms is None or tms >= since_ms)
            and (until_ms is None or tms <= until_ms)
        ]
        texts = self._texts([(conv, eid) for (_, conv, eid, _), _ in members])
        convs = list(dict.fromkeys(conv for (_, conv, _, _), _ in members))
        titles = self.store.projection_fields(convs, ["project", "title"])
        info = dict(zip(convs, titles, strict=True))
        hits = []
        for ((seq, conv, eid, rrole), tms), text in zip(members, texts, strict=True):
            proj, title = info[conv]
            proj = proj or None
            if project is not None and proj != project:
                continue
            if not all(p.search(text) for p in terms):
                continue
            hits.append(
                {
                    "conv": conv,
                    "project": proj,
                    "project_path": None,
                    "title": title or None,
                    "seq": seq,
                    "id": eid,
                    "role": rrole,
                    "agent": None,
                    "ts": iso_ms(tms) if tms else None,
                    "snippet": snippet(text, terms),
                }
            )
        return {
            "query": query,
            "total": len(hits),
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
            "hits": hits[:limit],
            "scope": SEARCH_SCOPE,
            "scanned": len(members),
        }

    def _texts(self, refs: list[tuple[str, str]]) -> list[str]:
        out = []
        for raw in self._newest(refs):
            rec = _parse(raw)
            out.append(message_text(rec)[:_SEARCH_TEXT_CHARS] if isinstance(rec, dict) else "")
        return out

    # --- usage and status ----------------------------------------------------------------------
    def usage(self, by: str) -> dict[str, Any]:
        """``agg usage --by BY --json``: each row and the total with ``cost_usd``."""
        self.fresh()
        return usage_report(self.store, by)

    def status(self) -> dict[str, Any]:
        """``agg status --json`` (with ``redis.binary``, the running server's executable)."""
        files = host_files(self.store)
        st = gather(self.conn, self.store, files)
        st.update(live_status(self.settings, self.store, files))
        st["redis"].setdefault("binary", self.r.info("server").get("executable"))
        return st

    def status_without_redis(self, error: str) -> dict[str, Any]:
        """What ``agg status --json`` says while Redis cannot be reached."""
        return {"redis": {"url": self.conn.masked_url, "ok": False, "error": error}, **live_status(self.settings, None)}

    def rejects(self, limit: int = 50) -> dict[str, Any]:
        """``{"rejects": [{"file", "offset", "reason", "prefix", "at", …}]}``, newest first (``agg rejects --json``)."""
        return {"rejects": self.store.rejections(max(0, limit))[0]}


def _empty_view(conv: str) -> dict[str, Any]:
    return {
        "key": conv,
        "project": None,
        "title": None,
        "summary": None,
        "first_ts": None,
        "last_ts": None,
        "events": 0,
        "messages": 0,
        "usage": {},
        "responses": 0,
        "active": False,
        "subagents": [],
    }
