"""Turn figures for ``agg status``: states from agg's own indexes, jobs and workers from RQ."""

from __future__ import annotations

import time
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


def turn_figures(client: redis.Redis, keys: Keys, queue: str) -> dict[str, Any]:
    """``turns`` and ``workers`` of ``agg status --json``.

    ``turns``: ``queued``, ``running``, ``parked`` (conversations whose last turn failed and that
    wait for, or run, a retry), ``failed`` (turn attempts that failed, in total), ``scheduled``
    (waiting for their debounce, cooldown or retry time), ``dirty`` (changed, not yet scheduled),
    the counters (``committed``, ``calls``, …), ``parked_conversations`` (the first few, with
    their error), ``budget`` (today's calls and tokens against the daily cap, ``exhausted`` and
    ``resumes_at``; None before the first paid request) and ``rq`` (the queue as RQ sees it).
    """
    r: Any = client
    pipe = r.pipeline(transaction=False)
    for key in (keys.turns_queued, keys.turns_running, keys.turns_parked, keys.turns_due, keys.dirty):
        pipe.zcard(key)
    pipe.hgetall(keys.turns_stats)
    pipe.zrange(keys.turns_parked, 0, PARKED_SHOWN - 1, withscores=True)
    queued, running, parked, due, dirty, raw, parked_rows = pipe.execute()
    counters = {name: 0 for name in COUNTERS}
    counters.update({k.decode(): int(v) for k, v in raw.items()})
    pipe = r.pipeline(transaction=False)
    convs = [c.decode() for c, _ in parked_rows]
    for conv in convs:
        pipe.hmget(keys.turn(conv), "error", "fails", "error_at")
    details = []
    for conv, (_, retry_ms), (error, fails, error_at) in zip(convs, parked_rows, pipe.execute(), strict=True):
        details.append(
            {
                "conv": conv,
                "error": (error or b"").decode(),
                "fails": int(fails or 0),
                "failed_at_ms": int(float(error_at or 0)),
                "retry_at_ms": int(retry_ms),
            }
        )
    budget = budget_state(client, keys)
    queued_jobs, started_jobs, failed_jobs, workers = rq_counts(client, queue)
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
