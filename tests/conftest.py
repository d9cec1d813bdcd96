"""Shared fixtures: a real redis-server the suite starts itself, stores, corpus copies, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from aggregator.devserver import RedisProcess
from aggregator.keys import Keys
from aggregator.store import Store
from scripts.gen_corpus import default_source

REPO = Path(__file__).resolve().parent.parent


CORPUS = default_source()

HOST = "testhost"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One real redis-server for the session: unix socket, temp dir, AOF on, a password."""
    with RedisProcess(tmp_path_factory.mktemp("redis"), password="test-secret-pw") as server:
        yield server


@pytest.fixture
def r(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A client of the session's real Redis, emptied before each test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def store(r: redis.Redis) -> Store:
    return Store(r, Keys("agg"), HOST)


@pytest.fixture(params=["fake", "real"])
def any_redis(request: pytest.FixtureRequest) -> Any:
    """Each test twice: on fakeredis with Lua (fast) and on the real server. For the contracts of
    Lua scripts and key layouts only; everything else runs on the real server."""
    if request.param == "fake":
        return fakeredis.FakeRedis()
    return request.getfixturevalue("r")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the shared corpus (``projects/`` layout); tests may change it freely."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    dst = tmp_path / "claude" / "projects"
    shutil.copytree(CORPUS, dst)
    return dst


def agg_env(redis_server: RedisProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for running the real `agg` command against the test Redis."""
    env = dict(os.environ)
    env.update(
        {
            "AGG_REDIS_URL": redis_server.url,
            "AGG_DATA_DIR": str(tmp_path / "data"),
            "AGG_HOST": HOST,
            "AGG_CLAUDE_DIR": str(tmp_path / "claude"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_agg(
    args: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `agg` console command in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"agg {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def rebuild_reproduces_live(store: Store) -> None:
    """Assert that ``agg replay --rebuild`` recomputes exactly the live projections (digests)."""
    from aggregator.projections import Projector

    p = Projector(store)
    live = p.digest()
    assert p.rebuild()["digest"] == live


def usage_by_conversation(store: Store) -> dict[str, dict[str, int]]:
    """Each conversation's usage counts and responses, as the projections hold them."""
    from aggregator.views import conversation_views

    return {v["key"]: {**v["usage"], "responses": v["responses"]} for v in conversation_views(store)}


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of an ``agg`` command on its embedded Redis (no AGG_* inherited from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGG_")}
    env.update(
        {
            "AGG_DATA_DIR": str(tmp_path / "data"),
            "AGG_CLAUDE_DIR": str(tmp_path / "claude"),
            "AGG_HOST": "testhost",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env
