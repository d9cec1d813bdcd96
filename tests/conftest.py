"""Fixtures: a real redis-server the suite starts itself, stores, corpus copies.

Tests are sorted by what they need: ``unit/`` (no Redis), ``contract/`` (Lua scripts and key
layouts, on fakeredis and on the real server), ``store/`` (a real server, in process) and
``process/`` (real ``agg`` processes). Helpers live in ``tests/support/`` and ``devtools/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from aggregator.keys import Keys
from aggregator.store import Store
from devtools.agg import HOST
from devtools.redisproc import RedisProcess
from tests.support import CORPUS


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
