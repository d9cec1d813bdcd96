"""The scripts the quick client may run write nothing (``READ_ONLY`` in ``aggregator/scripts.py``
and ``workers/scripts.py``): each runs, so called, under ``EVAL_RO``, which a real Redis 7 refuses
to a script that writes — as it refuses the budget's ``take``."""

from __future__ import annotations

import pytest
import redis

from aggregator import scripts
from aggregator.keys import Keys
from workers import scripts as turn_scripts
from workers.budget import DailyBudget
from workers.config import TurnConfig

K = Keys("agg")

CALLS = {
    scripts.HMGET_MANY: ([K.file("a"), K.file("b")], ["host", "path", "off"]),
    turn_scripts.BUDGET: ([K.llm_budget], ["peek", -1, 0, 0]),
}
"""A read-only call of each script declared read-only: keys, args."""


@pytest.fixture
def r7(r: redis.Redis) -> redis.Redis:
    if tuple(int(x) for x in str(r.info("server")["redis_version"]).split(".")[:2]) < (7, 0):
        pytest.skip("EVAL_RO needs Redis 7")
    return r


def test_every_read_only_script_has_a_call_here() -> None:
    assert set(CALLS) == {*scripts.READ_ONLY, *turn_scripts.READ_ONLY}
    for script, mode in {**scripts.READ_ONLY, **turn_scripts.READ_ONLY}.items():
        assert mode is None or CALLS[script][1][0] == mode


@pytest.mark.parametrize("script", list(CALLS), ids=["HMGET_MANY", "BUDGET peek"])
def test_a_read_only_call_runs_under_eval_ro(r7: redis.Redis, script: str) -> None:
    r7.hset(K.file("a"), mapping={"host": "h", "path": "/p", "off": 3})
    DailyBudget(r7, K, TurnConfig(provider="openai", daily_tokens=1000)).take(10)  # a budget to peek at
    keys, args = CALLS[script]
    r7.eval_ro(script, len(keys), *keys, *args)


def test_eval_ro_refuses_a_script_that_writes(r7: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match=r"(?i)write"):
        r7.eval_ro(turn_scripts.BUDGET, 1, K.llm_budget, "take", 1000, 10, 0)
