"""Keeping the global ``seq`` from going back when Redis loses writes.

A Redis restored from an older copy of its data (a failover to a replica that missed the last
writes, a restored backup, an AOF that lost its last second) has an older ``agg:seq``. Left alone,
the next commit would hand out seqs that subscribers were already given for other events — and a
subscriber that skips what it has seen would silently drop them.

Every committing agg process therefore remembers the highest seq it has seen (:class:`SeqFloor`,
also saved in ``<data dir>/state/seq-<ns>.json`` so a restarted process remembers too) and runs the
:data:`~aggregator.scripts.SEQ_FLOOR` script on every new Redis connection, before the connection
is used for anything else (redis-py's ``redis_connect_func`` hook). If Redis is behind, its
sequence is raised to the floor: the events it lost are re-read from the files (their cursors
went back with it) and committed again under new, higher seqs. Subscribers see a jump in ``seq``,
find nothing stored in the gap, and carry on; nothing they saw is ever reused
(``tests/process/test_live_faults.py::test_restore_from_older_copy``).

The guarantee covers seqs some process using a floor has seen: the watcher (its commits), the
writer (its snapshots) and ``agg tail`` (what it printed; it raises the floor itself when it
notices the store went back, see :mod:`aggregator.subscribe`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from aggregator import defaults, scripts
from aggregator.connection import check_policy
from aggregator.errors import first_line
from aggregator.files import locked, write_private
from aggregator.keys import Keys

log = logging.getLogger("agg.seqfloor")


def seq_in_file(path: Path) -> int:
    """The ``seq`` of a JSON object file (a floor file, ``current.json``); 0 if missing or unreadable."""
    try:
        data = orjson.loads(path.read_bytes())
        return int(data.get("seq", 0)) if isinstance(data, dict) else 0
    except (OSError, ValueError, TypeError):
        return 0


def raise_floor(client: Any, keys: Keys, floor: int) -> tuple[bool, int]:
    """Run SEQ_FLOOR through ``client``: ``(raised, previous seq)``."""
    call = scripts.seq_floor_call(seq=keys.seq, stats=keys.stats, floor=floor)
    res = client.eval(call.script, 2, *call.keys, *call.args)
    return bool(int(res[0])), int(res[1])


class SeqFloor:
    """The highest global seq this process has seen, and the connect hook that enforces it."""

    def __init__(self, keys: Keys, path: Path | None = None) -> None:
        self.keys = keys
        self.path = path
        self.enabled = True
        self._lock = threading.Lock()
        self.value = self._load()
        self._saved = self.value
        self._saved_at = 0.0
        self.connects = 0
        """New connections made so far."""
        self.run_id: str | None = None
        self._run_ids: set[str] = set()
        self.servers = 0
        """Times a new connection found a different Redis server process (``run_id``) than the one
        before: a restart or a failover, after which Redis may hold less than it did."""
        self.raised = 0
        """Times a connection found Redis behind the floor and raised it."""

    def off(self) -> None:
        """Stop keeping a floor: on a Redis Cluster the store's seqs are per bucket, and one
        floor for all of them would mean nothing (:meth:`observe` does nothing from now on)."""
        self.enabled = False
        self.value = 0
        self.path = None

    # --- knowing -------------------------------------------------------------------------------
    def observe(self, seq: int) -> None:
        """Record that ``seq`` was handed out (saved to the file at most every second)."""
        if seq > self.value and self.enabled:
            with self._lock:
                self.value = max(self.value, seq)
            if time.monotonic() - self._saved_at >= defaults.SEQ_FLOOR_SAVE_S:
                self.save()

    def save(self) -> None:
        """Merge the floor into its file (max of ours and what other processes saved)."""
        if self.path is None or self.value <= self._saved:
            return
        self._saved_at = time.monotonic()
        with contextlib.suppress(OSError), locked(self.path.with_suffix(".lock")):
            value = max(self.value, self._read())
            write_private(self.path, orjson.dumps({"seq": value}), durable=False)
            self._saved = value

    def _load(self) -> int:
        return self._read() if self.path is not None else 0

    def _read(self) -> int:
        assert self.path is not None
        return seq_in_file(self.path)

    # --- enforcing -----------------------------------------------------------------------------
    def hook(self, conn: Any) -> None:
        """redis-py ``redis_connect_func``: set the connection up, then apply the floor on it.

        Runs inside ``Connection.connect()``, so no command of this process reaches a freshly
        connected (possibly restored) Redis before the floor is in place — not even one that
        redis-py's pool reconnects transparently. Before anything else it refuses a Redis that
        may evict keys (:func:`~aggregator.connection.check_policy`, raising
        :class:`~aggregator.errors.EvictingRedis`, which the long-running parts wait out).
        """
        conn.on_connect()
        self._meet(conn, nodes=False)
        floor = self.value
        if floor <= 0:
            return
        try:
            call = scripts.seq_floor_call(seq=self.keys.seq, stats=self.keys.stats, floor=floor)
            conn.send_command("EVAL", call.script, 2, *call.keys, *call.args)
            res = conn.read_response()
        except redis.ResponseError as e:
            # A read-only replica or a user without write rights: this connection cannot commit
            # anything either, so nothing can be reused through it; say so once per connection.
            log.warning("could not check the seq floor (%s)", first_line(e))
            return
        if int(res[0]):
            with self._lock:
                self.raised += 1
            log.warning(
                "Redis was behind: its seq was %d but %d was already handed out (it lost writes); "
                "raised it so no seq is reused — lost events are read again from the files",
                int(res[1]),
                floor,
            )

    def node_hook(self, conn: Any) -> None:
        """What :meth:`hook` does but the floor, on a connection redis-py has set up: refuse an
        evicting Redis and count a server process not met before (:attr:`servers`). The whole
        hook on a Redis Cluster's connections (``RedisCluster`` runs its handshake first), where a
        connection reaches one node of many and the store's seqs are per bucket: a failover
        still counts as a new server, so the watcher re-checks every file against its cursor."""
        self._meet(conn, nodes=True)

    def _meet(self, conn: Any, *, nodes: bool) -> None:
        """Refuse an evicting Redis, and count a new server process: on a single Redis one other
        than the last (a server met again after another may lack what that one took:
        ``tests/store/test_seqfloor.py::test_a_server_met_again_after_another_counts_as_a_new_server_on_a_single_redis``);
        on a cluster (``nodes``, connections to many nodes interleaving) one not met before."""
        check_policy(conn)
        run_id = self._run_id(conn)
        with self._lock:
            self.connects += 1
            new = run_id not in self._run_ids if nodes else run_id != self.run_id
            if run_id is None or new:
                self.servers += 1
                self._run_ids.add(run_id or "")
                self.run_id = run_id

    @staticmethod
    def _run_id(conn: Any) -> str | None:
        """The server's ``run_id`` (new on every restart), or None if INFO is not allowed."""
        try:
            conn.send_command("INFO", "server")
            info = conn.read_response()
        except redis.ResponseError:
            return None
        text = info.decode() if isinstance(info, bytes) else str(info)
        for ln in text.splitlines():
            if ln.startswith("run_id:"):
                return ln[7:].strip()
        return None

    def client_options(self) -> dict[str, Any]:
        """Options for :func:`aggregator.connection.client_from_url` that install the hook."""
        return {"redis_connect_func": self.hook}
