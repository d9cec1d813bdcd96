"""The seed's race, smaller (scripts/race_test.py): real concurrent writer processes.

The JSON-file side's loss in free-running mode depends on timing, so it is only measured (and
checked for consistency); in lockstep every writer reads the same version before any writes,
which makes its loss exact. agg's store must lose nothing either way.
"""

from __future__ import annotations

from pathlib import Path

import redis

from devtools.redisproc import RedisProcess
from scripts.bench import race as race_test

WRITERS = 40


def test_lockstep_writers_of_one_json_file_lose_all_but_one_update(tmp_path: Path) -> None:
    res = race_test.race_file(WRITERS, tmp_path, lockstep=True)
    assert (res.kept, res.lost, res.duplicated) == (1, WRITERS - 1, 0)


def test_free_running_writers_of_one_json_file_are_measured(tmp_path: Path) -> None:
    res = race_test.race_file(WRITERS, tmp_path)
    print(f"file side, {WRITERS} free-running writers: loss rate {res.loss_rate:.0%}")
    assert res.kept >= 1  # the last replace keeps at least its own writer's record
    assert res.duplicated == 0


def test_concurrent_commits_to_one_conversation_lose_nothing(redis_server: RedisProcess, r: redis.Redis) -> None:
    res = race_test.race_store(WRITERS, redis_server.url)
    assert (res.kept, res.lost, res.duplicated) == (WRITERS, 0, 0)
    assert res.notes == {"distinct_seq": WRITERS, "conv_seq_is_1_to_n": True}


def test_concurrent_appends_and_syncs_of_one_transcript_lose_nothing(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path
) -> None:
    res = race_test.race_tailer(WRITERS, redis_server.url, tmp_path)
    assert (res.kept, res.lost, res.duplicated) == (WRITERS, 0, 0)
    assert res.notes["distinct_seq"] == WRITERS
    assert res.notes["conv_seq_is_1_to_n"] is True
