"""Contract of the daily token budget (workers/scripts.py BUDGET), on fakeredis and a real Redis."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from aggregator.keys import Keys
from workers.budget import DAY_MS, DailyBudget, budget_state
from workers.config import TurnConfig

K = Keys("agg")


@pytest.fixture
def rc(any_redis: Any) -> Any:
    return any_redis


def budget(r: Any, cap: int, provider: str = "openai") -> DailyBudget:
    return DailyBudget(r, K, TurnConfig(provider=provider, daily_tokens=cap))


def redis_day(r: Any) -> int:
    secs, micros = r.time()
    return int((int(secs) * 1000 + int(micros) // 1000) // DAY_MS)


def test_requests_are_counted_until_the_next_one_does_not_fit(rc: Any) -> None:
    b = budget(rc, 1000)
    first = b.take(400)
    assert first is not None and first.ok and (first.calls, first.tokens, first.cap) == (1, 400, 1000)
    assert first.day == redis_day(rc)
    b.adjust(first, 150 - 400)  # the provider counted 150
    second = b.take(800)
    assert second is not None and second.ok and (second.calls, second.tokens) == (2, 950)
    refused = b.take(100)
    assert refused is not None and not refused.ok and (refused.calls, refused.tokens) == (2, 950)
    assert not b.open()
    # a request that did not fit holds every turn for the rest of the day, even a smaller one's
    b.adjust(second, -800)
    assert (b.take(100) or refused).tokens == 250  # 150 + 100 fits: the hold is lifted
    assert b.open()


def test_an_error_answer_gives_its_tokens_back_and_the_cap_may_be_raised(rc: Any) -> None:
    b = budget(rc, 500)
    taken = b.take(500)
    assert taken is not None and taken.ok and not b.open()  # exactly used up
    b.adjust(taken, -500)
    assert b.open()
    assert not (b.take(600) or taken).ok and not b.open()
    raised = budget(rc, 2000)
    assert raised.open() and (raised.take(600) or taken).ok
    state = budget_state(rc, K)  # `agg status`: against the cap the workers last used
    assert state is not None and (state.calls, state.tokens, state.cap, state.ok) == (2, 600, 2000, True)
    assert state.figures()["exhausted"] is False and state.figures()["resumes_at"] is None


def test_a_new_utc_day_starts_over(rc: Any) -> None:
    b = budget(rc, 300)
    taken = b.take(300)
    assert taken is not None and not (b.take(1) or taken).ok
    state = budget_state(rc, K)
    assert state is not None and not state.ok
    figures = state.figures()
    tomorrow = date.fromisoformat(figures["day"]) + timedelta(days=1)
    assert figures["exhausted"] and figures["resumes_at"] == f"{tomorrow.isoformat()}T00:00:00.000Z"
    # the day the hash holds is not today (the test moves it, as midnight would)
    rc.hset(K.llm_budget, "day", redis_day(rc) - 1)
    assert b.open()
    b.adjust(taken, 1000)  # a correction for yesterday's request does not count today
    today = b.take(300)
    assert today is not None and today.ok and (today.calls, today.tokens) == (1, 300)


def test_offline_and_uncapped_turns(rc: Any) -> None:
    assert budget(rc, 1000, provider="offline").take(10**9) is None  # not counted at all
    assert budget_state(rc, K) is None
    free = budget(rc, 0)
    for _ in range(3):
        taken = free.take(10**9)
        assert taken is not None and taken.ok
    assert free.open() and (taken.calls, taken.tokens) == (3, 3 * 10**9)
