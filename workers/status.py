"""Turn figures for ``agg status``: states from agg's own indexes, jobs and workers from RQ."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aggregator.keys import Keys, RQKeys
from aggregator.quickredis import require_full
from workers.budget import budget_state

if TYPE_CHECKING:  # `agg status` may run on the quick client (aggregator.quickredis)
    import redis

PARKED_SHOWN = 10
"""Parked conversations listed (with their errors) in ``agg status``."""

COUNTERS = (
    "dispatched",
    "committed",
    "skipped",
    "skipped_old",
    "failed",
    "aborted",
    "stale",
    "stale_jobs",
    "abandoned",
    "requeued",
    "followups",
    "absorbed",
    "marks",
    "calls",
    "input_tokens",
    "output_tokens",
)


def turn_figures(
    client: redis.Redis,
    keys: Keys,
    queue: str,
    *,
    buckets: Sequence[Keys] | None = None,
    queue_client: redis.Redis | None = None,
) -> dict[str, Any]:
    """``turns`` and ``workers`` of ``agg status --json``.

    ``turns``: ``queued``, ``running``, ``parked`` (conversations whose last turn failed and that
    wait for, or run, a retry), ``failed`` (turn attempts that failed, in total), ``scheduled``
    (waiting for their debounce, cooldown or retry time), ``dirty`` (changed, not yet scheduled),
    the counters (``committed``, ``calls``, …), ``parked_conversations`` (the first few, with
    their error), ``budget`` (today's calls and tokens against the daily cap, ``exhausted`` and
    ``resumes_at``; None before the first paid request) and ``rq`` (the queue as RQ sees it).

    On a Redis Cluster store pass ``buckets`` (each bucket's keys: ``[s.keys for s in
    app.buckets()]``): the figures are summed over them, the parked conversations are the ones
    retried first in any bucket. ``queue_client``: the queue's Redis (``AGG_QUEUE_URL``: RQ's
    keys and the budget), if not ``client``'s; ``keys`` names the budget and ``queue`` there.
    """
    r: Any = client
    bucket_keys = list(buckets) if buckets is not None else [keys]
    pipe = r.pipeline(transaction=False)
    for k in bucket_keys:
        for key in (k.turns_queued, k.turns_running, k.turns_parked, k.turns_due, k.dirty):
            pipe.zcard(key)
        pipe.hgetall(k.turns_stats)
        pipe.zrange(k.turns_parked, 0, PARKED_SHOWN - 1, withscores=True)
    res = pipe.execute()
    sums = [0, 0, 0, 0, 0]
    counters = {name: 0 for name in COUNTERS}
    rows: list[tuple[float, int, str]] = []
    for b in range(len(bucket_keys)):
        *cards, raw, parked_rows = res[7 * b : 7 * b + 7]
        sums = [a + c for a, c in zip(sums, cards, strict=True)]
        for name, v in raw.items():
            counters[name.decode()] = counters.get(name.decode(), 0) + int(v)
        rows += [(retry_ms, b, c.decode()) for c, retry_ms in parked_rows]
    queued, running, parked, due, dirty = sums
    rows = sorted(rows, key=lambda row: (row[0], row[1]))[:PARKED_SHOWN] if len(bucket_keys) > 1 else rows
    pipe = r.pipeline(transaction=False)
    for _, b, conv in rows:
        pipe.hmget(bucket_keys[b].turn(conv), "error", "fails", "error_at")
    details = []
    for (retry_ms, _, conv), (error, fails, error_at) in zip(rows, pipe.execute(), strict=True):
        details.append(
            {
                "conv": conv,
                "error": (error or b"").decode(),
                "fails": int(fails or 0),
                "failed_at_ms": int(float(error_at or 0)),
                "retry_at_ms": int(retry_ms),
            }
        )
    q = queue_client if queue_client is not None else client
    budget = budget_state(q, keys)
    queued_jobs, started_jobs, failed_jobs, workers = rq_counts(q, queue)
    return {
        "turns": {
            "queued": queued,
            "running": running,
            "parked": parked,
            "failed": counters["failed"],
            "scheduled": due,
            "dirty": dirty,
            **{k: v for k, v in counters.items() if k != "failed"},
            "parked_conversations": details,
            "budget": budget.figures() if budget else None,
            "rq": {"queued": queued_jobs, "started": started_jobs, "failed": failed_jobs},
        },
        "workers": workers,
    }


def rq_counts(client: redis.Redis, queue: str) -> tuple[int, int, int, int]:
    """RQ's counts of ``queue``: jobs queued, started and failed, and its workers — what
    ``Queue.count``, ``StartedJobRegistry.count``, ``FailedJobRegistry.count`` and
    ``Worker.count`` answer, read from RQ's keys (:class:`~aggregator.keys.RQKeys`) without
    importing RQ. Those counts clean up first (a started job past its deadline: its worker died;
    a failed job past its TTL): when there is anything to clean, RQ itself counts, as before —
    on the quick client that means redis-py (``tests/process/test_quick_cli.py::test_rq_cleaning_up_is_left_to_rq``)."""
    rk = RQKeys(queue)
    now = int(time.time())  # RQ's current_timestamp(): whole seconds
    r: Any = client
    pipe = r.pipeline(transaction=False)
    pipe.llen(rk.queue)
    pipe.zcount(rk.started, 0, now)
    pipe.zcard(rk.started)
    pipe.zcount(rk.failed, 0, now)
    pipe.zcard(rk.failed)
    pipe.scard(rk.workers)
    queued, started_due, started, failed_due, failed, workers = pipe.execute()
    if not started_due and not failed_due:
        return queued, started, failed, workers
    require_full(client, "RQ cleans its registries up")
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    q = Queue(queue, connection=client)
    return q.count, StartedJobRegistry(queue=q).count, FailedJobRegistry(queue=q).count, Worker.count(queue=q)


def budget_line(budget: dict[str, Any]) -> str:
    """``agg status``'s line about the daily budget (``turns.budget``): today's calls and tokens
    against the cap, and when turns resume if it is used up."""
    cap = f"{budget['cap']:,}" if budget["cap"] else "no cap"
    line = f"today {budget['calls']:,} calls, {budget['tokens']:,} tokens of {cap}"
    return f"{line}: used up, turns resume at {budget['resumes_at']}" if budget["exhausted"] else line
