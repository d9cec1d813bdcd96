"""`agg forget` through the real command (docs/design.md §9): confirmation, names as `agg show` takes
them, `--json`, `--project`, and that nothing brings the conversation back — `agg search`, `agg
ingest` on another machine, `agg replay --rebuild`."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.agg import agg_env, run_agg
from devtools.redisproc import RedisProcess
from tests.support.cli import on_a_terminal, one_line_error
from tests.support.records import assistant, session_file, tokens, user, write

ALPHA = "aaaa1111-0000-4000-8000-000000000001"
BETA = "bbbb2222-0000-4000-8000-000000000002"


@pytest.fixture
def env(redis_server: RedisProcess, r: redis.Redis, tmp_path: Path) -> dict[str, str]:
    claude = tmp_path / "claude" / "projects"
    write(
        session_file(claude, ALPHA, "-home-user-alpha"),
        [
            user(ALPHA, "a1", "where does the okapi live"),
            assistant(ALPHA, "a2", "ma", "ra", tokens(100, 50)),
        ],
    )
    write(
        session_file(claude, BETA, "-home-user-beta"),
        [user(BETA, "b1", "an ordinary question"), assistant(BETA, "b2", "mb", "rb", tokens(7, 3))],
    )
    env = agg_env(redis_server, tmp_path)
    run_agg(["ingest"], env)
    return env


def _json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(run_agg([*args, "--json"], env).stdout)


def test_forget_by_prefix_and_nothing_brings_it_back(env: dict[str, str]) -> None:
    assert _json(["search", "okapi"], env)["total"] == 1
    res = _json(["forget", ALPHA[:6], "--yes"], env)
    (conv,) = res["conversations"]
    assert conv["conv"] == ALPHA and conv["events"] == 2 and conv["usage"]["input"] == 100
    assert res["events"] == 2 and res["usage"] == {
        "input": 100,
        "output": 50,
        "cache_read": 0,
        "cache_creation": 0,
        "cache_creation_1h": 0,
        "responses": 1,
    }
    assert _json(["search", "okapi"], env)["total"] == 0
    (index_file,) = (Path(env["AGG_DATA_DIR"]) / "index").glob("search-*.sqlite")
    with contextlib.closing(sqlite3.connect(index_file)) as db:  # the word is out of the word index too
        assert db.execute("SELECT count(*) FROM fts WHERE fts MATCH 'okapi'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM fts WHERE fts MATCH 'ordinary'").fetchone()[0] == 1
    assert [c["key"] for c in _json(["list"], env)["conversations"]] == [BETA]
    assert _json(["usage"], env)["total"]["input"] == 7
    one_line_error(run_agg(["show", ALPHA], env, check=False), 4, "no conversation")
    one_line_error(run_agg(["forget", ALPHA, "--yes"], env, check=False), 4, "no conversation")

    other = {**env, "AGG_HOST": "another-machine"}
    ingested = _json(["ingest"], other)
    assert (ingested["events_added"], ingested["forgotten"], ingested["duplicates"]) == (0, 2, 2)
    status = _json(["status"], env)
    assert (status["events"], status["conversations"], status["forgotten"]) == (2, 1, 2)
    rebuilt = _json(["replay", "--rebuild"], env)
    assert rebuilt["digest"] == rebuilt["digest_before"] and rebuilt["conversations"] == 1
    assert _json(["search", "okapi"], env)["total"] == 0
    one_line_error(run_agg(["show", ALPHA], env, check=False), 4, "no conversation")


def test_without_a_terminal_it_asks_for_yes(env: dict[str, str]) -> None:
    proc = run_agg(["forget", ALPHA], env, check=False)
    one_line_error(proc, 2, "--yes")
    assert _json(["list"], env)["conversations"] and _json(["search", "okapi"], env)["total"] == 1
    one_line_error(run_agg(["forget", "nope", "--yes"], env, check=False), 4, "no conversation")
    one_line_error(run_agg(["forget", "--yes"], env, check=False), 2, "CONVERSATION")
    one_line_error(run_agg(["forget", BETA, "nope", "--yes"], env, check=False), 4, "no conversation")
    assert len(_json(["list"], env)["conversations"]) == 2  # a name that does not exist: nothing forgotten
    path = session_file(Path(env["AGG_CLAUDE_DIR"]) / "projects", BETA, "-home-user-beta")
    assert _json(["forget", str(path), "--yes"], env)["conversations"][0]["conv"] == BETA  # a .jsonl path


def test_by_project_andon_a_terminal(env: dict[str, str]) -> None:
    code, out = on_a_terminal(["forget", "--project", "alpha"], env, answer=b"n\n")
    assert code == 1 and "Forget conversation " + ALPHA in out and "nothing forgotten" in out
    assert len(_json(["list"], env)["conversations"]) == 2
    code, out = on_a_terminal(["forget", "--project", "alpha"], env, answer=b"y\n")
    assert code == 0 and f"forgot {ALPHA}: 2 events" in out
    assert [c["key"] for c in _json(["list"], env)["conversations"]] == [BETA]
    one_line_error(run_agg(["forget", "--project", "alpha", "--yes"], env, check=False), 4, "alpha")
