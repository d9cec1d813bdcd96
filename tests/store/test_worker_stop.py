"""The RQ worker under `agg worker` stops at once, against a real redis-server."""

from __future__ import annotations

import sys
import threading
from typing import Any

import redis
from rq import Queue

from devtools.agg import wait_until
from workers.worker import TurnWorker


def waiting_for_a_subscription(thread: threading.Thread) -> bool:
    """True while ``thread`` (redis-py's pubsub thread) waits for a subscription to begin."""
    frame: Any = sys._current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names[:3] == ["wait", "wait", "get_message"]


def test_a_worker_stops_without_waiting_out_its_command_channel(r: redis.Redis) -> None:
    """RQ ends its command-channel subscription at the end of every ``work()``; redis-py (≥ 8.2)
    then waits for the channel's thread, which may be sleeping through its poll interval for a
    new subscription (RQ's own: 60 s) — every `agg worker --burst` pass and every stop was up to a
    minute late. Here the thread is put in exactly that state, then RQ's unsubscribe runs."""
    worker = TurnWorker([Queue("stop-test", connection=r)], connection=r)
    worker.subscribe()
    worker.pubsub.unsubscribe()
    wait_until(lambda: waiting_for_a_subscription(worker.pubsub_thread), what="the channel thread to wait")
    done = threading.Event()
    threading.Thread(target=lambda: (worker.unsubscribe(), done.set()), daemon=True).start()
    assert done.wait(timeout=15), "RQ's unsubscribe waited out the channel thread's poll interval"
