"""``agg serve``'s search indexer: a thread that keeps this machine's search index caught up with the log.

A search catches the index up before it answers (:func:`aggregator.search.search`), which after a
long time without searching means indexing everything stored meanwhile first — the first search
of the day would be slow. While ``agg serve`` runs, this thread does that work as lines arrive: it
looks at the log every :data:`~aggregator.defaults.SEARCH_FOLLOW_S` and takes in what is new (a look
that finds nothing new is two GETs and an HGET). It has its own SQLite connection; a search running
meanwhile simply goes on from whichever checkpoint it finds (each step is one transaction written
only if the checkpoint is still the one it started from).

:meth:`Indexer.stop` stops it between two steps (a step is whole or not written), so a server that
stops leaves the index at the end of some step. Redis or the index file failing is logged once
per new error and retried with :class:`~aggregator.backoff.Backoff`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import redis

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.buckets import Buckets
from aggregator.connection import as_agg_error
from aggregator.errors import AggError
from aggregator.searchindex import SearchIndex
from aggregator.store import Store

log = logging.getLogger("agg.serve")


class _Stopped(Exception):
    """Raised between two indexing steps when the indexer is asked to stop."""


class Indexer:
    """Follows ``store``'s log (every bucket's, on a Redis Cluster) into its search index in
    ``data_dir``, on a thread of its own."""

    def __init__(self, store: Store | Buckets, data_dir: Path, every_s: float = defaults.SEARCH_FOLLOW_S) -> None:
        self.buckets = store if isinstance(store, Buckets) else Buckets(store.client, store.keys, store.host)
        self.data_dir = data_dir
        self.every_s = every_s
        self.error: str | None = None
        """The last failure (None while indexing works)."""
        self.indexed = 0
        """Log entries taken in since the start."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agg-search-indexer", daemon=True)

    def start(self) -> Indexer:
        """Start following (returns itself)."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop and wait for it (at most ``timeout`` seconds); True once it has."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the thread is still running."""
        return self._thread.is_alive()

    def _step_done(self, entries: int) -> None:
        self.indexed += entries
        if self._stop.is_set():
            raise _Stopped

    def _run(self) -> None:
        index: SearchIndex | None = None
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    if index is None:
                        index = SearchIndex.open_all(self.buckets, self.data_dir)
                    index.follow(self.buckets.stores, self._step_done)
                except _Stopped:
                    return
                except (AggError, redis.RedisError, OSError, sqlite3.Error) as e:
                    message = str(as_agg_error(e)) if isinstance(e, redis.RedisError) else str(e)
                    if message != self.error:
                        log.warning("search index: %s (retrying)", message)
                    self.error = message
                    if backoff.wait(self._stop):
                        return
                    continue
                if self.error is not None:
                    log.warning("search index: caught up again")
                self.error = None
                backoff.reset()
                self._stop.wait(self.every_s)
        finally:
            if index is not None:
                index.close()
