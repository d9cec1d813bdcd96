"""The loop the long-running parts share (``agg watch``, ``agg writer``).

:class:`Service` owns what both need around their work: the process lock (one instance per data
dir and namespace), the state file ``agg status`` reads, the seq floor, the Redis connection that
waits out outages (:class:`~aggregator.live.liveredis.LiveRedis`), and the store identity
(:meth:`aggregator.store.Store.identity`). Its :meth:`Service.run` is::

    lock → state "starting" → loop { connect → open the store → serve } → final → state "stopped"

* Redis away — unreachable, restarting, loading, ``OOM`` at ``maxmemory``, ``MISCONF`` with its
  AOF disk full (:func:`aggregator.connection.is_away`) — ends ``serve``; the loop reports it
  (state "waiting for Redis" and why), waits with backoff and serves again. Nothing is lost:
  what was not committed is read again from the cursors Redis holds
  (``tests/adversarial/test_live.py::test_watch_and_writer_wait_out_oom_and_resume``).
* A store that lost its keys without a reconnect (FLUSHALL, an empty backup restored) is noticed
  by its identity — on every commit (the ingest script refuses a batch whose expected identity is
  not the store's) and every :data:`~aggregator.defaults.SERVICE_CHECK_S` — and handled as after a
  reconnect to a Redis that went back: the seq floor is raised, then ``serve`` starts again (the
  watcher re-reads every file; the writer rebuilds its snapshot)
  (``tests/adversarial/test_live.py::test_a_flushed_store_is_noticed_and_resynced``).
* Another :class:`~aggregator.errors.StoreError` (a cursor that keeps moving under it) is logged
  and ``serve`` starts again; any other error ends the process with one line (the CLI prints it).

Subclasses implement :meth:`serve` (until the stop flag is set) and may override
:meth:`final` (last work on the way out), :meth:`figures` (fields for the state file) and
:meth:`on_lost` (drop what the lost connection held).
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from aggregator import defaults
from aggregator.buckets import Buckets
from aggregator.config import Settings
from aggregator.connection import check, is_away
from aggregator.errors import StoreError, StoreReset
from aggregator.lifecycle import ProcessLock, StateFile, StopFlag
from aggregator.live.liveredis import LiveRedis
from aggregator.live.status import redis_label
from aggregator.paths import DataPaths
from aggregator.seqfloor import SeqFloor, raise_floor
from aggregator.store import Store

STATE_STARTING = "starting"
STATE_WAITING = "waiting for Redis"
STATE_STOPPED = "stopped"


class Service:
    """A long-running part: see the module docstring."""

    role: ClassVar[str] = ""
    """``watch`` or ``writer``: names its state and lock files, and its log lines."""
    serving_state: ClassVar[str] = "serving"
    """The state shown while it works (``watching``, ``writing``)."""

    def __init__(self, settings: Settings, stop: StopFlag) -> None:
        self.settings = settings
        self.stop = stop
        self.keys = settings.keys
        self.paths = DataPaths(settings.data_dir, settings.namespace)
        self.floor = SeqFloor(self.keys, self.paths.floor)
        self.state = StateFile(self.paths.state(self.role))
        self.lock = ProcessLock(self.paths.lock(self.role), f"agg {self.role} for this data dir")
        self.log = logging.getLogger(f"agg.{self.role}")
        self.redis = LiveRedis(settings, stop, self.floor, on_wait=self._waiting, log=self.log)
        self.store: Store | None = None
        """The store on a single Redis; on a Redis Cluster, bucket 0's (see :attr:`buckets`)."""
        self.buckets: Buckets | None = None
        """The store's buckets: one on a single Redis (:attr:`store`), many on a cluster."""
        self.store_id = ""
        self.store_resets = 0
        """Times the store was found to have lost its keys under this process."""
        self.serves = 0
        self._servers_seen = -1
        self._checked_at = 0.0

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until the stop flag is set; do the last work; return."""
        with self.lock:
            self.state.update(state=STATE_STARTING, redis=redis_label(self.settings), error=None, **self.figures())
            try:
                self.on_start()
                while not self.stop:
                    try:
                        if not self.redis.connect():
                            break
                        self._open_store()
                        self.serves += 1
                        self.serve()
                    except StoreReset as e:
                        self._store_went_back(str(e))
                    except StoreError as e:  # e.g. a cursor that keeps moving: say it, serve again
                        self.log.error("%s", e)
                        self.stop.wait(defaults.RETRY_MAX_S)
                    except Exception as e:
                        if not is_away(e):
                            raise
                        self.on_lost()
                        self.redis.lost(e)
                        self.redis.pause()
                self.final()
            finally:
                self.on_lost()
                self.on_stop()
                self.floor.save()
                if self.buckets is not None:
                    self.buckets.save_floors()
                self.state.update(state=STATE_STOPPED, stopped_reason=self.stop.reason, **self.figures())
                self.redis.close()

    def _open_store(self) -> None:
        client = self.redis.client
        assert client is not None
        buckets = Buckets(client, self.keys, self.settings.host, cluster=self.redis.cluster)
        if buckets.cluster:
            # A seq floor per bucket, applied by every commit stream before it commits: a master
            # failed over to a replica lacking its last writes never hands a seq out twice
            # (tests/cluster/test_run.py::test_run_carries_on_through_a_masters_failover). Kept
            # across reconnects: the files are saved only now and then.
            if self.buckets is not None and self.buckets.cluster:
                for new, old in zip(buckets, self.buckets, strict=True):
                    new.floor = old.floor
            else:
                buckets.keep_floors(self.settings.data_dir)
        identity = self._identity(buckets, create=True)
        if self.store_id and identity != self.store_id:
            # Reconnected to a store that is not the one we served (an empty Redis at the same
            # address): the floor hook raised seq if it found one behind; say what happened.
            self.log.warning("the store was replaced while Redis was away (its identity changed)")
        self.store_id = identity
        for store, token in zip(buckets, identity.split(","), strict=True):
            store.expect_id = token
        self.buckets = buckets
        self.store = buckets.stores[0]

    @staticmethod
    def _identity(buckets: Buckets, *, create: bool = False) -> str:
        """The identities of the buckets' stores, ``,``-joined (one on a single Redis)."""
        return ",".join(s.identity() if create else s.current_identity() for s in buckets)

    def _store_went_back(self, why: str) -> None:
        self.store_resets += 1
        self.log.warning("%s; raising the seq floor so no seq is reused, then reading everything again", why)
        if self.redis.client is not None and self.floor.value > 0:
            raised, before = raise_floor(self.redis.client, self.keys, self.floor.value)
            if raised:
                self.log.warning("the store's seq was %d; raised to %d", before, self.floor.value)
        self.store_id = ""  # adopt the store's new identity on the next serve

    # --- helpers for subclasses ----------------------------------------------------------------
    def serving(self) -> None:
        """``serve`` did real work on Redis: the state says so and an outage (if any) is over."""
        self.redis.recovered()
        self.state.update(state=self.serving_state, error=None, **self.figures())

    def check_due(self) -> None:
        """Every :data:`~aggregator.defaults.SERVICE_CHECK_S`: check that Redis is usable
        (:func:`aggregator.connection.check`) and that the store is still the one served;
        raises what the loop handles (an outage, :class:`StoreReset`)."""
        now = time.monotonic()
        if now - self._checked_at < defaults.SERVICE_CHECK_S:
            return
        self._checked_at = now
        assert self.store is not None and self.redis.client is not None
        check(self.redis.client, self.redis.masked)
        assert self.buckets is not None
        if self._identity(self.buckets) != self.store_id:
            raise StoreReset("the store lost its keys (FLUSHALL, or an empty backup restored)")

    def met_another_server(self) -> bool:
        """Whether a connection has reached a Redis server process not met before since the last
        call (the first call: True): a restart, or on a cluster a replica that took a master's
        place — redis-py follows the slot by itself, so no outage is seen — which may hold less
        than what this process built on (tests/process/test_live_faults.py,
        tests/cluster/test_run.py::test_run_carries_on_through_a_masters_failover)."""
        seen, self._servers_seen = self._servers_seen, self.floor.servers
        return seen != self._servers_seen

    def _waiting(self, reason: str) -> None:
        self.state.update(state=STATE_WAITING, error=reason, **self.figures())

    # --- what subclasses provide ---------------------------------------------------------------
    def serve(self) -> None:
        """Work until the stop flag is set (raise to leave: an outage, :class:`StoreReset`)."""
        raise NotImplementedError

    def on_start(self) -> None:
        """Before the first connection (default: nothing)."""

    def on_stop(self) -> None:
        """On the way out, after :meth:`final` (default: nothing)."""

    def final(self) -> None:
        """Last work on the way out, if Redis is there (default: nothing)."""

    def on_lost(self) -> None:
        """The connection was lost, or the process stops: drop what it held (default: nothing)."""

    def figures(self) -> dict[str, Any]:
        """Fields for the state file (default: none)."""
        return {}
