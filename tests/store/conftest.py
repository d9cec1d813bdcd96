"""Fixtures the store-level tests of ``agg serve`` share."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from aggregator.ingest import ingest
from aggregator.layout import iter_transcripts
from aggregator.store import Store
from devtools.redisproc import RedisProcess
from tests.support.web import TOKEN, client_for


@pytest.fixture
def web(redis_server: RedisProcess, r: redis.Redis, store: Store, corpus: Path, tmp_path: Path) -> TestClient:
    """The app with the corpus ingested; the client already holds the token cookie."""
    ingest(store, iter_transcripts([corpus]))
    client = client_for(redis_server, r, tmp_path)
    assert client.get(f"/?token={TOKEN}").status_code == 200
    return client
