"""Rate limits shared by every worker on every machine: one Lua call per provider request.

Requests per minute and tokens per minute are each a GCRA (:data:`workers.scripts.LIMIT`): in
any interval of ``t`` seconds at most ``burst + t × limit / 60`` go through. Requests default to
a burst of 1 — evenly spaced, so no 60-second window ever holds more than the limit. Tokens are
charged before the call at an estimate (prompt characters / 4 + the answer budget) and corrected
to the provider's count after it. A 429 with ``Retry-After`` pauses every worker for that long.
The cap on concurrent turns and the per-conversation cooldown are enforced by the scheduler
(:mod:`workers.dispatch`), not here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from aggregator.keys import Keys
from workers import scripts
from workers.config import TurnConfig


@dataclass
class Limiter:
    """The shared limits of the configured provider."""

    client: redis.Redis
    keys: Keys
    config: TurnConfig
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._script = self.client.register_script(scripts.LIMIT)
        p = self.config.provider
        self._keys = [self.keys.limit(p, "req"), self.keys.limit(p, "tok"), self.keys.limit(p, "pause")]
        c = self.config
        self._req_ms = 60_000.0 / c.rpm if c.rpm > 0 else 0.0
        self._tok_ms = 60_000.0 / c.tpm if c.tpm > 0 else 0.0

    @property
    def active(self) -> bool:
        return bool(self._req_ms or self._tok_ms)

    def _call(self, mode: str, amount: float) -> tuple[bool, int]:
        req, tok, pause = self._keys
        call = scripts.limit_call(
            req=req,
            tok=tok,
            pause=pause,
            mode=mode,
            req_ms=self._req_ms,
            req_burst=self.config.rpm_burst,
            tok_ms=self._tok_ms,
            tok_burst=self.config.token_burst,
            amount=amount,
        )
        res: Any = self._script(keys=call.keys, args=call.args)
        return bool(int(res[0])), int(res[1])

    def try_take(self, tokens: int) -> int:
        """Take one request and ``tokens`` if both limits allow; returns 0, else ms to wait."""
        if not self.active:
            return 0
        ok, wait = self._call("take", tokens)
        return 0 if ok else max(1, wait)

    def take(self, tokens: int, *, deadline: float) -> bool:
        """Wait until one request and ``tokens`` may go; False if ``deadline`` (monotonic) passed."""
        while True:
            wait_ms = self.try_take(tokens)
            if wait_ms == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sleep(min(wait_ms / 1000, left))

    def adjust(self, delta_tokens: int) -> None:
        """Correct the tokens charged for a request by ``delta_tokens`` (may be negative)."""
        if self._tok_ms and delta_tokens:
            self._call("adjust", delta_tokens)

    def pause(self, seconds: float) -> None:
        """Hold every worker's requests to this provider for ``seconds`` (after a 429)."""
        if seconds > 0:
            self._call("pause", seconds * 1000)
