"""Everything ``agg serve`` reads from the store, as plain data for the pages and the JSON API.

Each answer is the library's, the one the matching command prints with ``--json``: conversations
(:func:`aggregator.listing.conversations`, ``agg list``), one conversation
(:func:`aggregator.listing.conversation`: :func:`aggregator.transcript.header` with ``active`` and
``cost_usd``), search (:func:`aggregator.search.search` on this machine's
:class:`~aggregator.searchindex.SearchIndex`, :meth:`WebData.search_index`: ``agg search``), usage
(:func:`aggregator.usage.report`), status (:mod:`aggregator.live.status`) and rejected lines. The
page's own part is a conversation's events a window at a time, from its timeline and the log, each
with its newest stored bytes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.config import Settings
from aggregator.connection import Connection, open_queue
from aggregator.listing import Totals, conversation, conversations, totals, totals_state
from aggregator.live.status import gather, host_files, live_status
from aggregator.live.subscribe import format_position
from aggregator.live.web.render import Item
from aggregator.parse import loads
from aggregator.projections import catch_up_all
from aggregator.searchindex import SearchIndex
from aggregator.store import Store
from aggregator.transcript import HIDDEN_TYPES
from aggregator.usage import report as usage_report
from aggregator.views import conversation_view


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
        self.buckets = Buckets.of(conn, settings)
        """The store's buckets (one on a single Redis): lists, usage, search and status read
        them all; a conversation is read in its own (:meth:`store_of`)."""
        self.r: Any = conn.client
        self.keys = settings.keys
        self._index: SearchIndex | None = None
        self._search_lock = threading.Lock()  # a SearchIndex is used by one thread at a time
        self._totals: tuple[tuple[Any, ...], Totals] | None = None
        self._totals_lock = threading.Lock()
        self._queue_conn: Connection | None = None
        self._bucket_of: dict[str, Store] = {}

    def close(self) -> None:
        """Close the search index file (if a search opened it) and the queue's connection."""
        with self._search_lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        if self._queue_conn is not None:
            self._queue_conn.close()

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
        """``agg list --json`` (all of it without ``limit``), from ``offset`` on."""
        return conversations(
            self.buckets,
            project=project,
            active=active,
            since_ms=since_ms,
            limit=limit,
            offset=offset,
            known=self.totals(),
        )

    def totals(self) -> Totals:
        """The projects' paths and every conversation's cost, read again only when the projections
        changed since the last time (:func:`aggregator.listing.totals_state`): a list page reads them
        once per change, not once per request."""
        catch_up_all(self.buckets)
        state = tuple(totals_state(store) for store in self.buckets)
        with self._totals_lock:
            if self._totals is not None and self._totals[0] == state:
                return self._totals[1]
        known = totals(self.buckets)
        with self._totals_lock:
            self._totals = (state, known)
        return known

    def position(self, conv: str | None = None) -> str:
        """Where the store's log (``conv``'s bucket's, if given) ends now, as ``/api/events``
        takes it back: a page's live events follow on from here, none missed. A seq; on a Redis
        Cluster, ``bucket:seq`` pairs (:func:`~aggregator.live.subscribe.format_position`)."""
        if not self.buckets.cluster:
            return str(self.buckets.stores[0].last_seq())
        stores = dict(enumerate(self.buckets.stores))
        if conv is not None:
            n = self.bucket_of(conv)
            stores = {n: stores[n]} if n is not None else stores
        return format_position({n: store.last_seq() for n, store in stores.items()})

    def bucket_of(self, conv: str) -> int | None:
        """The bucket holding ``conv`` on a Redis Cluster (None on a single Redis)."""
        return self.buckets.stores.index(self.store_of(conv)) if self.buckets.cluster else None

    def key(self, name: str) -> str:
        """The conversation ``name`` means (a key, a unique prefix, a transcript file name);
        :class:`~aggregator.errors.NotFound` otherwise."""
        return self.buckets.find(name)[1]

    def store_of(self, conv: str) -> Store:
        """The store (the bucket, on a cluster) holding conversation ``conv``. Remembered: a
        conversation never changes bucket (its project's), and a page asks several times."""
        if not self.buckets.cluster:
            return self.buckets.stores[0]
        store = self._bucket_of.get(conv)
        if store is None:
            store = self._bucket_of[conv] = self.buckets.resolve(conv)[0]
        return store

    def conversation(self, name: str) -> dict[str, Any]:
        """One conversation as ``agg list --json`` lists it (``name`` as :meth:`key` takes it)."""
        store, conv = self.buckets.find(name)
        return conversation(store, conv)

    def agents(self, conv: str) -> dict[str, dict[str, Any]]:
        """``conv``'s subagents by id, as its projection has them now (not caught up: what a live
        page's new events need)."""
        view = conversation_view(conv, self.store_of(conv).projection(conv), now_ms=0, active_minutes=0)
        return {a["id"]: a for a in view["subagents"]}

    def projects(self) -> list[tuple[str, str]]:
        """Every project as (directory name, readable path), by path."""
        return sorted(self.totals().paths.items(), key=lambda p: (p[1], p[0]))

    # --- events --------------------------------------------------------------------------------
    @staticmethod
    def _entries(store: Store, conv: str, firsts: list[int]) -> list[tuple[int, dict[str, Any]]]:
        """(seq, envelope) of ``conv``'s first versions in the log batches starting at ``firsts``."""
        out = []
        for entries in store.batches_at(firsts):
            for entry in entries:
                env = orjson.loads(entry.envelope)
                if env["conv"] == conv and not env["revision"]:
                    out.append((entry.seq, env))
        return out

    def _walk(self, conv: str, *, after: int | None = None, before: int | None = None) -> Iterator[tuple[int, Any]]:
        """``conv``'s events (seq, envelope) after ``after`` (ascending) or before ``before``
        (descending; None = from the newest), a chunk of timeline batches at a time."""
        chunk = 64
        store = self.store_of(conv)
        if after is not None:
            # The batch holding after + 1 may have started at or before `after`.
            holding = store.timeline_holding(conv, after)
            firsts = [] if holding is None else [holding]
            low = after
            while True:
                firsts += store.timeline_after(conv, low, chunk)
                if not firsts:
                    return
                for seq, env in sorted(self._entries(store, conv, firsts)):
                    if seq > after:
                        yield seq, env
                low = max(firsts)
                firsts = []
        high = before
        while True:
            firsts = store.timeline_before(conv, high, chunk)
            if not firsts:
                return
            for seq, env in sorted(self._entries(store, conv, firsts), reverse=True):
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

    def _with_records(self, conv: str, picked: list[tuple[int, Any]]) -> list[Item]:
        bodies = self.store_of(conv).newest_bodies([(conv, env["id"]) for _, env in picked])
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

    # --- search --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def search_index(self) -> Iterator[SearchIndex]:
        """This machine's search index of the store, for one search at a time (opened on first use;
        :func:`aggregator.search.search` catches it up before it answers)."""
        with self._search_lock:
            if self._index is None:
                self._index = SearchIndex.open_all(self.buckets, self.settings.data_dir)
            yield self._index

    # --- usage and status ----------------------------------------------------------------------
    def usage(self, by: str, since_ms: int | None = None, until_ms: int | None = None) -> dict[str, Any]:
        """``agg usage --by BY [--since] [--until] --json``: each row and the total with ``cost_usd``."""
        catch_up_all(self.buckets)
        return usage_report(self.buckets, by, since_ms, until_ms)

    def status(self) -> dict[str, Any]:
        """``agg status --json`` (with ``redis.binary``, the running server's executable)."""
        files = host_files(self.buckets)
        st = gather(self.conn, self.buckets, files, queue=self._queue())
        st.update(live_status(self.settings, self.buckets, files))
        st["redis"].setdefault("binary", self.r.info("server").get("executable"))
        return st

    def _queue(self) -> Any:
        """The turn queue's Redis when ``AGG_QUEUE_URL`` names one (opened once), else None."""
        if not self.settings.queue_url:
            return None
        if self._queue_conn is None:
            self._queue_conn = open_queue(self.settings, self.conn)
        return self._queue_conn.client

    def status_without_redis(self, error: str) -> dict[str, Any]:
        """What ``agg status --json`` says while Redis cannot be reached."""
        return {"redis": {"url": self.conn.masked_url, "ok": False, "error": error}, **live_status(self.settings, None)}

    def rejects(self, limit: int = 50) -> dict[str, Any]:
        """``agg rejects --json --limit LIMIT``: ``{"rejects": [...], "rejected", "kept"}``, newest first."""
        records, kept = self.buckets.rejections(limit)
        return {"rejects": records, "rejected": self.buckets.stats()["rejected"], "kept": kept}
