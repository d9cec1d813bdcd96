"""The daily token budget of paid turns (``AGG_LLM_DAILY_TOKENS``), shared by every worker.

Per-minute limits (:mod:`workers.limits`) pace a summariser, but let it spend all day: this caps
what one UTC day's requests use, all workers and network providers of a namespace together. Each
request is counted before it is sent, at the same estimate the token limit charges (prompt
characters / 4 + the answer budget), and corrected to the provider's count afterwards, so the
day's tokens stay within the cap as far as the estimate is an upper bound. A request that does not
fit is not sent: its turn is handed back (:class:`~aggregator.errors.LimitTimeout`, not a failure)
and no turn is dispatched (:meth:`workers.dispatch.Scheduler.tick`) until the day — Redis
``TIME``'s UTC day — changes. The offline provider is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aggregator.keys import Keys
from aggregator.text import iso_ms
from workers import scripts

if TYPE_CHECKING:  # `agg status` may run on the quick client (aggregator.quickredis)
    import redis

    from workers.config import TurnConfig

DAY_MS = 86_400_000


@dataclass(frozen=True)
class BudgetState:
    """Today's use of the budget (UTC, Redis' clock)."""

    ok: bool
    """For a take: the request was counted. Otherwise: a request could still fit today."""
    day: int
    """UTC days since the epoch."""
    calls: int
    tokens: int
    cap: int
    """Tokens per day (0: no cap)."""

    @property
    def resumes_at(self) -> str | None:
        """When turns go on (the next UTC day), if today's budget is used up."""
        return None if self.ok else iso_ms((self.day + 1) * DAY_MS)

    def figures(self) -> dict[str, Any]:
        """``turns.budget`` of ``agg status --json``."""
        return {
            "day": datetime.fromtimestamp(self.day * DAY_MS / 1000, UTC).date().isoformat(),
            "calls": self.calls,
            "tokens": self.tokens,
            "cap": self.cap,
            "exhausted": not self.ok,
            "resumes_at": self.resumes_at,
        }


@dataclass
class DailyBudget:
    """The budget as one configuration of workers sees it."""

    client: redis.Redis
    keys: Keys
    config: TurnConfig

    def __post_init__(self) -> None:
        self._script = self.client.register_script(scripts.BUDGET)

    @property
    def counted(self) -> bool:
        """Whether requests are counted (network providers)."""
        return self.config.provider != "offline"

    def _call(self, mode: str, cap: int, tokens: int = 0, day: int = 0) -> BudgetState:
        call = scripts.budget_call(budget=self.keys.llm_budget, mode=mode, cap=cap, tokens=tokens, day=day)
        res: Any = self._script(keys=call.keys, args=call.args)
        ok, day, calls, used, cap = (int(x) for x in res)
        return BudgetState(bool(ok), day, calls, used, cap)

    def take(self, tokens: int) -> BudgetState | None:
        """Count one request of ``tokens`` (estimated) if it fits today; its state (``ok`` False:
        refused), or None if requests are not counted."""
        return self._call("take", self.config.daily_tokens, tokens) if self.counted else None

    def adjust(self, taken: BudgetState | None, delta_tokens: int) -> None:
        """Correct the tokens counted for the request ``taken`` (as :meth:`take` returned it) by
        ``delta_tokens``."""
        if taken is not None and delta_tokens:
            self._call("adjust", self.config.daily_tokens, delta_tokens, taken.day)

    def open(self) -> bool:
        """True while a request may still fit today (always, if not counted or no cap)."""
        return not self.counted or not self.config.daily_tokens or self._call("peek", self.config.daily_tokens).ok


def budget_state(client: redis.Redis, keys: Keys) -> BudgetState | None:
    """Today's use against the cap the workers last used (``agg status``); None if no worker
    ever counted a request."""
    if not client.exists(keys.llm_budget):
        return None
    from workers.config import TurnConfig  # a 27-field dataclass: `agg status` imports it only here

    return DailyBudget(client, keys, TurnConfig())._call("peek", -1)
