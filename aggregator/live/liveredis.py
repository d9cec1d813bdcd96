"""The Redis connection of a long-running agg process: waits out outages, never gives up.

One-shot commands fail fast with one line when Redis is unreachable (:func:`open_redis`). The
services (``agg watch``, ``agg writer``) instead keep running: :meth:`LiveRedis.connect` retries
with exponential backoff (:class:`~aggregator.backoff.Backoff`, :data:`~aggregator.defaults.RETRY_MIN_S`
doubling up to :data:`~aggregator.defaults.RETRY_MAX_S`), and so does the service loop when
Redis answers PING but refuses writes (``OOM`` at ``maxmemory``, ``MISCONF`` with its AOF disk
full: :func:`aggregator.connection.is_away` classifies them). Each outage is logged once when it
starts and once when it ends, and every failed attempt is reported through ``on_wait`` (the
process's state file says "waiting for Redis" and why).

The client is built with redis-py's own retries off, so that a lost connection reaches the
caller's loop instead of being retried silently, and with the :class:`SeqFloor` connect hook, so
that every new connection first makes sure the restored Redis it may be talking to does not hand
out a seq that was already used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aggregator.backoff import Backoff
from aggregator.config import Settings
from aggregator.connection import check, client_from_url, cluster_client, is_away, mask_url
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import EmbeddedRedisError, RedisUnavailable, first_line
from aggregator.lifecycle import StopFlag
from aggregator.seqfloor import SeqFloor


class LiveRedis:
    """A Redis client that a service keeps (re)connecting until it is stopped."""

    def __init__(
        self,
        settings: Settings,
        stop: StopFlag,
        floor: SeqFloor,
        on_wait: Callable[[str], None] | None = None,
        *,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.floor = floor
        self.on_wait = on_wait
        self.log = log or logging.getLogger("agg.redis")
        self.embedded = None if settings.redis_url else EmbeddedRedis(Path(settings.data_dir))
        self.masked = mask_url(settings.redis_url) if settings.redis_url else "embedded"
        self.client: redis.Redis | None = None
        self.cluster = False
        """Whether Redis is a Redis Cluster (known once connected): the store is in buckets."""
        self.down = False
        self.down_since = 0.0
        self.reason = ""
        self.backoff = Backoff(jitter=0.2)

    def _url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        assert self.embedded is not None
        return self.embedded.url

    def _make_client(self) -> redis.Redis:
        url = self._url()
        if self.embedded is not None:
            self.masked = mask_url(url)
        return client_from_url(url, retry=Retry(NoBackoff(), 0), **self.floor.client_options())

    def _to_cluster(self) -> None:
        """Swap the plain client for a ``RedisCluster`` one. Its connections run the floor's
        :meth:`~aggregator.seqfloor.SeqFloor.node_hook` (a failover counts as a new server); the
        cluster client's own retries follow a slot to its new master after a failover, and what
        they cannot is an outage for the service loop."""
        assert self.client is not None
        self.client.close()
        self.floor.off()
        self.client = cluster_client(self._url(), redis_connect_func=self.floor.node_hook)
        self.cluster = True

    def connect(self) -> bool:
        """Wait (with backoff) until Redis answers a PING; False if stopped meanwhile.

        Without ``--redis-url`` the embedded server is (re)started when it is down. Raises
        :class:`EmbeddedRedisError` only if it cannot be started the very first time (no binary,
        bad data dir): that is a configuration problem, not an outage to wait out.
        """
        while not self.stop:
            try:
                if self.embedded is not None:
                    try:
                        self.embedded.ensure_running()
                    except EmbeddedRedisError as e:
                        if self.client is None:
                            raise
                        raise RedisUnavailable(str(e)) from None
                if self.client is None:
                    self.client = self._make_client()
                if check(self.client, self.masked) and not self.cluster:
                    self._to_cluster()
                return not self.stop
            except Exception as e:
                if not is_away(e):
                    raise
                self.lost(e)
                self.backoff.wait(self.stop)
        return False

    def lost(self, exc: BaseException | None) -> None:
        """Report that Redis is unavailable (logged once per outage; ``on_wait`` every time)."""
        reason = first_line(exc)
        code = getattr(exc, "status_code", None)  # redis-py strips the reply's code (OOM, …) from the text
        if code and not reason.startswith(code) and code not in reason:
            reason = f"{code} {reason}"
        self.reason = reason
        if not self.down:
            self.down = True
            self.down_since = time.monotonic()
            self.log.warning("Redis at %s unavailable (%s); waiting for it", self.masked, reason)
        if self.on_wait:
            self.on_wait(reason)

    def pause(self) -> bool:
        """After :meth:`lost` from the service loop: wait the backoff; True if stopped meanwhile."""
        return self.backoff.wait(self.stop)

    def recovered(self) -> None:
        """Redis did real work again (a commit, a write): end the outage, if there was one."""
        self.backoff.reset()
        if self.down:
            self.down = False
            waited = time.monotonic() - self.down_since
            self.log.info("Redis at %s is back%s", self.masked, f" (after {waited:.0f} s)" if waited >= 1 else "")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
