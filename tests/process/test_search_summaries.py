"""agg's own summaries are searchable (issue 10: the index covers "titles and agg's summaries"): real
`agg ingest`, `agg worker --burst` (the offline provider's summaries, committed as `agg-turn` events),
then `agg search --role summary` finds them — through the index, not by scanning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess

POMODORO = "36d9e1bc-63bf-4e97-8a3e-2b20ba8583f2"


def _search(env: dict[str, str], *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(run_agg(["search", *args, "--limit", "0", "--json"], env).stdout)
    return out


def test_agg_summaries_are_found_once_the_turns_committed_them(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    assert _search(env, "Requests", "--role", "summary")["total"] == 0  # no turn has run yet
    run_agg(["worker", "--burst"], env, timeout=300)
    found = _search(env, "Requests", "--role", "summary")
    assert found["total"] >= 10  # one per conversation that has typed requests
    assert {h["role"] for h in found["hits"]} == {"summary"}
    assert all(h["snippet"].startswith("⟦Requests⟧") for h in found["hits"])
    pomodoro = _search(env, "smooth", "transitions", "--role", "summary")  # a later request of that session
    assert [h["conv"] for h in pomodoro["hits"]] == [POMODORO]
    # The summary is its own text: not counted among what the user wrote.
    assert all(h["role"] != "summary" for h in _search(env, "Requests", "--role", "user")["hits"])
