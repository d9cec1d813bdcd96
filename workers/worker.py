"""``agg worker``: an RQ worker for turn jobs with the scheduler running inside it.

RQ settings chosen for turns:

* one queue (``<ns>-turns``): with a single queue on Redis ≥ 6.2 RQ dequeues with BLMOVE into an
  intermediate list, so a worker killed between pop and registration loses no job;
* :class:`rq.SimpleWorker` — the job runs in the worker process, no fork per job: a turn is a
  few Redis calls and one HTTP request, and forking would dominate its overhead. A turn that hangs
  is still ended by RQ's job timeout (SIGALRM), and the provider call has its own timeout;
* JSON serializer (job payloads are ``["workers.turns.run_turn", null, [conv, gen], {}]``:
  readable, and nothing secret can be pickled into them; ``[conv, gen, bucket]`` on a Redis
  Cluster store);
* maintenance every minute instead of every ten, short result TTL (the outcome is in the event
  log), worker TTL of a minute so ``agg status`` forgets dead workers quickly;
* the queue's Redis (RQ, the shared limits, the daily budget) is the store's, unless
  ``AGG_QUEUE_URL`` names another; a Redis Cluster store needs one (RQ does not run on a
  cluster), while each turn's state stays in its conversation's bucket, next to the log its
  result is committed to (:mod:`workers.dispatch`);
* warm shutdown: the first SIGTERM / Ctrl-C lets the running turn finish and commit, then exits
  (the scheduler thread stops at once); a second one aborts the turn, handing it back to be
  redone at once by another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.config import Settings
from aggregator.connection import Connection, client_from_url, cluster_client, open_queue, open_redis
from aggregator.errors import first_line
from aggregator.keys import Keys
from aggregator.logs import rq_level, setup_logging
from aggregator.paths import DataPaths
from aggregator.seqfloor import SeqFloor
from workers.config import TurnConfig
from workers.dispatch import Scheduler
from workers.pool import watch_parent
from workers.turns import TurnRunner, install

log = logging.getLogger("agg.turns")


class TurnWorker(SimpleWorker):
    """RQ's SimpleWorker that also stops agg's scheduler thread on a warm shutdown request."""

    agg_stop: threading.Event

    def subscribe(self) -> None:
        """RQ's subscription to its command channel, polled every second instead of every 60 s.

        Race: redis-py ≥ 8.2 waits for the pubsub thread when RQ stops it, and that thread may be
        waiting its whole poll interval for a subscription RQ has just ended: every ``work()``
        ended up to 60 s late — each pass of ``agg worker --burst``, each stop
        (tests/store/test_worker_stop.py::
        test_a_worker_stops_without_waiting_out_its_command_channel).
        """
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ types it as None
            sleep_time=defaults.RQ_PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        self.agg_stop.set()

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()  # type: ignore[no-untyped-call]
        # Race: a SIGTERM that arrived after `agg worker` installed its own handler but before
        # RQ's (RQ registers the worker first) only set agg_stop, which RQ's loop never reads: it
        # would block in dequeue for its 45 s timeout and be killed by whoever sent the SIGTERM.
        # Hand the request over; RQ checks this flag of its own before every dequeue
        # (tests/process/test_workers.py::test_a_stop_requested_before_rq_took_the_signals_is_honoured).
        if self.agg_stop.is_set():
            self._stop_requested = True


@dataclass
class _Clients:
    """The Redis clients of one worker besides its RQ worker's: the runner's and the scheduler's
    (the store's Redis, or cluster), and the scheduler's own client of the queue's Redis."""

    runner: Any
    scheduler: Any
    scheduler_queue: Any
    qconn: Connection
    separate: bool
    """The queue's Redis is not the store's (``AGG_QUEUE_URL``)."""
    floor: SeqFloor | None
    buckets: list[Keys] | None

    @classmethod
    def open(cls, settings: Settings, conn: Connection, *, owned: bool) -> _Clients:
        """The clients for ``conn``'s store; ``owned``: close ``conn`` if the queue's Redis cannot
        be used (a bad ``AGG_QUEUE_URL``, none for a cluster store)."""
        try:
            qconn = open_queue(settings, conn)
        except BaseException:
            if owned:
                conn.close()
            raise
        keys = settings.keys
        if conn.cluster:
            # Each bucket has its own seq: the floor of a single Redis does not apply (aggregator.seqfloor).
            buckets = [keys.bucket(n) for n in range(defaults.CLUSTER_BUCKETS)]
            floor, runner, scheduler = None, cluster_client(conn.url), cluster_client(conn.url)
        else:
            # Turn commits hand out seqs: the connect hook keeps them above any seq already given
            # out, even on a Redis restored from an older copy (aggregator.seqfloor).
            buckets = None
            floor = SeqFloor(keys, DataPaths(settings.data_dir, keys.ns).floor)
            runner = client_from_url(conn.url, **floor.client_options())
            scheduler = client_from_url(conn.url)
        separate = qconn is not conn
        queue = client_from_url(qconn.url) if separate else scheduler
        return cls(runner, scheduler, queue, qconn, separate, floor, buckets)

    @property
    def runner_queue(self) -> Any:
        """The runner's client of the queue's Redis (limits, budget), if not its own."""
        return self.qconn.client if self.separate else None

    def where(self) -> str:
        """What the start-up line says of a cluster store (nothing on a single Redis)."""
        return f" ({len(self.buckets)} buckets, queue at {self.qconn.masked_url})" if self.buckets else ""

    def close(self) -> None:
        if self.floor is not None:
            self.floor.save()
        self.runner.close()
        self.scheduler.close()
        if self.separate:
            self.scheduler_queue.close()
            self.qconn.close()


def run_worker(
    settings: Settings,
    *,
    config: TurnConfig | None = None,
    burst: bool = False,
    name: str | None = None,
    verbose: bool = False,
    connection: Connection | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run one turn worker in this process until stopped (or, with ``burst``, until no turn is
    pending); returns the number of turn jobs it ran.

    ``connection``: an open connection to use (else one is opened from ``settings``, starting the
    embedded Redis if no URL is given). ``stop``: an event that, once set, stops the worker warm
    (e.g. set by a signal handler installed before this was called).
    """
    config = config or TurnConfig.from_env()
    setup_logging(verbose)
    conn = connection or open_redis(settings)
    keys = settings.keys
    rc = _Clients.open(settings, conn, owned=connection is None)
    runner = TurnRunner(rc.runner, keys, config, floor=rc.floor, buckets=rc.buckets, queue_client=rc.runner_queue)
    install(runner)
    queue = Queue(keys.turns_queue, connection=rc.qconn.client, serializer=JSONSerializer)
    scheduler = Scheduler(
        rc.scheduler,
        keys,
        config,
        Queue(queue.name, connection=rc.scheduler_queue, serializer=JSONSerializer),
        buckets=rc.buckets,
        queue_client=rc.scheduler_queue if rc.separate else None,
    )
    stop = stop or threading.Event()

    def make_worker(name: str | None) -> TurnWorker:
        w = TurnWorker(
            [queue],
            connection=rc.qconn.client,
            name=name,
            default_result_ttl=defaults.RQ_RESULT_TTL_S,
            maintenance_interval=defaults.RQ_MAINTENANCE_INTERVAL_S,
            worker_ttl=defaults.RQ_WORKER_TTL_S,
            job_monitoring_interval=defaults.RQ_JOB_MONITORING_INTERVAL_S,
            serializer=JSONSerializer,
        )
        w.agg_stop = stop
        return w

    worker = make_worker(name)
    jobs = 0
    watch_parent(stop)
    log.info(  # agg.turns: shown with -v
        "worker %s: namespace %s%s, provider %s (%s), concurrency %d, debounce %.1f s, cooldown %.1f s",
        worker.name,
        keys.ns,
        rc.where(),
        config.provider,
        runner.provider.model,
        config.concurrency,
        config.debounce_ms / 1000,
        config.cooldown_ms / 1000,
    )
    # One log format (aggregator.logs): RQ uses the root handler; its per-job lines only with -v.
    work: dict[str, Any] = {"logging_level": rq_level(verbose)}
    try:
        if burst:
            while not stop.is_set():
                scheduler.tick(burst=True)
                scheduler.reconcile()
                worked = worker.work(burst=True, **work)
                if stop.is_set() or not scheduler.pending():
                    break
                if not worked:
                    time.sleep(config.dispatch_interval_ms / 1000)
        else:
            thread = threading.Thread(target=scheduler.run, args=(stop,), name="agg-scheduler", daemon=True)
            thread.start()
            try:
                backoff = Backoff(first=1.0, cap=defaults.SUPERVISOR_RESTART_MAX_S)
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        worker.work(**work)
                        error = "RQ stopped working"
                    except redis.RedisError as e:
                        error = f"lost Redis ({first_line(e)})"
                    jobs += worker.successful_job_count + worker.failed_job_count
                    if stop.is_set():
                        break
                    # RQ left its loop on an error (e.g. Redis went away mid-job): start a new
                    # RQ worker, as the scheduler thread keeps retrying (tests/process/test_workers.py
                    # ::test_workers_survive_a_redis_restart). One line per outage, not per attempt.
                    if time.monotonic() - started >= defaults.SUPERVISOR_HEALTHY_S:
                        backoff.reset()
                    if backoff.failures == 0:
                        log.warning("worker %s: %s; starting again with backoff", worker.name, error)
                    if backoff.wait(stop):
                        break
                    worker = make_worker(None)
            finally:
                stop.set()
                thread.join(timeout=10)
    finally:
        install(None)
        rc.close()
        if connection is None:
            conn.close()
    return int(jobs if not burst else worker.successful_job_count + worker.failed_job_count)
