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

On a Redis Cluster (a ``RedisCluster`` client) the store is buckets, each with its own ``seq``
(:mod:`aggregator.buckets`), and all of the above holds *per bucket*: one pub/sub connection
subscribes to every bucket's channel (``<ns>:{b<n>}:events``, or ``<ns>:{b<n>}:conv:<key>``),
catch-up, gap detection, the quiet-time check and the seq floor run for each bucket on its own,
and each envelope carries ``"bucket": n``. Envelopes of one bucket come in strictly increasing
``seq`` order, each once; buckets interleave. A position is a seq per bucket
(:func:`parse_position`, :meth:`Subscription.position`): ``since=0`` is the beginning of every
bucket, ``since={3: 120, 7: 55}`` (or ``"3:120,7:55"``) starts after seq 120 of bucket 3 and 55 of
bucket 7 and at the beginning of every other bucket.

The scripts publish with plain ``PUBLISH``, which a cluster delivers to every node: the
subscription reads all buckets' channels from any one node (the next one it knows of, after a
node is lost), so no sharded pub/sub is needed.

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
import itertools
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import orjson
import redis
from redis.cluster import RedisCluster

from aggregator import defaults
from aggregator.backoff import Backoff
from aggregator.errors import ConfigError, first_line
from aggregator.keys import Keys
from aggregator.seqfloor import raise_floor
from aggregator.store import Store

log = logging.getLogger("agg.subscribe")

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError)
"""Errors that mean "Redis went away for a while" (``BusyLoadingError`` is a ConnectionError)."""

_DIGITS = re.compile(r"[0-9]+")
"""A bucket or a seq: ASCII digits (``str.isdigit`` takes ``²``, which ``int`` refuses)."""

MAX_SEQ = 2**63 - 1
"""The largest seq a bucket can reach (``seq`` is an INCR counter); a position past it would be
read as a stream ID Redis refuses, after the buckets before it were already printed."""

Position = dict[int, int]
"""Where a subscription on a Redis Cluster stands: bucket → the last seq seen there (a bucket
not in it: nothing seen, from its beginning)."""


class Stoppable(Protocol):
    def is_set(self) -> bool: ...


def parse_position(text: str, buckets: int = defaults.CLUSTER_BUCKETS) -> Position:
    """``"3:120,7:55"`` (bucket:seq, comma-separated) → ``{3: 120, 7: 55}``; ``"0"`` → ``{}``
    (the beginning of every bucket). Raises :class:`ConfigError` (one line) on anything else."""
    text = text.strip()
    if text == "0":
        return {}
    pos: Position = {}
    for part in text.split(","):
        b, sep, s = part.strip().partition(":")
        if not sep or not _DIGITS.fullmatch(b) or not _DIGITS.fullmatch(s):
            raise ConfigError(f"bad position {text!r}: give bucket:seq pairs like 3:120,7:55 (or 0 for all)")
        bucket, seq = int(b), int(s)
        if bucket >= buckets:
            raise ConfigError(f"bad position {text!r}: bucket {bucket} does not exist (0 to {buckets - 1})")
        if bucket in pos:
            raise ConfigError(f"bad position {text!r}: bucket {bucket} is named twice")
        if seq > MAX_SEQ:
            raise ConfigError(f"bad position {text!r}: seq {seq} is too large (a bucket's seq is at most {MAX_SEQ})")
        pos[bucket] = seq
    return pos


def format_position(pos: Mapping[int, int]) -> str:
    """The text :func:`parse_position` reads back: ``"3:120,7:55"`` (buckets at 0 left out; ``"0"``
    if every bucket is)."""
    return ",".join(f"{b}:{s}" for b, s in sorted(pos.items()) if s > 0) or "0"


def with_bucket(raw: bytes, bucket: int) -> bytes:
    """The envelope ``raw`` (a JSON object) with ``"bucket": bucket`` added."""
    env = orjson.loads(raw)
    env["bucket"] = bucket
    return orjson.dumps(env)


class _Stream:
    """What a subscription follows in one bucket (on a single Redis, the one store): its channel
    and the last seq delivered there."""

    def __init__(
        self, client: Any, keys: Keys, bucket: int | None, conversation: str | None, since: int | None
    ) -> None:
        self.client = client
        self.keys = keys
        self.bucket = bucket
        """The bucket's number on a Redis Cluster (added to each envelope), None on a single Redis."""
        self.store = Store(client, keys)
        self.conversation = conversation
        self.channel = keys.conv_channel(conversation) if conversation else keys.events_channel
        self.last: int | None = since
        """The last seq delivered (or skipped as absent from the store)."""
        self.last_cs: int | None = None
        self.seen = 0
        """The highest seq delivered: if the store's seq is ever below it, Redis lost writes."""
        self.repairs = 0
        self.quiet_since = time.monotonic()

    def tag(self, raws: Iterator[bytes]) -> Iterator[bytes]:
        if self.bucket is None:
            yield from raws
        else:
            for raw in raws:
                yield with_bucket(raw, self.bucket)

    def start_live(self) -> None:
        """Live only: start after what is stored now."""
        if self.last is None:
            _, self.last, self.last_cs = self.head()

    def head(self) -> tuple[int, int, int | None]:
        """``(store seq, newest seq of what we follow, its conv_seq)``, read atomically."""
        return self.store.head(self.conversation)

    def _entries(self, after: int, upto: int | None) -> Iterator[Any]:
        if self.conversation is None:
            return self.store.entries_after(after, upto)
        return self.store.conversation_entries(self.conversation, after, upto)

    def catch_up(self, upto: int | None = None) -> Iterator[bytes]:
        """Deliver stored entries after the last delivered seq (up to ``upto``, else to the end)."""
        assert self.last is not None
        if upto is None:
            self.quiet_since = time.monotonic()
            top, head, head_cs = self.head()
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

    def deliver(self, data: bytes) -> Iterator[bytes]:
        self.quiet_since = time.monotonic()
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
            yield from self.catch_up(upto=seq - 1)
        self.last = seq
        self.seen = max(self.seen, seq)
        if self.conversation is not None:
            self.last_cs = int(env["conv_seq"])
        yield data

    def _store_went_back(self, head: int) -> None:
        where = "the store's seq" if self.bucket is None else f"bucket {self.bucket}'s seq"
        log.warning("%s (%d) is behind what was delivered (%d): Redis lost writes", where, head, self.seen)
        try:
            raise_floor(self.client, self.keys, self.seen)
        except redis.ResponseError as e:  # read-only access: committers raise it on their own connect
            log.warning("could not raise the seq floor: %s", first_line(e))


class Subscription:
    """Event envelopes in ``seq`` order, each once: stored ones after ``since``, then live ones.

    ``client`` is a redis-py client (bytes replies; any retry settings), or a ``RedisCluster``
    client for a store on a Redis Cluster (then ``seq`` order and ``since`` are per bucket, and
    each envelope carries ``bucket``: see the module's docstring). ``since``: a seq to start after
    (``0`` = from the first event); on a cluster ``0`` or a position (``{bucket: seq}``, or its
    text ``"3:120,7:55"``); None = only events committed after subscribing. ``conversation``: one
    conversation's key, or None for every event. ``stop``: anything with ``is_set()`` (e.g. a
    ``threading.Event``); iteration ends soon after it is set or :meth:`close` is called. Redis
    outages are waited out with backoff, and what was missed is read from the store.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        keys: Keys | None = None,
        *,
        since: int | Mapping[int, int] | str | None = None,
        conversation: str | None = None,
        stop: Stoppable | None = None,
        check_s: float = defaults.SUBSCRIBE_CHECK_S,
        poll_s: float = 1.0,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.cluster = isinstance(client, RedisCluster)
        self.conversation = conversation
        self.streams = self._streams(since)
        self._by_channel = {s.channel.encode(): s for s in self.streams}
        self.stop = stop
        self.check_s = check_s
        self.poll_s = poll_s
        self._closed = False
        self._reconnected = False
        self._pubsub: Any = None
        self._nodes: Iterator[Any] | None = None
        self.reconnects = 0

    def _streams(self, since: int | Mapping[int, int] | str | None) -> list[_Stream]:
        if not self.cluster:
            if not (since is None or isinstance(since, int)):
                raise ConfigError("a position per bucket is for a store on a Redis Cluster; give a seq")
            return [_Stream(self.client, self.keys, None, self.conversation, since)]
        if isinstance(since, str):
            since = parse_position(since)
        elif isinstance(since, int) and since != 0:
            raise ConfigError(
                f"on a Redis Cluster seq is per bucket: give a position like 3:{since} (bucket:seq), or 0 for all"
            )
        start: dict[int, int | None] = {}
        for b in range(defaults.CLUSTER_BUCKETS):
            start[b] = None if since is None else since.get(b, 0) if isinstance(since, Mapping) else 0
        if isinstance(since, Mapping) and not set(since) <= set(start):
            bad = sorted(set(since) - set(start))
            raise ConfigError(f"no bucket {bad[0]} (0 to {defaults.CLUSTER_BUCKETS - 1})")
        return [_Stream(self.client, self.keys.bucket(b), b, self.conversation, s) for b, s in start.items()]

    # --- public ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Envelopes as dicts: ``seq``, ``conv``, ``conv_seq``, ``id``, ``type``, ``ts``, ``agent``,
        ``revision`` (and ``bucket`` on a Redis Cluster)."""
        for raw in self.raw():
            yield orjson.loads(raw)

    def raw(self) -> Iterator[bytes]:
        """Envelopes as the JSON bytes Redis stored and published (with ``bucket`` added on a
        Redis Cluster)."""
        while not self._stopped():
            try:
                if self._pubsub is None:
                    if not self._connect():
                        break
                    yield from self._catch_up_all()
                msg = self._pubsub.get_message(timeout=self.poll_s)
                if self._reconnected:  # redis-py reconnected under us: what was published meanwhile is lost
                    self._reconnected = False
                    self.reconnects += 1
                    yield from self._catch_up_all()
                if msg is not None and msg.get("type") == "message":
                    channel = msg["channel"]
                    stream = self._by_channel.get(channel if isinstance(channel, bytes) else channel.encode())
                    if stream is not None:
                        yield from stream.tag(stream.deliver(msg["data"]))
                # A bucket quiet for check_s is checked even while others are busy: its last
                # message may be the one that was lost.
                now = time.monotonic()
                for stream in self.streams:
                    if now - stream.quiet_since >= self.check_s:
                        yield from stream.tag(stream.catch_up())
            except CONNECTION_ERRORS as e:
                log.warning("subscription lost (%s); reconnecting", first_line(e))
                self.reconnects += 1
                self._drop()
        self._drop()

    def close(self) -> None:
        """Stop the iteration (from another thread, or from the loop body)."""
        self._closed = True

    @property
    def started(self) -> bool:
        """Whether it knows its place in every bucket (after ``since`` or, live only, once it has
        subscribed): :meth:`position` means something only then."""
        return all(s.last is not None for s in self.streams)

    def position(self) -> str:
        """Where the subscription stands, as ``since`` takes it back (``agg tail --since``): on a
        Redis Cluster ``"3:120,7:55"`` (the last seq delivered or skipped per bucket), on a single
        Redis the last seq."""
        if not self.cluster:
            return str(self.streams[0].last or 0)
        return format_position({s.bucket: s.last or 0 for s in self.streams if s.bucket is not None})

    @property
    def repairs(self) -> int:
        """Times entries were fetched from the store to fill a gap seen on a channel."""
        return sum(s.repairs for s in self.streams)

    # --- internals ---------------------------------------------------------------------------
    def _stopped(self) -> bool:
        return self._closed or (self.stop is not None and self.stop.is_set())

    def _catch_up_all(self) -> Iterator[bytes]:
        for stream in self.streams:
            yield from stream.tag(stream.catch_up())

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

    def _new_pubsub(self) -> Any:
        if not self.cluster:
            return self.client.pubsub()
        # PUBLISH reaches every node of a cluster: any node serves all buckets' channels. Take
        # the next node each time, so that a lost node is not tried again and again.
        cluster: Any = self.client
        if self._nodes is None:
            self._nodes = itertools.cycle(cluster.get_nodes())
        return cluster.pubsub(node=next(self._nodes))

    def _subscribe(self) -> None:
        self._drop()
        ps = self._new_pubsub()
        self._pubsub = ps
        channels = [s.channel for s in self.streams]
        ps.subscribe(*channels)
        deadline = time.monotonic() + defaults.REDIS_CONNECT_TIMEOUT_S
        confirmed = 0
        while confirmed < len(channels):  # the confirmations: from here on, every publish reaches us
            msg = ps.get_message(timeout=1.0)
            if msg is not None and msg.get("type") == "subscribe":
                confirmed += 1
            elif time.monotonic() > deadline:
                raise redis.TimeoutError("no subscribe confirmation from Redis")
        assert ps.connection is not None  # subscribed: the pub/sub connection exists
        ps.connection.register_connect_callback(self._on_reconnect)
        for stream in self.streams:
            stream.start_live()

    def _on_reconnect(self, _conn: Any) -> None:
        self._reconnected = True

    def _drop(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail any way
                self._pubsub.close()
            self._pubsub = None
