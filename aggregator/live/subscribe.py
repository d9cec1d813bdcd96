"""Subscribing to events with catch-up: stored events from a point on, then live ones, no gap.

Redis pub/sub is at-most-once: a subscriber that is disconnected (a Redis restart, a network
blip, or Redis dropping a subscriber that reads too slowly) misses what was published meanwhile,
and nothing tells it so. The global log holds every event, so a :class:`Subscription` combines
the two:

1. it subscribes first (``<ns>:events``, or ``<ns>:conv:<key>`` for one conversation) and waits
   for Redis to confirm;
2. only then reads the stored entries after ``since`` from the log (``Store.entries_after``, or
   the conversation's timeline) — whatever is published from now on arrives on the channel, and
   everything before is in the log, so nothing falls between the two;
3. delivers live envelopes, skipping those at or below the last ``seq`` it delivered (the seam's
   duplicates), and fetching from the log any range it sees skipped: a jump in ``seq`` (or, for
   one conversation, in ``conv_seq``), a reconnection, or — after
   :data:`~aggregator.defaults.SUBSCRIBE_CHECK_S` of silence — a store that is ahead of it.

Delivered envelopes are in strictly increasing ``seq`` order, each once. If the store turns out
to be behind what was delivered (Redis restored from an older copy), the subscription raises the
store's ``seq`` floor so that no seq it delivered is handed out again (:mod:`aggregator.seqfloor`).

Example (also ``scripts/subscribe_example.py``)::

    import redis
    from aggregator.keys import Keys
    from aggregator.live.subscribe import Subscription

    client = redis.Redis.from_url("unix:///path/to/redis.sock?password=...")
    for env in Subscription(client, Keys("agg"), since=0):
        print(env["seq"], env["conv"], env["type"])
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

import orjson
import redis

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.errors import first_line
from aggregator.keys import Keys
from aggregator.seqfloor import raise_floor
from aggregator.store import Store

log = logging.getLogger("agg.subscribe")

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
"""Errors that mean "Redis went away for a while" (``BusyLoadingError`` is a ConnectionError)."""


class Stoppable(Protocol):
    def is_set(self) -> bool: ...


class Subscription:
    """Event envelopes in ``seq`` order, each once: stored ones after ``since``, then live ones.

    ``client`` is a redis-py client (bytes replies; any retry settings). ``since``: a seq to start
    after (``0`` = from the first event); None = only events committed after subscribing.
    ``conversation``: one conversation's key, or None for every event. ``stop``: anything with
    ``is_set()`` (e.g. a ``threading.Event``); iteration ends soon after it is set or
    :meth:`close` is called. Redis outages are waited out with backoff, and what was missed is
    read from the store.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        *,
        since: int | None = None,
        conversation: str | None = None,
        stop: Stoppable | None = None,
        check_s: float = defaults.SUBSCRIBE_CHECK_S,
        poll_s: float = 1.0,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.store = Store(client, self.keys)
        self.conversation = conversation
        self.channel = self.keys.conv_channel(conversation) if conversation else self.keys.events_channel
        self.last: int | None = since
        """The last seq delivered (or skipped as absent from the store)."""
        self.last_cs: int | None = None
        self.seen = 0
        """The highest seq delivered: if the store's seq is ever below it, Redis lost writes."""
        self.stop = stop
        self.check_s = check_s
        self.poll_s = poll_s
        self._closed = False
        self._reconnected = False
        self._pubsub: Any = None
        self.reconnects = 0
        self.repairs = 0
        """Times entries were fetched from the store to fill a gap seen on the channel."""

    # --- public ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Envelopes as dicts: ``seq``, ``conv``, ``conv_seq``, ``id``, ``type``, ``ts``, ``agent``, ``revision``."""
        for raw in self.raw():
            yield orjson.loads(raw)

    def raw(self) -> Iterator[bytes]:
        """Envelopes as the JSON bytes Redis stored and published."""
        quiet_since = time.monotonic()
        while not self._stopped():
            try:
                if self._pubsub is None:
                    if not self._connect():
                        break
                    yield from self._catch_up()
                    quiet_since = time.monotonic()
                msg = self._pubsub.get_message(timeout=self.poll_s)
                if self._reconnected:  # redis-py reconnected under us: what was published meanwhile is lost
                    self._reconnected = False
                    self.reconnects += 1
                    yield from self._catch_up()
                if msg is None or msg.get("type") != "message":
                    if time.monotonic() - quiet_since >= self.check_s:
                        quiet_since = time.monotonic()
                        yield from self._catch_up()
                    continue
                quiet_since = time.monotonic()
                yield from self._deliver(msg["data"])
            except CONNECTION_ERRORS as e:
                log.warning("subscription lost (%s); reconnecting", first_line(e))
                self.reconnects += 1
                self._drop()
        self._drop()

    def close(self) -> None:
        """Stop the iteration (from another thread, or from the loop body)."""
        self._closed = True

    # --- internals ---------------------------------------------------------------------------
    def _stopped(self) -> bool:
        return self._closed or (self.stop is not None and self.stop.is_set())

    def _connect(self) -> bool:
        """Subscribe, waiting out a Redis that is away (with backoff); False if stopped meanwhile."""
        backoff = Backoff()
        while not self._stopped():
            try:
                self._subscribe()
                return True
            except CONNECTION_ERRORS:
                backoff.fail()
                end = time.monotonic() + backoff.delay()
                while not self._stopped() and time.monotonic() < end:
                    time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return False

    def _subscribe(self) -> None:
        self._drop()
        ps = self.client.pubsub()
        self._pubsub = ps
        ps.subscribe(self.channel)
        deadline = time.monotonic() + defaults.REDIS_CONNECT_TIMEOUT_S
        while True:  # the confirmation: from here on, every publish reaches us
            msg = ps.get_message(timeout=1.0)
            if msg is not None and msg.get("type") == "subscribe":
                break
            if time.monotonic() > deadline:
                raise redis.TimeoutError("no subscribe confirmation from Redis")
        assert ps.connection is not None  # subscribed: the pub/sub connection exists
        ps.connection.register_connect_callback(self._on_reconnect)
        if self.last is None:  # live only: start after what is stored now
            _, self.last, self.last_cs = self._head()

    def _on_reconnect(self, _conn: Any) -> None:
        self._reconnected = True

    def _drop(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail any way
                self._pubsub.close()
            self._pubsub = None

    def _head(self) -> tuple[int, int, int | None]:
        """``(global seq, newest seq of what we follow, its conv_seq)``, read atomically."""
        return self.store.head(self.conversation)

    def _entries(self, after: int, upto: int | None) -> Iterator[Any]:
        if self.conversation is None:
            return self.store.entries_after(after, upto)
        return self.store.conversation_entries(self.conversation, after, upto)

    def _catch_up(self, upto: int | None = None) -> Iterator[bytes]:
        """Deliver stored entries after the last delivered seq (up to ``upto``, else to the end)."""
        assert self.last is not None
        if upto is None:
            top, head, head_cs = self._head()
            if top < self.seen:
                self._store_went_back(top)
                return
        else:
            head, head_cs = upto, None
        for entry in self._entries(self.last, upto):
            self.last = entry.seq
            self.seen = max(self.seen, entry.seq)
            if self.conversation is not None:
                self.last_cs = int(orjson.loads(entry.envelope)["conv_seq"])
            yield entry.envelope
        # Every seq up to `head` was assigned before we read the log, and a seq is stored in the
        # same atomic step that assigns it: one we did not find is not in the store and never
        # will be (lost with a Redis that went back). Skip past it.
        if head > self.last:
            self.last = head
            if head_cs is not None:
                self.last_cs = head_cs

    def _deliver(self, data: bytes) -> Iterator[bytes]:
        env = orjson.loads(data)
        seq = int(env["seq"])
        assert self.last is not None
        if seq <= self.last:
            return  # already delivered (read from the store at the seam or in a repair)
        if self.conversation is None:
            gap = seq > self.last + 1
        else:
            cs = int(env["conv_seq"])
            gap = self.last_cs is not None and cs > self.last_cs + 1
        if gap:
            self.repairs += 1
            yield from self._catch_up(upto=seq - 1)
        self.last = seq
        self.seen = max(self.seen, seq)
        if self.conversation is not None:
            self.last_cs = int(env["conv_seq"])
        yield data

    def _store_went_back(self, head: int) -> None:
        log.warning("the store's seq (%d) is behind what was delivered (%d): Redis lost writes", head, self.seen)
        try:
            raise_floor(self.client, self.keys, self.seen)
        except redis.ResponseError as e:  # read-only access: committers raise it on their own connect
            log.warning("could not raise the seq floor: %s", first_line(e))
