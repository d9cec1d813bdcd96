"""`agg usage`, `agg status --json` totals and `agg replay --rebuild` through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from aggregator.layout import iter_transcripts
from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support import oracle

FIELDS = ("input", "output", "cache_read", "cache_creation", "responses")


def test_usage_status_and_rebuild_commands(
    redis_server: RedisProcess, r: redis.Redis, corpus: Path, tmp_path: Path
) -> None:
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    exp = oracle.usage([Path(s.path) for s in iter_transcripts([corpus])])

    for by in ("conversation", "project", "model", "day"):
        rep = json.loads(run_agg(["usage", "--by", by, "--json"], env).stdout)
        assert rep["by"] == by
        rows = {r["key"] or "": {k: r[k] for k in FIELDS} for r in rep["rows"]}
        assert rows == exp.by[by], by
        assert {k: rep["total"][k] for k in FIELDS} == exp.total
        assert all(r["total"] == sum(r[k] for k in FIELDS[:4]) for r in rep["rows"])
    conv_rows = json.loads(run_agg(["usage", "--json"], env).stdout)["rows"]
    assert all(r["project"] for r in conv_rows) and any(r["title"] for r in conv_rows)

    text = run_agg(["usage", "--by", "model"], env).stdout
    assert "claude-opus-4-6" in text and "TOTAL" in text
    assert f"{exp.total['input']:,}" in text  # under 10,000: written out in full

    status = json.loads(run_agg(["status", "--json"], env).stdout)
    assert {k: status["usage"][k] for k in FIELDS} == exp.total
    live = json.loads(run_agg(["status", "--json", "--digest"], env).stdout)["projections"]["digest"]
    rebuilt = json.loads(run_agg(["replay", "--rebuild", "--json"], env).stdout)
    assert rebuilt["digest"] == rebuilt["digest_before"] == live
    assert "usage" in rebuilt["rebuilt"]
    again = json.loads(run_agg(["status", "--json", "--digest"], env).stdout)
    assert again["projections"]["digest"] == rebuilt["digest"] and again["usage"] == status["usage"]


def test_usage_rejects_a_bad_dimension(redis_server: RedisProcess, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    proc = run_agg(["usage", "--by", "year"], env, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "'year' is not one of" in proc.stderr


def test_usage_on_an_empty_store(redis_server: RedisProcess, r: redis.Redis, tmp_path: Path) -> None:
    env = agg_env(redis_server, tmp_path)
    rep = json.loads(run_agg(["usage", "--by", "day", "--json"], env).stdout)
    assert rep["rows"] == [] and rep["total"]["total"] == 0
    assert "TOTAL" in run_agg(["usage"], env).stdout
