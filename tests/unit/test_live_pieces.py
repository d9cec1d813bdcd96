"""The small shared pieces of the live parts: the child environment, the backoff, the settings
checked before `agg run` starts, the notification plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.backoff import Backoff
from aggregator.config import Settings, WatchTimings, check_env, watch_timings
from aggregator.errors import ConfigError
from aggregator.live.notify import Spec, decodable, plan


def test_a_child_given_to_env_resolves_the_same_settings(tmp_path: Path) -> None:
    s = Settings(
        redis_url="unix:///x/redis.sock?password=pw",
        namespace="ns1",
        data_dir=tmp_path / "data",
        claude_dirs=[tmp_path / "a", tmp_path / "b"],
        host="h1",
    )
    assert Settings.from_env(s.to_env()) == s
    embedded = Settings(data_dir=tmp_path / "data", claude_dirs=[tmp_path / "a"], host="h1")
    env = embedded.to_env(redis_url="unix:///y.sock?password=secret")
    assert env["AGG_REDIS_URL"] == "unix:///y.sock?password=secret"  # the child is told which Redis
    assert "AGG_REDIS_URL" not in embedded.to_env()
    queued = Settings(redis_url="redis://c:7000", data_dir=tmp_path / "d", queue_url="unix:///q.sock?password=pw")
    assert Settings.from_env(queued.to_env()) == queued  # a pool's workers and agg run's parts find the queue
    assert "AGG_QUEUE_URL" not in s.to_env()


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.fail() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.delay() == 0.0 and b.fail() == 0.5
    jittered = Backoff(1.0, 8.0, jitter=0.2)
    assert all(0.8 <= jittered.fail() / 2.0**i <= 1.0 for i in range(3))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGG_ACTIVE_MINUTES": "nan"}, "AGG_ACTIVE_MINUTES"),
        ({"AGG_WATCH_RESCAN_S": "0"}, "AGG_WATCH_RESCAN_S"),
        ({"AGG_WATCH_STAT_ALL_S": "-1"}, "AGG_WATCH_STAT_ALL_S"),
    ],
)
def test_check_env_names_the_bad_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_env(env)


def test_watch_timings_from_the_environment() -> None:
    assert watch_timings({}) == WatchTimings()
    assert watch_timings({"AGG_WATCH_RESCAN_S": "3600", "AGG_WATCH_STAT_ALL_S": "0.5"}) == WatchTimings(3600, 0.5)


def test_the_plan_leaves_out_only_the_trees_holding_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    for name in ("a", "b", "c"):
        (root / name / "sub").mkdir(parents=True)
    assert plan([root], []) == ([Spec((str(root),))], [])
    bad = f"{root}/b/sub/x\udcff"
    assert not decodable(bad) and decodable(str(root))
    specs, left_out = plan([root], [bad])
    assert specs == [Spec((str(root),), recursive=False), Spec((f"{root}/a", f"{root}/c"))]
    assert left_out == [f"{root}/b"]
