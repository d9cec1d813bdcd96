"""`agg run` and its parts: settings checked before anything starts, a Redis it cannot use, a part
that exits with a usage error, a warm stop that must not hang."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from devtools.agg import wait_until
from devtools.redisproc import RedisProcess
from workers.worker import TurnWorker


def _waiting_for_a_subscription(thread: threading.Thread) -> bool:
    """Whether ``thread`` (a redis-py pub/sub thread) is parked in ``get_message`` waiting for a
    subscription (``subscribed_event.wait``) — where it does not look at its stop flag."""
    frame: Any = sys._current_frames().get(thread.ident or -1)
    inner = None
    while frame is not None:
        if frame.f_code.co_name == "get_message" and inner == "wait":
            return True
        inner, frame = frame.f_code.co_name, frame.f_back
    return False


def test_a_worker_stops_at_once_whatever_its_pubsub_thread_is_doing(redis_server: RedisProcess, r: Any) -> None:
    """RQ's teardown unsubscribes the worker's pub/sub thread, then waits for it to end; with
    redis-py 8 an unsubscribed pub/sub thread waits for a new subscription for its whole sleep time
    (RQ gives it 60 s) before it looks at its stop flag. So a warm stop that lost this race took a
    minute — past `agg run`'s 30 s, which then killed the worker: the flaky
    tests/process/test_run.py::test_run_on_embedded_redis_stops_cleanly. Put the thread in that
    state, then stop it."""
    client = redis.Redis.from_url(redis_server.url)
    w = TurnWorker([Queue("agg-turns", connection=client, serializer=JSONSerializer)], connection=client)
    w.agg_stop = threading.Event()
    w.subscribe()
    thread = w.pubsub_thread
    assert thread is not None
    w.pubsub.unsubscribe()  # what RQ's teardown sends first
    wait_until(lambda: _waiting_for_a_subscription(thread), "the pub/sub thread to wait for a subscription")
    done = threading.Thread(target=w.unsubscribe, daemon=True)
    done.start()
    # A hang detector, not a speed check: fixed, this returns within the thread's 1 s poll; the
    # bug holds it for 60 s.
    done.join(timeout=20)
    assert not done.is_alive(), "the worker's pub/sub thread did not stop"
    assert not thread.is_alive()
    client.close()


STOP_INSIDE_WAIT = """
import os, signal, time
from aggregator.lifecycle import StopFlag

flag = StopFlag().install()
with flag._lock:  # where the main thread is while it waits on the flag
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, on this thread
    time.sleep(0.05)
print("stopped:", flag.reason, flag.wait(0))
"""


def test_a_stop_signal_inside_a_wait_does_not_deadlock() -> None:
    """A SIGTERM handled while the main thread holds the stop flag's lock (inside its wait) sets
    the flag; with a plain lock (``threading.Event``) the handler blocked on it for good."""
    out = subprocess.run([sys.executable, "-c", STOP_INSIDE_WAIT], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "stopped: SIGTERM True", out.stderr[-2000:]
