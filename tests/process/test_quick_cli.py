"""``agg status`` and ``agg usage`` on the quick client (cli/quick.py) answer exactly as on redis-py.

Each command runs as a real process three ways: ``AGG_QUICK=only`` (the quick client or a one-line
failure: proves which path answered), ``AGG_QUICK=0`` (redis-py, the path every command took before)
and the default (the quick client, else redis-py). Where the quick client answers, its output is
the same bytes as redis-py's; where it cannot (a stopped embedded server, projections behind, RQ
due to clean up, an evicting Redis, an error), the default run is redis-py's run, word for word.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator.embedded import EmbeddedRedis
from aggregator.ingest import discover, ingest
from aggregator.keys import Keys, RQKeys
from aggregator.store import Store
from devtools.agg import HOST, agg_env, embedded_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support.cli import imported
from workers.budget import DailyBudget
from workers.config import TurnConfig

K = Keys("agg")

COMMANDS = [
    ["status", "--json"],
    ["status"],
    ["usage", "--json"],
    ["usage"],
    ["usage", "--by", "day", "--json"],
    ["usage", "--by", "project", "--json"],
    ["usage", "--by", "model", "--since", "2025-01-01", "--until", "2026-12-31", "--json"],
]

HEAVY = ("redis", "rq", "asyncio", "starlette", "uvicorn", "watchfiles", "mcp", "sqlite3", "psutil")


def run(args: list[str], env: dict[str, str], mode: str | None) -> subprocess.CompletedProcess[str]:
    extra = {} if mode is None else {"AGG_QUICK": mode}
    return run_agg(args, {**env, **extra}, check=False)


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    """Both runs said the same: exit code, stderr, stdout (``used_memory_bytes``, Redis' own
    memory figure, moves between any two runs, whichever client reads it)."""
    assert (a.returncode, a.stderr) == (b.returncode, b.stderr)
    if a.stdout.startswith("{"):
        x, y = json.loads(a.stdout), json.loads(b.stdout)
        for st in (x, y):
            if isinstance(st.get("redis"), dict) and "used_memory_bytes" in st["redis"]:
                assert isinstance(st["redis"].pop("used_memory_bytes"), int)
        assert x == y
    else:
        assert a.stdout == b.stdout


def fill_turns(r: redis.Redis) -> None:
    """Turn figures that are not all zero: a budget (read with the budget script's ``peek``), a
    parked conversation, RQ jobs queued, started and failed, a worker."""
    DailyBudget(r, K, TurnConfig(provider="openai", daily_tokens=100_000)).take(1234)
    r.zadd(K.turns_parked, {"conv-1": 1_700_000_000_000})
    r.hset(K.turn("conv-1"), mapping={"error": "HTTP 500", "fails": 2, "error_at": 1_699_999_000_000})
    r.hset(K.turns_stats, mapping={"failed": 2, "committed": 5, "calls": 7})
    rk, later = RQKeys(Keys("agg").turns_queue), time.time() + 3600
    r.rpush(rk.queue, "job-1")
    r.zadd(rk.started, {"job-2:exec": later})
    r.zadd(rk.failed, {"job-3": later})
    r.sadd(rk.workers, "rq:worker:w1")


@pytest.fixture
def env(redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path) -> dict[str, str]:
    """A real server holding the corpus, ingested and projected, and some turn figures."""
    e = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], e)
    fill_turns(r)
    return e


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_the_quick_client_answers_as_redis_py(env: dict[str, str], args: list[str]) -> None:
    quick, full = run(args, env, "only"), run(args, env, "0")
    assert quick.returncode == 0, quick.stderr
    same(quick, full)
    same(run(args, env, None), full)


def test_the_figures_compared_are_not_all_zero(env: dict[str, str]) -> None:
    st = json.loads(run(["status", "--json"], env, "only").stdout)
    t = st["turns"]
    assert st["events"] > 1000 and st["conversations"] > 10 and st["usage"]["output"] > 0
    assert t["budget"]["tokens"] == 1234 and t["parked_conversations"][0]["error"] == "HTTP 500"
    assert (t["rq"], st["workers"]) == ({"queued": 1, "started": 1, "failed": 1}, 1)
    rows = json.loads(run(["usage", "--json"], env, "only").stdout)["rows"]
    assert len(rows) > 10 and any(row["cost_usd"] for row in rows)


@pytest.mark.parametrize("args", [["status", "--json"], ["usage", "--json"]], ids=" ".join)
def test_the_quick_client_imports_no_redis_py(env: dict[str, str], args: list[str]) -> None:
    proc, modules = imported(args, {**env, "AGG_QUICK": "only"})
    assert proc.returncode == 0, proc.stderr
    assert "hiredis" in modules and "aggregator.quickredis" in modules
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []
    _, full = imported(args, {**env, "AGG_QUICK": "0"})
    assert "redis" in full  # the probe sees redis-py where it is imported


def test_projections_behind_are_caught_up_on_redis_py(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    store = Store(r, K, HOST)
    sources, walk = discover([corpus])
    ingest(store, sources, project=False, walk=walk)
    assert int(r.get(K.proj_seq) or 0) < int(r.get(K.seq) or 0)
    refused = run(["usage", "--json"], env, "only")  # it would have to write: it does not
    assert refused.returncode == 1 and "quick client could not answer" in refused.stderr
    assert int(r.get(K.proj_seq) or 0) == 0
    caught_up = run(["usage", "--json"], env, None)  # falls back: redis-py applies the log
    assert caught_up.returncode == 0 and int(r.get(K.proj_seq) or 0) == int(r.get(K.seq) or 0)
    same(caught_up, run(["usage", "--json"], env, "only"))


def test_rq_cleaning_up_is_left_to_rq(env: dict[str, str], r: redis.Redis) -> None:
    rk = RQKeys(Keys("agg").turns_queue)
    r.zadd(rk.failed, {"job-old": time.time() - 60})  # past its TTL: RQ's count removes it
    assert run(["status", "--json"], env, "only").returncode == 1
    proc = run(["status", "--json"], env, None)
    assert proc.returncode == 0 and json.loads(proc.stdout)["turns"]["rq"]["failed"] == 1
    assert r.zscore(rk.failed, "job-old") is None  # RQ cleaned it up, as before
    same(run(["status", "--json"], env, "only"), run(["status", "--json"], env, "0"))


def test_status_starts_a_stopped_embedded_redis(tmp_path: Path, corpus: Path) -> None:
    env = embedded_env(tmp_path)
    emb = EmbeddedRedis(tmp_path / "data")
    try:
        run_agg(["ingest", str(corpus)], env)
        assert run_agg(["redis", "stop"], env).stdout.strip() == "stopped"
        refused = run(["status", "--json"], env, "only")
        assert refused.returncode == 1 and "not running" in refused.stderr and emb.state() == "down"
        started = run(["status", "--json"], env, None)
        assert started.returncode == 0 and json.loads(started.stdout)["redis"]["ok"] is True
        assert emb.state() == "up"
        for args in (["status", "--json"], ["usage", "--json"], ["status"]):
            quick = run(args, env, "only")
            assert quick.returncode == 0, quick.stderr
            same(quick, run(args, env, "0"))
    finally:
        run_agg(["redis", "stop"], env, check=False)


def _errors(tmp_path: Path, redis_server: RedisProcess) -> dict[str, dict[str, str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return {
        "redis down": {"AGG_REDIS_URL": f"unix://{tmp_path}/stopped.sock?password=hunter2"},
        "no redis at the port": {"AGG_REDIS_URL": "redis://127.0.0.1:1/0"},
        "bad url": {"AGG_REDIS_URL": "http://example.com"},
        "wrong password": {"AGG_REDIS_URL": redis_server.url.replace("test-secret-pw", "hunter2")},
        "no such data dir": {"AGG_DATA_DIR": str(blocker / "data")},
        "bad AGG_QUICK": {"AGG_QUICK": "sometimes"},
    }


@pytest.mark.parametrize(
    "case", ["redis down", "no redis at the port", "bad url", "wrong password", "no such data dir", "bad AGG_QUICK"]
)
@pytest.mark.parametrize("args", [["status", "--json"], ["status"], ["usage", "--json"]], ids=" ".join)
def test_errors_are_redis_pys_word_for_word(
    redis_server: RedisProcess, r: redis.Redis, tmp_path: Path, case: str, args: list[str]
) -> None:
    extra = _errors(tmp_path, redis_server)[case]
    base: dict[str, Any] = embedded_env(tmp_path) if "AGG_DATA_DIR" in extra else agg_env(redis_server, tmp_path)
    env = {**base, **extra}
    default = run(args, env, None)
    assert default.returncode != 0 and "Traceback" not in default.stderr
    said = default.stderr.strip().splitlines()
    assert len(said) <= 1 and all(line.startswith("agg: ") for line in said)
    if not said:  # status --json says it in its JSON
        assert json.loads(default.stdout)["redis"]["ok"] is False
    assert "hunter2" not in default.stdout + default.stderr
    if case != "bad AGG_QUICK":
        same(default, run(args, env, "0"))
