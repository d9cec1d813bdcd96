"""``/api/events``: event envelopes as server-sent events, each once, in ``seq`` order, no gap.

Each stream is one :class:`~aggregator.live.subscribe.Subscription` run on a thread of its own
(redis-py's pub/sub is blocking), handing the envelopes to the event loop. Everything the
subscription guarantees carries over: it starts after ``Last-Event-ID`` (the ``seq`` of the last
event the client got; browsers send it by themselves when they reconnect) or ``?since=``, fills
any gap from the store, and waits out a Redis outage, then reads what it missed
(``tests/process/test_serve.py::test_events_resume_after_redis_is_killed``). Each SSE ``id`` is the
envelope's ``seq``; on a Redis Cluster, the subscription's whole position after it (``3:120,7:55``,
a seq per bucket), which ``Last-Event-ID`` and ``?since=`` take back.

Flow control: at most :data:`~aggregator.defaults.WEB_SSE_QUEUE` envelopes wait for a client;
beyond that the subscription stops reading until the client catches up, and what Redis drops
meanwhile is read back from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import orjson
import redis

from aggregator import defaults
from aggregator.errors import first_line
from aggregator.keys import Keys
from aggregator.live.subscribe import Subscription

log = logging.getLogger("agg.serve")

RETRY_MS = 1000
"""How soon (ms) a browser reconnects after the stream broke (the ``retry:`` field)."""


class _Pump(threading.Thread):
    """Runs a subscription and hands each envelope, with its SSE id, to the event loop's queue."""

    def __init__(
        self, sub: Subscription, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, bytes] | None]
    ) -> None:
        super().__init__(name="agg-sse", daemon=True)
        self.sub = sub
        self.loop = loop
        self.queue = queue
        self.room = threading.BoundedSemaphore(defaults.WEB_SSE_QUEUE)

    @property
    def stopped(self) -> bool:
        return self.sub.stop is not None and self.sub.stop.is_set()

    def run(self) -> None:
        try:
            for raw in self.sub.raw():
                while not self.room.acquire(timeout=0.5):
                    if self.stopped:
                        return
                # On a cluster the id is the whole position (a seq per bucket), read right after
                # the envelope: what the browser sends back as Last-Event-ID resumes every bucket.
                self._hand((self.sub.position() if self.sub.cluster else "", raw))
        except Exception as e:  # the stream ends; the browser reconnects with Last-Event-ID
            log.warning("event stream stopped: %s", first_line(e))
        finally:
            self._hand(None)

    def _hand(self, item: tuple[str, bytes] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


async def envelopes(
    client: redis.Redis, keys: Keys, *, since: int | str | None, conversation: str | None
) -> AsyncIterator[dict[str, object]]:
    """Server-sent events (as sse-starlette dicts) for the envelopes after ``since`` (None: from
    now on; on a Redis Cluster, a position as :func:`~aggregator.live.subscribe.parse_position`
    reads it)."""
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    stop = threading.Event()
    sub = Subscription(client, keys, since=since, conversation=conversation, stop=stop, poll_s=0.5)
    pump = _Pump(sub, asyncio.get_running_loop(), queue)
    pump.start()
    try:
        yield {"retry": RETRY_MS, "comment": "agg events"}
        while True:
            item = await queue.get()
            if item is None:
                return
            pump.room.release()
            position, raw = item
            yield {"id": position or str(orjson.loads(raw)["seq"]), "data": raw.decode()}
    finally:
        stop.set()
