"""Redis URLs: the quick client reads a URL as redis-py does, or leaves it to redis-py."""

from __future__ import annotations

import pytest
from redis.connection import parse_url

from aggregator.endpoint import DEFAULT_PORT, plain

SAME = [
    "unix:///tmp/agg/redis.sock",
    "unix:///tmp/agg/redis.sock?password=hunter2",
    "unix:///tmp/a%20b/redis.sock?password=p%40ss&db=3",
    "unix://:pw@/tmp/redis.sock",
    "unix://user:pw@/tmp/redis.sock?password=other",
    "redis://localhost",
    "redis://127.0.0.1:6380/2",
    "redis://:hunter2@example.com:7000",
    "redis://alice:s%3Acret@example.com/5",
    "redis://example.com?db=4&password=x",
    "REDIS://Example.COM:1234/0",
    "redis://[::1]:6390/1",
]

LEFT_TO_REDIS_PY = [
    "rediss://example.com",  # TLS
    "redis://example.com?socket_timeout=3",  # a client option
    "redis://example.com?db=1&db=2",
    "redis://alice@example.com",  # a user without a password
    "redis://example.com/notadb",
    "unix://",
    "http://example.com",
    "redis:/example.com",
    "redis://example.com:99999",
    "redis://example.com#frag",
]


@pytest.mark.parametrize("url", SAME)
def test_a_plain_url_reads_as_redis_py_reads_it(url: str) -> None:
    got, want = plain(url), parse_url(url)
    assert got is not None
    if got.path is not None:
        assert want["path"] == got.path
    else:
        assert (want.get("host", "localhost"), want.get("port", DEFAULT_PORT)) == (got.host, got.port)
    assert (want.get("db", 0), want.get("username"), want.get("password")) == (got.db, got.username, got.password)


@pytest.mark.parametrize("url", LEFT_TO_REDIS_PY)
def test_anything_else_is_left_to_redis_py(url: str) -> None:
    assert plain(url) is None
