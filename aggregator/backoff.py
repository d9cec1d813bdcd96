"""One backoff policy for every loop that waits for something to come back.

Used by the loops that wait for Redis (:class:`aggregator.live.liveredis.LiveRedis`,
:class:`aggregator.live.subscribe.Subscription`, the turn scheduler and the RQ loop of
``agg worker``), by the restarts of supervised child processes (:mod:`aggregator.children`) and
by the restarts of the watcher's file notifications: the first wait is short, each failure
doubles it up to a cap, and a success resets it.
"""

from __future__ import annotations

import random
from typing import Protocol

from aggregator import defaults


class Waitable(Protocol):
    """Anything that can sleep and be woken early: a ``threading.Event`` or a ``StopFlag``."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Backoff:
    """Exponential backoff: ``first`` seconds, doubling per failure up to ``cap``.

    ``jitter`` (a fraction) spreads the waits of processes that all lost Redis at the same
    instant, so they do not all come back in the same millisecond.
    """

    def __init__(
        self, first: float = defaults.RETRY_MIN_S, cap: float = defaults.RETRY_MAX_S, *, jitter: float = 0.0
    ) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        """Failures since the last :meth:`reset`."""

    def delay(self) -> float:
        """The wait after the current number of failures (0 failures: none)."""
        if self.failures == 0:
            return 0.0
        base = min(self.cap, self.first * 2.0 ** (self.failures - 1))
        return base * (1 - self.jitter * random.random()) if self.jitter else base

    def fail(self) -> float:
        """Count one failure; returns how long to wait before the next attempt."""
        self.failures += 1
        return self.delay()

    def wait(self, stop: Waitable) -> bool:
        """Count one failure and wait for it on ``stop``; returns True if ``stop`` was set meanwhile."""
        return stop.wait(self.fail())

    def reset(self) -> None:
        """The thing came back: the next failure waits ``first`` again."""
        self.failures = 0
