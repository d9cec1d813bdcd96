"""The Redis connection of a long-running agg process: waits out outages, never gives up.

One-shot commands fail fast with one line when Redis is unreachable (:func:`open_redis`). The
services (``agg watch``, ``agg writer``) instead keep running: :meth:`LiveRedis.connect` retries
with exponential backoff (tenacity; :data:`~aggregator.defaults.RETRY_MIN_S` doubling up to
:data:`~aggregator.defaults.RETRY_MAX_S`), logs each outage once and reports every failed attempt
through ``on_wait`` (the process's state file says "waiting for Redis"), and returns when Redis
answers or the process is asked to stop.

The client is built with redis-py's own retries off, so that a lost connection reaches the
caller's loop instead of being retried silently, and with the :class:`SeqFloor` connect hook, so
that every new connection first makes sure the restored Redis it may be talking to does not hand
out a seq that was already used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from aggregator import defaults
from aggregator.config import Settings
from aggregator.connection import AWAY_TYPES, check, client_from_url, mask_url
from aggregator.embedded import EmbeddedRedis
from aggregator.errors import EmbeddedRedisError, RedisUnavailable, first_line
from aggregator.lifecycle import StopFlag
from aggregator.seqfloor import SeqFloor

log = logging.getLogger("agg.redis")

REDIS_ERRORS: tuple[type[BaseException], ...] = AWAY_TYPES
"""Errors that mean "Redis is away or cannot take writes right now": wait and retry
(:func:`aggregator.connection.is_away` also counts error replies such as OOM and MISCONF)."""


class LiveRedis:
    """A Redis client that a service keeps (re)connecting until it is stopped."""

    def __init__(
        self,
        settings: Settings,
        stop: StopFlag,
        floor: SeqFloor,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.floor = floor
        self.on_wait = on_wait
        self.embedded = None if settings.redis_url else EmbeddedRedis(Path(settings.data_dir))
        self.masked = mask_url(settings.redis_url) if settings.redis_url else "embedded"
        self.client: redis.Redis | None = None
        self.down = False

    def _make_client(self) -> redis.Redis:
        if self.settings.redis_url:
            url = self.settings.redis_url
        else:
            assert self.embedded is not None
            url = self.embedded.url
        if self.embedded is not None:
            self.masked = mask_url(url)
        return client_from_url(url, retry=Retry(NoBackoff(), 0), **self.floor.client_options())

    def connect(self) -> bool:
        """Wait (with backoff) until Redis answers a PING; False if stopped meanwhile.

        Without ``--redis-url`` the embedded server is (re)started when it is down. Raises
        :class:`EmbeddedRedisError` only if it cannot be started the very first time (no binary,
        bad data dir): that is a configuration problem, not an outage to wait out.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(REDIS_ERRORS),
            wait=wait_exponential(multiplier=defaults.RETRY_MIN_S, max=defaults.RETRY_MAX_S),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if self.stop:
                    return False
                if self.embedded is not None:
                    try:
                        self.embedded.ensure_running()
                    except EmbeddedRedisError as e:
                        if self.client is None:
                            raise
                        raise RedisUnavailable(str(e)) from None
                if self.client is None:
                    self.client = self._make_client()
                check(self.client, self.masked)
        self.down = False
        return not self.stop

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _before_sleep(self, rs: RetryCallState) -> None:
        self.lost(rs.outcome.exception() if rs.outcome else None)

    def lost(self, exc: BaseException | None) -> None:
        """Report that Redis is unavailable (logged once per outage; ``on_wait`` every time)."""
        reason = first_line(exc)
        if not self.down:
            self.down = True
            log.warning("Redis at %s unavailable (%s); retrying with backoff", self.masked, reason)
        if self.on_wait:
            self.on_wait(reason)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
