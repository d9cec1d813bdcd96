"""The scheduler inside every ``agg worker``: debounce, dispatch and reconcile turns.

Ingest marks a conversation with ``ZADD <ns>:dirty NX <now ms> <conv>`` whenever a batch touches
it (the time of its oldest change no turn has covered). Each worker runs :meth:`Scheduler.run` in
a thread; every step is one pipelined read plus, when there is work, one :data:`DISPATCH` call:

* newly dirty conversations move to ``turns:due`` with a not-before time: first change +
  debounce, no earlier than the end of the conversation's cooldown or parking;
* due conversations are claimed — state ``queued``, a new generation — as long as fewer than the
  cap of concurrent turns are queued or running (none while the daily token budget is used up:
  :mod:`workers.budget`), and enqueued on the one RQ queue as job
  ``agg-turn-<hash of namespace and conversation>-<gen>`` with ``unique=True``, so the same
  generation can never be queued twice;
* a conversation due while its turn is queued or running gets one ``follow`` flag instead: one
  follow-up turn for the whole burst, scheduled when that turn ends.

Several workers may run the scheduler at once: every transition is one atomic script.

On a Redis Cluster store (:mod:`aggregator.buckets`) the scheduler does all this in every bucket
— a conversation's turn state and the bucket's ``turns:*`` zsets share the slot of the log its
turn commits to — and its jobs, on the queue's standalone Redis (``AGG_QUEUE_URL``), carry the
bucket: ``[conv, gen, bucket]``. The cap of concurrent turns is over all buckets: one scheduler
at a time dispatches (a short lock on the queue's Redis, :data:`~aggregator.defaults.
TURN_DISPATCH_LOCK_MS`), giving each bucket's DISPATCH what the other buckets leave of the cap.

The reconciler (every second, also in each worker) repairs what a crash leaves behind, far
sooner than RQ's own abandoned-job detection (up to 10 minutes by default): a running turn whose
lease expired is queued again under a new generation (``tests/process/test_workers.py::
test_kill9_mid_turn_redoes_the_turn_once``); a queued turn whose job is not waiting in RQ after a
grace period (lost between claim and enqueue, or its worker died before taking the lease) is
enqueued again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import Job

from aggregator import defaults
from aggregator import scripts as store_scripts
from aggregator.backoff import Backoff
from aggregator.errors import first_line
from aggregator.keys import Keys
from workers import scripts
from workers.budget import DailyBudget
from workers.config import TurnConfig

log = logging.getLogger("agg.turns")

JOB_FUNCTION = "workers.turns.run_turn"
WAITING_JOB_STATES = (b"queued", b"created")


@dataclass
class Scheduler:
    """Dispatch and reconciliation of one namespace's turns (see the module docstring)."""

    client: redis.Redis
    keys: Keys
    config: TurnConfig
    queue: Queue | None
    batch: int = defaults.TURN_DISPATCH_BATCH
    submit: Callable[..., None] | None = None
    """Where claimed turns go instead of the RQ queue (in-process runs: tests, benchmarks); called
    with the job's arguments (:meth:`job_args`)."""
    buckets: Sequence[Keys] | None = None
    """The keys of each bucket of a Redis Cluster store; None: one store, :attr:`keys` itself."""
    queue_client: redis.Redis | None = None
    """The queue's Redis (RQ's jobs, the budget, the dispatch lock); None: :attr:`client`."""

    def __post_init__(self) -> None:
        self.r: Any = self.client
        self.q: Any = self.queue_client if self.queue_client is not None else self.client
        self.cluster = self.buckets is not None
        self.bucket_keys = list(self.buckets) if self.buckets is not None else [self.keys]
        self.budget = DailyBudget(self.q, self.keys, self.config)
        self._held = False
        self._dispatch = self.client.register_script(scripts.DISPATCH)
        self._redo = self.client.register_script(scripts.REDO)
        self._requeue = self.client.register_script(scripts.REQUEUE)
        # the rebuild lock's compare-and-delete serves the dispatch lock as well
        self._unlock = self.q.register_script(store_scripts.PROJECT_UNLOCK)

    def job_args(self, conv: str, gen: int, bucket: int) -> tuple[str, int] | tuple[str, int, int]:
        """A turn job's arguments: ``(conv, gen)``, with the bucket on a cluster store."""
        return (conv, gen, bucket) if self.cluster else (conv, gen)

    # --- dispatch ------------------------------------------------------------------------------
    def tick(self, *, burst: bool = False) -> int:
        """One dispatch step; returns how many turns it claimed (and enqueued)."""
        if not self.cluster:
            k = self.keys
            pipe = self.r.pipeline(transaction=False)
            pipe.zrange(k.dirty, 0, self.batch - 1)
            pipe.zrange(k.turns_due, 0, self.batch - 1)
            dirty, due = pipe.execute()
            if not dirty and not due:
                return 0
            return self._dispatch_bucket(0, dirty, due, self.config.concurrency, burst)
        if not any(dirty or due for dirty, due, _, _ in self._read_buckets()):
            return 0  # idle: no lock taken
        token = secrets.token_hex(8)
        if not self.q.set(self.keys.turns_dispatch, token, nx=True, px=defaults.TURN_DISPATCH_LOCK_MS):
            return 0  # another scheduler is dispatching: the cap is counted by one at a time
        try:
            return self._claim_in_buckets(self._read_buckets(), burst)  # read again, under the lock
        finally:
            call = store_scripts.project_unlock_call(proj_lock=self.keys.turns_dispatch, token=token)
            self._unlock(keys=call.keys, args=call.args)

    def _read_buckets(self) -> list[list[Any]]:
        """Per bucket: dirty and due conversations (the first :attr:`batch`), queued and running counts."""
        pipe = self.r.pipeline(transaction=False)
        for k in self.bucket_keys:
            pipe.zrange(k.dirty, 0, self.batch - 1)
            pipe.zrange(k.turns_due, 0, self.batch - 1)
            pipe.zcard(k.turns_queued)
            pipe.zcard(k.turns_running)
        res = pipe.execute()
        return [res[i : i + 4] for i in range(0, len(res), 4)]

    def _claim_in_buckets(self, rows: list[list[Any]], burst: bool) -> int:
        inflight = sum(q + r for _, _, q, r in rows)
        claimed = 0
        for b, (dirty, due, queued, running) in enumerate(rows):
            if dirty or due:
                # DISPATCH counts the bucket's own queued and running turns against its cap
                others = inflight - queued - running
                n = self._dispatch_bucket(b, dirty, due, self.config.concurrency - others, burst)
                inflight += n
                claimed += n
        return claimed

    def _dispatch_bucket(self, b: int, dirty: list[bytes], due: list[bytes], cap: int, burst: bool) -> int:
        k = self.bucket_keys[b]
        flags: dict[bytes, str] = {c: "1" for c in dirty}
        for c in due:
            flags.setdefault(c, "0")
        convs = list(flags)
        call = scripts.dispatch_call(
            dirty=k.dirty,
            due=k.turns_due,
            queued=k.turns_queued,
            running=k.turns_running,
            stats=k.turns_stats,
            turns=[k.turn(c.decode("utf-8", "surrogateescape")) for c in convs],
            debounce_ms=self.config.debounce_ms,
            # the day's token budget used up: schedule as usual, claim nothing until the next UTC day
            cap=max(0, cap) if self._budget_open() else 0,
            burst="1" if burst else "0",
            convs=list(flags.items()),
        )
        res = self._dispatch(keys=call.keys, args=call.args)
        for i in range(0, len(res), 2):
            self.enqueue(res[i].decode("utf-8", "surrogateescape"), int(res[i + 1]), b)
        return len(res) // 2

    def _budget_open(self) -> bool:
        held = not self.budget.open()
        if held != self._held:
            if held:
                log.warning("the daily token budget (AGG_LLM_DAILY_TOKENS) is used up: turns wait for the next UTC day")
            else:
                log.info("turns go on: the daily token budget has room again")
            self._held = held
        return not held

    def enqueue(self, conv: str, gen: int, bucket: int = 0) -> None:
        """Put the claimed turn ``(conv, gen)`` of ``bucket`` on the RQ queue (job payload:
        :meth:`job_args` only)."""
        if self.submit is not None:
            self.submit(*self.job_args(conv, gen, bucket))
            return
        assert self.queue is not None
        for _ in range(3):
            try:
                self.queue.enqueue_call(
                    JOB_FUNCTION,
                    args=self.job_args(conv, gen, bucket),
                    job_id=self.bucket_keys[bucket].turn_job_id(conv, gen),
                    unique=True,
                    timeout=defaults.TURN_JOB_TIMEOUT_S,
                    result_ttl=defaults.RQ_RESULT_TTL_S,
                    failure_ttl=defaults.RQ_FAILURE_TTL_S,
                    description=f"turn {conv} gen {gen}",
                )
                return
            except DuplicateJobError:
                # The id is taken (a generation counter that went back, e.g. after Redis lost its
                # last second of writes): take a new generation and try again.
                gen = self._requeue_turn(bucket, conv, gen, 0)
                if not gen:
                    return
        log.error("could not enqueue the turn of %s: job ids keep colliding", conv)

    def _requeue_turn(self, bucket: int, conv: str, gen: int, grace_ms: int) -> int:
        k = self.bucket_keys[bucket]
        call = scripts.requeue_call(
            turn=k.turn(conv), queued=k.turns_queued, stats=k.turns_stats, conv=conv, gen=gen, grace_ms=grace_ms
        )
        return int(self._requeue(keys=call.keys, args=call.args))

    # --- reconcile -----------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Re-queue turns left behind by dead workers or lost jobs; returns how many."""
        secs, micros = self.r.time()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        running = self._scored_until(lambda k: k.turns_running, now_ms)
        redone = sum(self._redo_expired(b, convs) for b, convs in enumerate(running) if convs)
        stuck = self._scored_until(lambda k: k.turns_queued, now_ms - self.config.queued_grace_ms)
        return redone + sum(self._requeue_lost(b, convs) for b, convs in enumerate(stuck) if convs)

    def _scored_until(self, zset: Callable[[Keys], str], until_ms: int) -> list[list[bytes]]:
        """Per bucket (one pipelined read), the first :attr:`batch` members of its ``zset(keys)``
        scored ``until_ms`` or less."""
        pipe = self.r.pipeline(transaction=False)
        for k in self.bucket_keys:
            pipe.zrangebyscore(zset(k), "-inf", until_ms, start=0, num=self.batch)
        return list(pipe.execute())

    def _redo_expired(self, b: int, running: list[bytes]) -> int:
        k = self.bucket_keys[b]
        redone = 0
        for c in running:
            conv = c.decode("utf-8", "surrogateescape")
            redo = scripts.redo_call(
                turn=k.turn(conv),
                lease=k.lease(conv),
                running=k.turns_running,
                queued=k.turns_queued,
                stats=k.turns_stats,
                conv=c,
            )
            gen = int(self._redo(keys=redo.keys, args=redo.args))
            if gen:
                log.warning("turn of %s lost its worker (lease expired): queued again", conv)
                self.enqueue(conv, gen, b)
                redone += 1
        return redone

    def _requeue_lost(self, b: int, stuck: list[bytes]) -> int:
        k = self.bucket_keys[b]
        redone = 0
        convs = [c.decode("utf-8", "surrogateescape") for c in stuck]
        pipe = self.r.pipeline(transaction=False)
        for conv in convs:
            pipe.hget(k.turn(conv), "gen")
        seen = [int(g or 0) for g in pipe.execute()]
        pipe = self.q.pipeline(transaction=False)
        for conv, gen in zip(convs, seen, strict=True):
            pipe.hget(Job.key_for(k.turn_job_id(conv, gen)), "status")
        for conv, gen, status in zip(convs, seen, pipe.execute(), strict=True):
            if status in WAITING_JOB_STATES:
                continue  # waiting in RQ for a free worker: fine
            new = self._requeue_turn(b, conv, gen, self.config.queued_grace_ms)
            if new:
                log.warning("turn of %s was queued but its job is %s: queued again", conv, status or "gone")
                self.enqueue(conv, new, b)
                redone += 1
        return redone

    # --- loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Dispatch and reconcile until ``stop`` is set (the scheduler thread of ``agg worker``)."""
        interval = self.config.dispatch_interval_ms / 1000
        next_reconcile = 0.0
        backoff = Backoff(first=2 * interval, cap=defaults.RETRY_MAX_S)
        while not stop.is_set():
            try:
                full = self.tick() >= self.batch
                if time.monotonic() >= next_reconcile:
                    self.reconcile()
                    next_reconcile = time.monotonic() + self.config.reconcile_interval_ms / 1000
                if backoff.failures:
                    log.info("scheduler: Redis answers again")
                backoff.reset()
            except redis.RedisError as e:
                if backoff.failures == 0:  # one line per outage
                    log.warning("scheduler: Redis error, retrying with backoff: %s", first_line(e))
                backoff.wait(stop)
                continue
            if not full:
                stop.wait(interval)

    def pending(self) -> bool:
        """True while any turn is dirty, queued, running or scheduled and not parked for later."""
        pipe = self.r.pipeline(transaction=False)
        for k in self.bucket_keys:
            for key in (k.dirty, k.turns_queued, k.turns_running):
                pipe.zcard(key)
            pipe.zrange(k.turns_due, 0, self.batch - 1)
        if not self.cluster:
            pipe.time()
            *res, (secs, micros) = pipe.execute()
        else:  # a cluster pipeline refuses TIME (no key to route it by)
            res = pipe.execute()
            secs, micros = self.r.time()
        rows = [res[i : i + 4] for i in range(0, len(res), 4)]
        if any(any(row[:3]) for row in rows):
            return True
        if not any(row[3] for row in rows) or not self._budget_open():
            return False  # nothing scheduled, or it waits for the next UTC day
        now_ms = int(secs) * 1000 + int(micros) // 1000
        pipe = self.r.pipeline(transaction=False)
        for k, row in zip(self.bucket_keys, rows, strict=True):
            for c in row[3]:
                pipe.hget(k.turn(c.decode("utf-8", "surrogateescape")), "park_until")
        return any(int(float(p or 0)) <= now_ms for p in pipe.execute())
