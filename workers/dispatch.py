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

The reconciler (every second, also in each worker) repairs what a crash leaves behind, far
sooner than RQ's own abandoned-job detection (up to 10 minutes by default): a running turn whose
lease expired is queued again under a new generation (``tests/process/test_workers.py::
test_kill9_mid_turn_redoes_the_turn_once``); a queued turn whose job is not waiting in RQ after a
grace period (lost between claim and enqueue, or its worker died before taking the lease) is
enqueued again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import Job

from aggregator import defaults
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
    submit: Callable[[str, int], None] | None = None
    """Where claimed turns go instead of the RQ queue (in-process runs: tests, benchmarks)."""

    def __post_init__(self) -> None:
        self.r: Any = self.client
        self.budget = DailyBudget(self.client, self.keys, self.config)
        self._held = False
        self._dispatch = self.client.register_script(scripts.DISPATCH)
        self._redo = self.client.register_script(scripts.REDO)
        self._requeue = self.client.register_script(scripts.REQUEUE)

    # --- dispatch ------------------------------------------------------------------------------
    def tick(self, *, burst: bool = False) -> int:
        """One dispatch step; returns how many turns it claimed (and enqueued)."""
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(k.dirty, 0, self.batch - 1)
        pipe.zrange(k.turns_due, 0, self.batch - 1)
        dirty, due = pipe.execute()
        if not dirty and not due:
            return 0
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
            cap=self.config.concurrency if self._budget_open() else 0,
            burst="1" if burst else "0",
            convs=list(flags.items()),
        )
        res = self._dispatch(keys=call.keys, args=call.args)
        for i in range(0, len(res), 2):
            self.enqueue(res[i].decode("utf-8", "surrogateescape"), int(res[i + 1]))
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

    def enqueue(self, conv: str, gen: int) -> None:
        """Put the claimed turn ``(conv, gen)`` on the RQ queue (job payload: those two only)."""
        if self.submit is not None:
            self.submit(conv, gen)
            return
        assert self.queue is not None
        for _ in range(3):
            try:
                self.queue.enqueue_call(
                    JOB_FUNCTION,
                    args=(conv, gen),
                    job_id=self.keys.turn_job_id(conv, gen),
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
                gen = self._requeue_turn(conv, gen, 0)
                if not gen:
                    return
        log.error("could not enqueue the turn of %s: job ids keep colliding", conv)

    def _requeue_turn(self, conv: str, gen: int, grace_ms: int) -> int:
        k = self.keys
        call = scripts.requeue_call(
            turn=k.turn(conv), queued=k.turns_queued, stats=k.turns_stats, conv=conv, gen=gen, grace_ms=grace_ms
        )
        return int(self._requeue(keys=call.keys, args=call.args))

    # --- reconcile -----------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Re-queue turns left behind by dead workers or lost jobs; returns how many."""
        k = self.keys
        secs, micros = self.r.time()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        redone = 0
        for c in self.r.zrangebyscore(k.turns_running, "-inf", now_ms, start=0, num=self.batch):
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
                self.enqueue(conv, gen)
                redone += 1
        stuck = self.r.zrangebyscore(
            k.turns_queued, "-inf", now_ms - self.config.queued_grace_ms, start=0, num=self.batch
        )
        if stuck:
            convs = [c.decode("utf-8", "surrogateescape") for c in stuck]
            pipe = self.r.pipeline(transaction=False)
            for conv in convs:
                pipe.hget(k.turn(conv), "gen")
            seen = [int(g or 0) for g in pipe.execute()]
            pipe = self.r.pipeline(transaction=False)
            for conv, gen in zip(convs, seen, strict=True):
                pipe.hget(Job.key_for(k.turn_job_id(conv, gen)), "status")
            for conv, gen, status in zip(convs, seen, pipe.execute(), strict=True):
                if status in WAITING_JOB_STATES:
                    continue  # waiting in RQ for a free worker: fine
                new = self._requeue_turn(conv, gen, self.config.queued_grace_ms)
                if new:
                    log.warning("turn of %s was queued but its job is %s: queued again", conv, status or "gone")
                    self.enqueue(conv, new)
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
        k = self.keys
        pipe = self.r.pipeline(transaction=False)
        for key in (k.dirty, k.turns_queued, k.turns_running):
            pipe.zcard(key)
        pipe.zrange(k.turns_due, 0, self.batch - 1)
        pipe.time()
        *cards, due, (secs, micros) = pipe.execute()
        if any(cards):
            return True
        if not due or not self._budget_open():
            return False  # nothing scheduled, or it waits for the next UTC day
        now_ms = int(secs) * 1000 + int(micros) // 1000
        pipe = self.r.pipeline(transaction=False)
        for c in due:
            pipe.hget(k.turn(c.decode("utf-8", "surrogateescape")), "park_until")
        return any(int(float(p or 0)) <= now_ms for p in pipe.execute())
